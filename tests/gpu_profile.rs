//! `Session::profile_decode`: per-category GPU times of a decode step, computed by the same
//! kernels as the normal one-pass decode (lavapipe in CI has timestamp queries).

mod common;

use std::sync::Arc;

use bonsai_wgpu::Error;
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::session::{FUSED_PROFILE_CATEGORIES, PROFILE_CATEGORIES};
use bonsai_wgpu::gpu::{DecodePlan, GpuContext, GpuModel, GpuOptions, Session, SessionOptions};
use common::*;
use pollster::block_on;

/// Decode steps profiled after the prompt.
const PROFILED_STEPS: usize = 3;

fn session(model: &Arc<GpuModel>, decode_plan: DecodePlan) -> Session {
    let opts = SessionOptions {
        n_ctx: 64,
        decode_plan,
        ..SessionOptions::default()
    };
    Session::new(Arc::clone(model), opts).expect("session")
}

#[test]
fn profile_decode_times_every_category_and_matches_feed() {
    profile(DecodePlan::Fused, &FUSED_PROFILE_CATEGORIES);
}

#[test]
fn profile_decode_times_every_category_of_the_unfused_plan() {
    profile(DecodePlan::Unfused, &PROFILE_CATEGORIES);
}

fn profile(plan: DecodePlan, categories: &[&str]) {
    let gguf = Gguf::open(fixture("tiny-bonsai-dev.gguf")).expect("open fixture");
    let ctx =
        block_on(GpuContext::new(&GpuOptions::default())).expect("GPU adapter (lavapipe in CI)");
    eprintln!("adapter: {} ({:?})", ctx.info.name, ctx.info.backend);
    let has_timestamps = ctx.features.has_timestamps;
    let model = GpuModel::load(Arc::new(ctx), &gguf).expect("load on GPU");
    let prompt = &llama_fixture().prompts[0].tokens;

    let mut profiled = session(&model, plan);
    let mut plain = session(&model, plan);
    assert_eq!(profiled.decode_plan(), plan);
    assert_eq!(profiled.profile_categories(), categories);
    block_on(profiled.feed(prompt)).expect("feed");
    block_on(plain.feed(prompt)).expect("feed");
    if !has_timestamps {
        let err = block_on(profiled.profile_decode(0)).expect_err("no timestamps");
        assert!(
            matches!(&err, Error::Gpu(m) if m.contains("timestamps unsupported")),
            "{err}"
        );
        assert_eq!(
            profiled.n_past(),
            prompt.len(),
            "a failed profile feeds nothing"
        );
        eprintln!("skip: adapter has no timestamp queries");
        return;
    }

    let mut token = block_on(plain.greedy()).expect("greedy");
    for step in 0..PROFILED_STEPS {
        let times = block_on(profiled.profile_decode(token)).expect("profile_decode");
        block_on(plain.feed(&[token])).expect("feed");
        eprintln!("step {step}: {times:?}");

        let names: Vec<&str> = times.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, categories, "every category, in forward order");
        for (name, ms) in &times {
            assert!(ms.is_finite() && *ms >= 0.0, "{name}: {ms} ms");
        }
        assert!(times.iter().map(|(_, ms)| ms).sum::<f64>() > 0.0);

        assert_eq!(profiled.n_past(), plain.n_past(), "advances like feed");
        let got = block_on(profiled.greedy()).expect("profiled greedy");
        let want = block_on(plain.greedy()).expect("plain greedy");
        assert_eq!(got, want, "step {step}: next greedy token");
        // Same kernels in the same order on the same device, no atomics: bit-identical.
        let (got_logits, want_logits) = (
            block_on(profiled.logits()).expect("logits"),
            block_on(plain.logits()).expect("logits"),
        );
        assert!(got_logits == want_logits, "step {step}: logits differ");
        token = got;
    }

    // Errors as feed does, without advancing.
    let n_vocab = model.config.n_vocab as u32;
    let err = block_on(profiled.profile_decode(n_vocab)).expect_err("bad token");
    assert!(matches!(err, Error::BadToken { .. }), "{err}");
    assert_eq!(profiled.n_past(), plain.n_past());
}
