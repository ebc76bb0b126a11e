//! The fused decode kernels (5 dispatches per layer, 2 for the head) against the unfused CPU
//! references they replace, on random inputs. Runs natively (lavapipe in CI) and in the browser.

#[macro_use]
mod common;

use bonsai_wgpu::gpu::buffers::{
    StepParams, read_buffer, storage_buffer, storage_buffer_init, uniform_buffer_init,
};
use bonsai_wgpu::gpu::kernel::{PipelineCache, submit_kernels};
use bonsai_wgpu::gpu::kv_cache::{AttnDims, KvCache, pack_f16, unpack_f16};
use bonsai_wgpu::gpu::ops::attention_decode::{self, DecodeScratch};
use bonsai_wgpu::gpu::ops::sampler::GpuSampler;
use bonsai_wgpu::gpu::ops::topk::{MAX_K, TopK};
use bonsai_wgpu::gpu::ops::{ffn_gate_up, head_argmax, qkv_rope, wo_merge};
use bonsai_wgpu::gpu::q1_0::Q1_0Weight;
use bonsai_wgpu::gpu::{GpuContext, GpuOptions};
use bonsai_wgpu::model::rope::RopeParams;
use bonsai_wgpu::sampler::{Sampler, SamplerConfig};
use common::{gpu_test, random_f32, random_q1_0};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// f32 sums in another order than the f64 CPU references, rsqrt vs sqrt: relative to max(1, |want|).
const TOL_F32: f32 = 1e-4;
/// Cached k/v are f16: one ulp (2^-10 relative) plus slack, as in tests/gpu_attention.rs.
const TOL_KV_F16: f32 = 1.5e-3;
/// Block scales like real Bonsai weights.
const WEIGHT_SCALES: std::ops::Range<f32> = 0.005..0.05;
const EPS: f32 = 1e-6;

const TINY: AttnDims = AttnDims {
    n_head: 4,
    n_head_kv: 2,
    head_dim: 128,
};
const SMALL_MHA: AttnDims = AttnDims {
    n_head: 3,
    n_head_kv: 3,
    head_dim: 64,
};

fn rope(n_rot: usize) -> RopeParams {
    RopeParams {
        n_rot,
        freq_base: 1_000_000.0,
        freq_scale: 0.25,
        ext_factor: 1.0,
        attn_factor: 1.0,
        beta_fast: 32.0,
        beta_slow: 1.0,
        n_ctx_orig: 8192,
    }
}

async fn ctx() -> GpuContext {
    GpuContext::new(&GpuOptions::default())
        .await
        .expect("a wgpu adapter")
}

fn upload(ctx: &GpuContext, label: &str, data: &[f32]) -> wgpu::Buffer {
    storage_buffer_init(ctx, label, data).expect("buffer")
}

fn step_at(ctx: &GpuContext, pos: usize) -> wgpu::Buffer {
    uniform_buffer_init(ctx, "step", &StepParams::new(pos, 1))
}

async fn read_f32(ctx: &GpuContext, buf: &wgpu::Buffer, offset: u64, len: usize) -> Vec<f32> {
    read_buffer::<f32>(ctx, buf, offset, len)
        .await
        .expect("read back")
}

/// Fails at the first index where |got - want| > tol * max(1, |want|).
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0);
        assert!(
            err <= tol,
            "{what}: index {i}: got {g}, want {w} (tol {tol})"
        );
        if err > worst.0 {
            worst = (err, i);
        }
    }
    note!("{what}: max rel err {:.2e} at {}", worst.0, worst.1);
}

