//! The GPU sampler (penalties, top-k, top-p, min-p, temperature, counter-based draw) against the
//! CPU sampler, the reference: the frequencies of many GPU draws from fixed logits against the
//! CPU chain's probabilities, as tests/sampler.rs tests the CPU draw; same seed, same draws.
//! Runs natively (lavapipe) and in the browser (tests/browser.rs).

#[macro_use]
mod common;

use bonsai_wgpu::cpu::ops::top_k;
use bonsai_wgpu::gpu::buffers::{read_buffer, storage_buffer, storage_buffer_init};
use bonsai_wgpu::gpu::kernel::Op;
use bonsai_wgpu::gpu::ops::sampler::{GpuSampler, GpuSamplerBindings};
use bonsai_wgpu::gpu::ops::topk::{MAX_K, TopK, TopKBindings};
use bonsai_wgpu::gpu::{GpuContext, GpuOptions, PipelineCache, StepParams};
use bonsai_wgpu::sampler::{Sampler, SamplerConfig};
use common::{gpu_test, random_f32};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// Draws per distribution check (each a few dispatches, all in one submit).
const DRAWS: usize = 2000;
/// Frequencies vs the CPU reference's probabilities: about 3.6 standard deviations at p = 0.5.
const FREQ_TOL: f64 = 0.04;
/// Draws compared by the same-seed / other-seed checks (the first draws of a run).
const REPEAT_DRAWS: usize = 200;
const N_VOCAB: usize = 1000;

async fn ctx() -> GpuContext {
    GpuContext::new(&GpuOptions::default())
        .await
        .expect("a wgpu adapter")
}

/// Draws `draws` tokens with the GPU sampler from the same logits and window each time (the
/// RNG counter advances as in a generation): pristine copies of both are restored before each
/// draw, all in one submit.
async fn gpu_draws(
    ctx: &GpuContext,
    cfg: &SamplerConfig,
    logits: &[f32],
    history: &[u32],
    draws: usize,
) -> Vec<u32> {
    let cache = PipelineCache::new();
    let n = logits.len();
    let pristine = storage_buffer_init(ctx, "pristine logits", logits).unwrap();
    let work = storage_buffer_init(ctx, "logits", logits).unwrap();
    let tokens = storage_buffer(ctx, "tokens", 4).unwrap();
    let topk = TopK::new(
        ctx,
        &cache,
        &TopKBindings {
            logits: &work,
            n: n as u32,
            k: MAX_K,
        },
    )
    .expect("top-k");
    let b = GpuSamplerBindings {
        logits: &work,
        n_vocab: n as u32,
        topk: &topk,
        tokens: &tokens,
    };
    let sampler = GpuSampler::new(ctx, &cache, &b).expect("sampler");
    sampler.configure(ctx, cfg, history).expect("configure");
    let state_bytes = sampler.state.size();
    let window0 = storage_buffer(ctx, "window0", state_bytes).unwrap();
    let out = storage_buffer(ctx, "draws", 4 * draws as u64).unwrap();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(&sampler.state, 0, &window0, 0, state_bytes);
    for i in 0..draws {
        encoder.copy_buffer_to_buffer(&pristine, 0, &work, 0, 4 * n as u64);
        // Everything but the counter (word 0): window length, next slot, ring.
        encoder.copy_buffer_to_buffer(&window0, 4, &sampler.state, 4, state_bytes - 4);
        let mut pass = encoder.begin_compute_pass(&Default::default());
        sampler.encode(&mut pass, &StepParams::default());
        drop(pass);
        encoder.copy_buffer_to_buffer(&tokens, 0, &out, 4 * i as u64, 4);
    }
    ctx.queue.submit([encoder.finish()]);
    let got = read_buffer::<u32>(ctx, &out, 0, draws)
        .await
        .expect("draws");
    ctx.take_error().expect("no wgpu error");
    got
}

async fn check_distribution(
    ctx: &GpuContext,
    cfg: SamplerConfig,
    logits: &[f32],
    history: &[u32],
    check_repeat: bool,
) {
    let got = gpu_draws(ctx, &cfg, logits, history, DRAWS).await;
    let mut reference = Sampler::new(cfg.clone());
    for &id in history {
        reference.accept(id);
    }
    let candidates = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    let want = reference.distribution(candidates).expect("distribution");
    let mut counts = std::collections::HashMap::<u32, usize>::new();
    for id in &got {
        *counts.entry(*id).or_default() += 1;
    }
    for &id in counts.keys() {
        assert!(
            want.iter().any(|&(w, _)| w == id),
            "{cfg:?}: drew token {id}, which the CPU chain excludes"
        );
    }
    let mut worst = 0.0f64;
    for &(id, p) in &want {
        let freq = counts.get(&id).copied().unwrap_or(0) as f64 / DRAWS as f64;
        assert!(
            (freq - p).abs() <= FREQ_TOL,
            "{cfg:?}: token {id}: frequency {freq:.4}, CPU probability {p:.4}"
        );
        worst = worst.max((freq - p).abs());
    }
    note!("{} candidates, worst |freq - p| {worst:.4}", want.len());
    if check_repeat {
        let again = gpu_draws(ctx, &cfg, logits, history, REPEAT_DRAWS).await;
        assert_eq!(got[..REPEAT_DRAWS], again, "same seed, same draws");
        let other = SamplerConfig {
            seed: cfg.seed ^ 1,
            ..cfg.clone()
        };
        let other = gpu_draws(ctx, &other, logits, history, REPEAT_DRAWS).await;
        assert_ne!(got[..REPEAT_DRAWS], other, "another seed, other draws");
    }
}

#[gpu_test]
async fn gpu_sampler_matches_cpu_distribution() {
    let ctx = ctx().await;
    let mut rng = StdRng::seed_from_u64(20);
    let logits = random_f32(&mut rng, N_VOCAB, 3.0);
    // llama.cpp's defaults: top-k 40, top-p 0.95, min-p 0.05, temperature 0.8.
    check_distribution(&ctx, SamplerConfig::default(), &logits, &[], true).await;
    let hot = SamplerConfig {
        temperature: 1.5,
        top_k: 12,
        top_p: 1.0,
        min_p: 0.0,
        ..SamplerConfig::default()
    };
    check_distribution(&ctx, hot.clone(), &logits, &[], false).await;
}

#[gpu_test]
async fn gpu_penalties_match_cpu_distribution() {
    let ctx = ctx().await;
    let mut rng = StdRng::seed_from_u64(22);
    let logits = random_f32(&mut rng, N_VOCAB, 3.0);
    // A window over the best tokens with repeats (the frequency penalty counts them).
    let top: Vec<u32> = top_k(&logits, 6).iter().map(|c| c.1).collect();
    let history = [top[0], top[1], top[0], 999, top[3], top[0], top[5]];
    let penalised = SamplerConfig {
        temperature: 1.5,
        top_k: 12,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.5,
        presence_penalty: 0.4,
        frequency_penalty: 0.3,
        penalty_last_n: 6, // the oldest entry falls out of the window
        ..SamplerConfig::default()
    };
    check_distribution(&ctx, penalised.clone(), &logits, &history, false).await;
    // Greedy after penalties is the CPU chain's single token, every time.
    let greedy = SamplerConfig {
        temperature: 0.0,
        ..penalised
    };
    check_distribution(&ctx, greedy, &logits, &history, false).await;
}
