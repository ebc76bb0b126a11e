//! The fused decode plan (5 kernels per layer + 3: `DecodePlan::Fused`) against the unfused
//! one-kernel-per-op plan (`DecodePlan::Unfused`) and the CPU reference, on the Q1_0 and the
//! ternary (Q2_0) fixtures, with both KV cache types, past one attention chunk (so the merge
//! folded into Wo combines several) and through the argmax folded into the LM head.

#[macro_use]
mod common;

use std::sync::Arc;

use bonsai_wgpu::cache_type::CacheType;
use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::{
    DecodePlan, GpuContext, GpuModel, GpuOptions, KernelPath, Session, SessionOptions,
};
use common::*;
use pollster::block_on;

/// Fused vs unfused GPU plans: the same f32 arithmetic in another order (the norm scale applied
/// after the dot products, the merge weights inside Wo's loads).
const FUSED_UNFUSED_COSINE_MIN: f64 = 0.99999;
/// GPU vs the CPU reference with the same cache rounding (as tests/gpu_model.rs).
const GPU_CPU_COSINE_MIN: f64 = 0.9999;
/// Where the top1-top2 gap is below this, summation order may flip the argmax.
const MARGIN_MIN: f32 = 0.02;
/// Prompt tokens, then decode steps: 144 positions cross the 128-position chunk of CPU
/// adapters (64 on GPUs), so the Wo merge sees several chunks.
const PROMPT: usize = 112;
const DECODE: usize = 32;

fn margin(logits: &[f32]) -> f32 {
    let top = bonsai_wgpu::cpu::ops::top_k(logits, 2);
    top[0].0 - top[1].0
}

fn tokens(n_vocab: usize, n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % n_vocab) as u32).collect()
}

fn check(fixture_name: &str, cache_type: CacheType) {
    let gguf = Gguf::open(fixture(fixture_name)).expect("open fixture");
    let ctx = block_on(GpuContext::new(&GpuOptions::default())).expect("GPU adapter");
    let model = GpuModel::load(Arc::new(ctx), &gguf).expect("load on GPU");
    assert!(
        model.fused.is_some(),
        "{fixture_name}: weights were not joined"
    );
    let cpu = CpuModel::from_gguf(&gguf).expect("load on CPU");
    let n_vocab = model.config.n_vocab;
    let open = |plan| {
        Session::new(
            Arc::clone(&model),
            SessionOptions {
                n_ctx: 256,
                cache_type,
                decode_plan: plan,
                ..SessionOptions::default()
            },
        )
        .expect("session")
    };
    let mut fused = open(DecodePlan::Fused);
    let mut unfused = open(DecodePlan::Unfused);
    assert_eq!(fused.decode_plan(), DecodePlan::Fused);
    assert_eq!(unfused.decode_plan(), DecodePlan::Unfused);
    // The reference in the kernels' arithmetic (int8 activations on the q8 path).
    let mut cpu = CpuSession::with_cache_type(cpu, 256, Some(cache_type))
        .expect("CPU session")
        .with_q8_activations(model.ctx.kernel_path == KernelPath::Q8);

    let all = tokens(n_vocab, PROMPT + DECODE);
    let (prompt, rest) = all.split_at(PROMPT);
    for s in [&mut fused, &mut unfused] {
        block_on(s.feed(prompt)).expect("prefill");
    }
    block_on(cpu.feed(prompt)).expect("CPU prefill");
    let (mut worst_plans, mut worst_cpu) = (1.0f64, 1.0f64);
    for (i, &t) in rest.iter().enumerate() {
        for s in [&mut fused, &mut unfused] {
            block_on(s.feed(&[t])).expect("decode");
        }
        block_on(cpu.feed(&[t])).expect("CPU decode");
        let f = block_on(fused.logits()).expect("fused logits");
        let u = block_on(unfused.logits()).expect("unfused logits");
        let c = block_on(cpu.logits()).expect("CPU logits");
        let (cos_plans, cos_cpu) = (cosine(&f, &u), cosine(&f, &c));
        worst_plans = worst_plans.min(cos_plans);
        worst_cpu = worst_cpu.min(cos_cpu);
        let at = PROMPT + i;
        assert!(
            cos_plans >= FUSED_UNFUSED_COSINE_MIN,
            "{fixture_name} {cache_type} position {at}: fused vs unfused cosine {cos_plans:.7}"
        );
        assert!(
            cos_cpu >= model_cosine_min(&model.ctx, GPU_CPU_COSINE_MIN),
            "{fixture_name} {cache_type} position {at}: fused vs CPU cosine {cos_cpu:.7}"
        );
        // The argmax folded into the head is the argmax of the logits it wrote.
        let greedy = block_on(fused.greedy()).expect("fused greedy");
        if margin(&f) >= MARGIN_MIN {
            assert_eq!(
                greedy,
                argmax(&f),
                "{fixture_name} position {at}: fused greedy"
            );
        }
        if margin(&c) >= MARGIN_MIN {
            assert_eq!(
                greedy,
                argmax(&c),
                "{fixture_name} position {at}: vs CPU argmax"
            );
        }
    }
    note!(
        "{fixture_name} {cache_type}: worst cosine fused vs unfused {worst_plans:.8}, vs CPU {worst_cpu:.7} over {DECODE} steps"
    );
}

#[test]
fn fused_decode_matches_unfused_and_cpu_q1_0() {
    check("tiny-bonsai-dev.gguf", CacheType::F16);
    check("tiny-bonsai-dev.gguf", CacheType::Q8_0);
}

#[test]
fn fused_decode_matches_unfused_and_cpu_ternary() {
    check("tiny-ternary-dev.gguf", CacheType::F16);
    check("tiny-ternary-dev.gguf", CacheType::Q8_0);
}