async fn check_qkv_rope(dims: AttnDims, n_embd: usize, n_rot: usize, pos: usize, seed: u64) {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let rope = rope(n_rot);
    let n_ctx = pos + 3;
    let kv = KvCache::with_dims(&ctx, 2, dims, &rope, n_ctx).expect("kv cache");
    let x = random_f32(&mut rng, n_embd, 2.0);
    let attn_norm = random_f32(&mut rng, n_embd, 1.5);
    let q_norm = random_f32(&mut rng, dims.head_dim, 1.5);
    let k_norm = random_f32(&mut rng, dims.head_dim, 1.5);
    let wq = random_q1_0(&mut rng, n_embd, dims.q_dim(), WEIGHT_SCALES);
    let wk = random_q1_0(&mut rng, n_embd, dims.kv_dim(), WEIGHT_SCALES);
    let wv = random_q1_0(&mut rng, n_embd, dims.kv_dim(), WEIGHT_SCALES);
    let rows = dims.q_dim() + 2 * dims.kv_dim();
    let fused = qkv_rope::fuse_weights(&wq, &wk, &wv);
    let w = Q1_0Weight::upload(&ctx, "wqkv", &fused, n_embd, rows).expect("weight");
    let x_buf = upload(&ctx, "x", &x);
    let norms = upload(
        &ctx,
        "norms",
        &qkv_rope::fuse_norms(&attn_norm, &q_norm, &k_norm),
    );
    let q_buf = storage_buffer(&ctx, "q", 4 * dims.q_dim() as u64).expect("q");
    let step = step_at(&ctx, pos);
    let kernel = qkv_rope::build(
        &ctx,
        &cache,
        EPS,
        &qkv_rope::QkvRopeBindings {
            step: &step,
            x: &x_buf,
            norms: &norms,
            w: &w,
            q: &q_buf,
            kv: &kv,
            layer: 1,
        },
    )
    .expect("kernel");
    submit_kernels(&ctx, "qkv_rope", &[&kernel]);

    let (q, k, v) = qkv_rope::run_cpu(
        dims,
        &rope,
        EPS,
        pos,
        &x,
        [&attn_norm, &q_norm, &k_norm],
        &wq,
        &wk,
        &wv,
    );
    let what = format!("qkv_rope {dims:?} n_embd {n_embd} n_rot {n_rot} pos {pos}");
    let got_q = read_f32(&ctx, &q_buf, 0, dims.q_dim()).await;
    assert_close(&format!("{what} q"), &got_q, &q, TOL_F32);
    let words = dims.kv_dim() / 2;
    let at = (4 * pos * words) as u64;
    let layer = &kv.layers[1];
    let got_k = unpack_f16(&read_buffer::<u32>(&ctx, &layer.k, at, words).await.unwrap());
    let got_v = unpack_f16(&read_buffer::<u32>(&ctx, &layer.v, at, words).await.unwrap());
    assert_close(&format!("{what} k cache"), &got_k, &k, TOL_KV_F16);
    assert_close(&format!("{what} v cache"), &got_v, &v, TOL_KV_F16);
    ctx.take_error().expect("no wgpu error");
}

#[gpu_test]
async fn qkv_rope_matches_unfused_reference() {
    check_qkv_rope(TINY, 256, 128, 0, 1).await;
    check_qkv_rope(TINY, 384, 128, 37, 2).await;
    check_qkv_rope(SMALL_MHA, 256, 32, 5, 3).await; // head_dim 64, partial rotation
}

/// The attention partials (D2) of a random f16 cache, merged by wo_merge (D3) into x += Wo attn.
async fn check_wo_merge(dims: AttnDims, n_embd: usize, chunk: usize, n_kv: usize, seed: u64) {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let n_ctx = n_kv + 5;
    let kv = KvCache::with_dims(&ctx, 1, dims, &rope(dims.head_dim), n_ctx).expect("kv cache");
    let f16 = |v: Vec<f32>| unpack_f16(&pack_f16(&v));
    let k = f16(random_f32(&mut rng, n_ctx * dims.kv_dim(), 2.0));
    let v = f16(random_f32(&mut rng, n_ctx * dims.kv_dim(), 2.0));
    ctx.queue
        .write_buffer(&kv.layers[0].k, 0, bytemuck::cast_slice(&pack_f16(&k)));
    ctx.queue
        .write_buffer(&kv.layers[0].v, 0, bytemuck::cast_slice(&pack_f16(&v)));
    let q = random_f32(&mut rng, dims.q_dim(), 1.0);
    let x = random_f32(&mut rng, n_embd, 1.0);
    let wo = random_q1_0(&mut rng, dims.q_dim(), n_embd, WEIGHT_SCALES);
    let w = Q1_0Weight::upload(&ctx, "wo", &wo, dims.q_dim(), n_embd).expect("weight");
    let q_buf = upload(&ctx, "q", &q);
    let x_buf = upload(&ctx, "x", &x);
    let out = storage_buffer(&ctx, "unused merge out", 4 * dims.q_dim() as u64).unwrap();
    let scratch = DecodeScratch::with_chunk(&ctx, dims, n_ctx, chunk).expect("scratch");
    let step = step_at(&ctx, n_kv - 1);
    let attn = attention_decode::build(
        &ctx,
        &cache,
        &attention_decode::AttentionDecodeBindings {
            step: &step,
            q: &q_buf,
            kv: &kv,
            layer: 0,
            scratch: &scratch,
            out: &out,
        },
    )
    .expect("attention");
    let merge = wo_merge::build(
        &ctx,
        &cache,
        dims,
        &wo_merge::WoMergeBindings {
            step: &step,
            scratch: &scratch,
            w: &w,
            x: &x_buf,
        },
    )
    .expect("wo_merge");
    submit_kernels(&ctx, "attention + wo_merge", &[&attn.partial, &merge]);
    let mut want = x.clone();
    wo_merge::run_cpu(dims, &q, &k, &v, n_kv, &wo, &mut want);
    let got = read_f32(&ctx, &x_buf, 0, n_embd).await;
    let what = format!("wo_merge {dims:?} chunk {chunk} n_kv {n_kv}");
    assert_close(&what, &got, &want, TOL_F32);
    ctx.take_error().expect("no wgpu error");
}

#[gpu_test]
async fn wo_merge_matches_attention_then_matvec() {
    check_wo_merge(TINY, 256, 32, 1, 4).await; // one chunk: the merge is a division
    check_wo_merge(TINY, 256, 32, 32, 5).await;
    check_wo_merge(TINY, 384, 32, 3 * 32 + 7, 6).await; // four chunks, the last partial
    let head_dim_64 = AttnDims {
        n_head: 4,
        n_head_kv: 2,
        head_dim: 64,
    };
    check_wo_merge(head_dim_64, 256, 64, 130, 7).await;
}

async fn check_ffn_gate_up(n_embd: usize, n_ff: usize, seed: u64) {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let x = random_f32(&mut rng, n_embd, 2.0);
    let norm = random_f32(&mut rng, n_embd, 1.5);
    let gate = random_q1_0(&mut rng, n_embd, n_ff, WEIGHT_SCALES);
    let up = random_q1_0(&mut rng, n_embd, n_ff, WEIGHT_SCALES);
    let fused = ffn_gate_up::interleave_weights(&gate, &up, n_embd, n_ff).expect("interleave");
    let w = Q1_0Weight::upload(&ctx, "gate_up", &fused, n_embd, 2 * n_ff).expect("weight");
    let x_buf = upload(&ctx, "x", &x);
    let norm_buf = upload(&ctx, "norm", &norm);
    let hb = storage_buffer(&ctx, "hb", 4 * n_ff as u64).unwrap();
    let kernel = ffn_gate_up::build(
        &ctx,
        &cache,
        EPS,
        &ffn_gate_up::FfnGateUpBindings {
            x: &x_buf,
            norm: &norm_buf,
            w: &w,
            hb: &hb,
        },
    )
    .expect("kernel");
    submit_kernels(&ctx, "ffn_gate_up", &[&kernel]);
    let want = ffn_gate_up::run_cpu(&x, &norm, EPS, &gate, &up, n_ff);
    let got = read_f32(&ctx, &hb, 0, n_ff).await;
    assert_close(
        &format!("ffn_gate_up {n_embd}x{n_ff}"),
        &got,
        &want,
        TOL_F32,
    );
    ctx.take_error().expect("no wgpu error");
}

#[gpu_test]
async fn ffn_gate_up_matches_unfused_reference() {
    check_ffn_gate_up(256, 768, 8).await;
    check_ffn_gate_up(2048, 6, 9).await; // fewer rows than a workgroup
    assert!(ffn_gate_up::interleave_weights(&[0; 18], &[0; 18], 128, 1).is_err());
}

async fn check_head(n_embd: usize, n_vocab: usize, max_binding: u64, seed: u64) {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let x = random_f32(&mut rng, n_embd, 2.0);
    let norm = random_f32(&mut rng, n_embd, 1.5);
    let bytes = random_q1_0(&mut rng, n_embd, n_vocab, WEIGHT_SCALES);
    let w = Q1_0Weight::upload_with_limit(&ctx, "head", &bytes, n_embd, n_vocab, max_binding)
        .expect("weight");
    let x_buf = upload(&ctx, "x", &x);
    let norm_buf = upload(&ctx, "norm", &norm);
    let logits = storage_buffer(&ctx, "logits", 4 * n_vocab as u64).unwrap();
    let token = storage_buffer(&ctx, "token", 8).unwrap();
    let head = head_argmax::build(
        &ctx,
        &cache,
        EPS,
        &head_argmax::HeadArgmaxBindings {
            x: &x_buf,
            norm: &norm_buf,
            w: &w,
            logits: &logits,
            token: &token,
        },
    )
    .expect("head");
    let kernels: Vec<_> = head.parts.iter().chain([&head.stage2]).collect();
    submit_kernels(&ctx, "head", &kernels);
    let (want, _) = head_argmax::run_cpu(&x, &norm, EPS, &bytes, n_vocab);
    let got = read_f32(&ctx, &logits, 0, n_vocab).await;
    let what = format!("head {n_embd}x{n_vocab} in {} parts", w.parts.len());
    assert_close(&what, &got, &want, TOL_F32);
    // The argmax rule is exact on the logits the GPU computed (lowest id on ties).
    let id = read_buffer::<u32>(&ctx, &token, 0, 1).await.unwrap()[0];
    assert_eq!(id, bonsai_wgpu::engine::argmax(&got), "{what}: argmax");
    ctx.take_error().expect("no wgpu error");
}

#[gpu_test]
async fn head_argmax_matches_reference() {
    check_head(256, 5000, u64::MAX, 10).await;
    // Split parts (each with its own pair offset), like a head past the binding limit.
    check_head(256, 3001, 32 * 1000, 11).await;
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
    let pristine = upload(ctx, "pristine logits", logits);
    let work = upload(ctx, "logits", logits);
    let tokens = storage_buffer(ctx, "tokens", 4).unwrap();
    let topk = TopK::new(ctx, &cache, &work, n as u32, MAX_K).expect("top-k");
    let sampler = GpuSampler::new(ctx, &cache, &work, &topk, &tokens).expect("sampler");
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
        sampler.encode(&mut encoder.begin_compute_pass(&Default::default()));
        encoder.copy_buffer_to_buffer(&tokens, 0, &out, 4 * i as u64, 4);
    }
    ctx.queue.submit([encoder.finish()]);
    let got = read_buffer::<u32>(ctx, &out, 0, draws)
        .await
        .expect("draws");
    ctx.take_error().expect("no wgpu error");
    got
}

/// Draws per distribution check (each one a few dispatches, all in one submit).
const DRAWS: usize = 3000;
/// Frequencies vs the CPU reference's probabilities: about 3.8 standard deviations at p = 0.5.
const FREQ_TOL: f64 = 0.035;

async fn check_sampler_distribution(
    cfg: SamplerConfig,
    history: &[u32],
    seed: u64,
    check_repeat: bool,
) {
    let ctx = ctx().await;
    let mut rng = StdRng::seed_from_u64(seed);
    let logits = random_f32(&mut rng, 1000, 3.0);
    let got = gpu_draws(&ctx, &cfg, &logits, history, DRAWS).await;
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
        // Same seed, same draws.
        assert_eq!(got, gpu_draws(&ctx, &cfg, &logits, history, DRAWS).await);
    }
}

#[gpu_test]
async fn gpu_sampler_matches_cpu_distribution() {
    check_sampler_distribution(SamplerConfig::default(), &[], 20, true).await;
    let hot = SamplerConfig {
        temperature: 1.5,
        top_k: 12,
        top_p: 1.0,
        min_p: 0.0,
        ..SamplerConfig::default()
    };
    check_sampler_distribution(hot.clone(), &[], 21, false).await;
    // Penalties over a window of recent tokens (repeats count for the frequency penalty).
    let mut rng = StdRng::seed_from_u64(22);
    let logits = random_f32(&mut rng, 1000, 3.0);
    let top: Vec<u32> = bonsai_wgpu::engine::top_k_of(&logits, 6)
        .iter()
        .map(|c| c.0)
        .collect();
    let history = [top[0], top[1], top[0], 999, top[3], top[0], top[5]];
    let penalised = SamplerConfig {
        repeat_penalty: 1.5,
        presence_penalty: 0.4,
        frequency_penalty: 0.3,
        penalty_last_n: 6, // the oldest entry falls out of the window
        ..hot
    };
    check_sampler_distribution(penalised.clone(), &history, 22, false).await;
    // Greedy after penalties is the CPU chain's single token, every time.
    let greedy = SamplerConfig {
        temperature: 0.0,
        ..penalised
    };
    check_sampler_distribution(greedy, &history, 22, false).await;
}

/// The trusted kernels built with wgpu's runtime checks give the same bits (the checks only
/// clamp indices that are in range anyway).
#[gpu_test]
async fn trusted_kernels_equal_checked_kernels() {
    use bonsai_wgpu::engine::Engine;
    use bonsai_wgpu::gpu::{GpuModel, Session, SessionOptions};
    let mut logits = Vec::new();
    for checked in [false, true] {
        let opts = GpuOptions {
            checked_shaders: checked,
            ..GpuOptions::default()
        };
        let ctx = GpuContext::new(&opts).await.expect("context");
        let model = GpuModel::load(std::sync::Arc::new(ctx), &common::tiny_model()).expect("model");
        let mut s = Session::new(model, SessionOptions::default()).expect("session");
        s.feed(&[785, 3974]).await.expect("prefill");
        for t in [13876, 38835] {
            s.feed(&[t]).await.expect("decode");
        }
        logits.push(s.logits().await.expect("logits"));
    }
    assert!(logits[0] == logits[1], "checked and trusted kernels differ");
}
