//! The Q8_0 KV cache on the GPU: the cache write of `qk_norm_rope` against the CPU's llama.cpp
//! quantization, and decode / prefill attention reading Q8_0 blocks against the CPU reference
//! over the same dequantized values. Runs on any adapter, natively and in the browser.

#[macro_use]
mod common;

use bonsai_wgpu::cache_type::CacheType;
use bonsai_wgpu::cpu::ops as cpu;
use bonsai_wgpu::gpu::buffers::{
    StepParams, read_buffer, storage_buffer, storage_buffer_init, uniform_buffer_init,
};
use bonsai_wgpu::gpu::kernel::{PipelineCache, submit_kernels};
use bonsai_wgpu::gpu::kv_cache::{AttnDims, KvCache, pack_q8_0, unpack_q8_0};
use bonsai_wgpu::gpu::ops::attention_decode::{
    self, AttentionDecode, AttentionDecodeBindings, DecodeScratch,
};
use bonsai_wgpu::gpu::ops::attention_prefill::{AttentionPrefill, AttentionPrefillBindings};
use bonsai_wgpu::gpu::ops::qk_norm_rope::{QkNormRope, QkNormRopeBindings};
use bonsai_wgpu::gpu::{GpuContext, GpuOptions};
use bonsai_wgpu::model::rope::RopeParams;
use bonsai_wgpu::quant::QK8_0;
use common::{gpu_test, random_f32};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// Both sides read the same dequantized values (`f16 d * i8` is exact in f32); only the f32
/// accumulation order differs.
const TOL_ATTN: f32 = 2e-5;
/// The GPU rotates k with its own rsqrt and sums (~1e-5 relative): a value next to a rounding
/// boundary may land one quantum away, so a cached value is within one quantum (plus slack) of
/// the CPU's rounded one.
const QUANTA_K: f32 = 1.01;
/// v reaches the cache unchanged; quantization differs only where the GPU's `1 / d` (2.5 ulp in
/// WGSL) moves `x / d` across .5: allow a tiny share of one-quantum differences.
const MAX_V_FLIPS: f64 = 1e-3;

const EPS: f32 = 1e-6;

const TINY: AttnDims = AttnDims {
    n_head: 4,
    n_head_kv: 2,
    head_dim: 128,
};
const BONSAI_1_7B: AttnDims = AttnDims {
    n_head: 16,
    n_head_kv: 8,
    head_dim: 128,
};
/// head_dim 64 (two blocks per row, one scale word) without GQA.
const SMALL_MHA: AttnDims = AttnDims {
    n_head: 3,
    n_head_kv: 3,
    head_dim: 64,
};
/// head_dim 32: one block per row, so each scale word is half empty.
const ONE_BLOCK: AttnDims = AttnDims {
    n_head: 4,
    n_head_kv: 2,
    head_dim: 32,
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

fn set_step(ctx: &GpuContext, step: &wgpu::Buffer, pos: usize, n_tokens: usize) {
    let p = StepParams::new(pos, n_tokens);
    ctx.queue.write_buffer(step, 0, bytemuck::bytes_of(&p));
}

async fn read_f32(ctx: &GpuContext, buf: &wgpu::Buffer, len: usize) -> Vec<f32> {
    read_buffer::<f32>(ctx, buf, 0, len).await.expect("read")
}

/// A whole Q8_0 cache buffer, dequantized: (n_ctx, n_head_kv, head_dim).
async fn read_q8_cache(ctx: &GpuContext, kv: &KvCache, buf: &wgpu::Buffer) -> Vec<f32> {
    let words = (buf.size() / 4) as usize;
    let raw = read_buffer::<u32>(ctx, buf, 0, words).await.expect("read");
    unpack_q8_0(&raw, kv.n_ctx * kv.dims.n_head_kv, kv.dims.head_dim)
}

fn q8_cache(ctx: &GpuContext, dims: AttnDims, n_ctx: usize) -> KvCache {
    KvCache::with_type(ctx, 1, dims, &rope(dims.head_dim), n_ctx, CacheType::Q8_0)
        .expect("q8_0 cache")
}

/// The largest |x| / 127 of each 32-value block of `x`: the block's quantum.
fn quanta(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(QK8_0)
        .map(|b| b.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0)
        .collect()
}

async fn check_write(dims: AttnDims, pos: usize, n_tokens: usize) {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64((pos * 31 + n_tokens) as u64);
    let n_ctx = pos + n_tokens + 3;
    let rp = rope(dims.head_dim);
    let kv = q8_cache(&ctx, dims, n_ctx);
    let q = random_f32(&mut rng, n_tokens * dims.q_dim(), 3.0);
    let k = random_f32(&mut rng, n_tokens * dims.kv_dim(), 3.0);
    let v = random_f32(&mut rng, n_tokens * dims.kv_dim(), 3.0);
    let q_norm = random_f32(&mut rng, dims.head_dim, 2.0);
    let k_norm = random_f32(&mut rng, dims.head_dim, 2.0);
    let (q_buf, k_buf, v_buf) = (
        upload(&ctx, "q", &q),
        upload(&ctx, "k", &k),
        upload(&ctx, "v", &v),
    );
    let (qn, kn) = (
        upload(&ctx, "q_norm", &q_norm),
        upload(&ctx, "k_norm", &k_norm),
    );
    let step = uniform_buffer_init(&ctx, "step", &StepParams::default());
    let b = QkNormRopeBindings {
        step: &step,
        q: &q_buf,
        k: &k_buf,
        v: &v_buf,
        q_norm: &qn,
        k_norm: &kn,
        kv: &kv,
        layer: 0,
        eps: EPS,
        max_tokens: n_tokens,
    };
    let op = QkNormRope::new(&ctx, &cache, &b).expect("kernel");
    set_step(&ctx, &step, pos, n_tokens);
    submit_kernels(&ctx, "qk_norm_rope q8_0", &[&op.kernel]);

    // the CPU reference's rotated k, token by token
    let mut q_cpu = q.clone();
    let mut k_cpu = k.clone();
    let tokens = q_cpu
        .chunks_exact_mut(dims.q_dim())
        .zip(k_cpu.chunks_exact_mut(dims.kv_dim()));
    for (t, (qt, kt)) in tokens.enumerate() {
        cpu::qk_norm_rope(qt, kt, &q_norm, &k_norm, EPS, pos + t, &rp);
    }
    let label = format!("q8_0 write {dims:?} pos {pos} T {n_tokens}");
    let at = pos * dims.kv_dim()..(pos + n_tokens) * dims.kv_dim();
    let k_got = read_q8_cache(&ctx, &kv, &kv.layers[0].k).await;
    let v_got = read_q8_cache(&ctx, &kv, &kv.layers[0].v).await;
    // k: the cached value is the nearest Q8_0 grid point of the CPU's rotated k, within a quantum
    let mut k_want = k_cpu.clone();
    CacheType::Q8_0.round_trip(&mut k_want);
    for (i, ((g, w), d)) in k_got[at.clone()]
        .iter()
        .zip(&k_want)
        .zip(quanta(&k_cpu).iter().flat_map(|&d| [d; QK8_0]))
        .enumerate()
    {
        assert!(
            (g - w).abs() <= QUANTA_K * d + 1e-6,
            "{label}: k index {i}: got {g}, want {w} (quantum {d})"
        );
    }
    // v: llama.cpp's quantization of the same values, up to rare reciprocal ties
    let mut v_want = v.clone();
    CacheType::Q8_0.round_trip(&mut v_want);
    let mut flips = 0;
    for (i, ((g, w), d)) in v_got[at.clone()]
        .iter()
        .zip(&v_want)
        .zip(quanta(&v).iter().flat_map(|&d| [d; QK8_0]))
        .enumerate()
    {
        if g != w {
            flips += 1;
            assert!(
                (g - w).abs() <= 1.01 * d,
                "{label}: v index {i}: got {g}, want {w} (quantum {d})"
            );
        }
    }
    assert!(
        flips as f64 <= MAX_V_FLIPS * v.len() as f64 + 1.0,
        "{label}: {flips} of {} v values differ from llama.cpp's quantization",
        v.len()
    );
    // positions outside the step stay zero (scales of 0)
    let untouched = |c: &[f32]| c[..at.start].iter().chain(&c[at.end..]).all(|&x| x == 0.0);
    assert!(
        untouched(&k_got) && untouched(&v_got),
        "{label}: wrote outside the step"
    );
    note!("{label}: {flips} v flips");
    ctx.take_error().expect("no wgpu error");
}

#[gpu_test]
async fn q8_0_cache_write_matches_llama_cpp_quantization() {
    check_write(TINY, 0, 1).await;
    check_write(TINY, 5, 7).await;
    check_write(BONSAI_1_7B, 300, 3).await;
    check_write(SMALL_MHA, 2, 5).await;
    check_write(ONE_BLOCK, 9, 4).await;
}

/// Random K and V through Q8_0 (as the cache write stores them): the packed words and the
/// dequantized values the CPU reference attends over.
fn random_q8_cache(rng: &mut StdRng, dims: AttnDims, n_ctx: usize) -> (Vec<u32>, Vec<f32>) {
    let x = random_f32(rng, n_ctx * dims.kv_dim(), 2.0);
    let words = pack_q8_0(&x, dims.head_dim);
    let values = unpack_q8_0(&words, n_ctx * dims.n_head_kv, dims.head_dim);
    (words, values)
}

/// Decode (every chunk size) and prefill attention over a random Q8_0 cache vs the CPU
/// reference on the dequantized cache.
async fn check_attention(dims: AttnDims, n_ctx: usize, pos: usize, n_tokens: usize) {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64((n_ctx * 3 + pos) as u64);
    let kv = q8_cache(&ctx, dims, n_ctx);
    let (k_words, k) = random_q8_cache(&mut rng, dims, n_ctx);
    let (v_words, v) = random_q8_cache(&mut rng, dims, n_ctx);
    ctx.queue
        .write_buffer(&kv.layers[0].k, 0, bytemuck::cast_slice(&k_words));
    ctx.queue
        .write_buffer(&kv.layers[0].v, 0, bytemuck::cast_slice(&v_words));
    let q = random_f32(&mut rng, n_tokens * dims.q_dim(), 1.0);
    let q_buf = upload(&ctx, "q", &q);
    let out = storage_buffer(&ctx, "out", (q.len() * 4) as u64).expect("out");
    let step = uniform_buffer_init(&ctx, "step", &StepParams::default());

    let b = AttentionPrefillBindings {
        step: &step,
        q: &q_buf,
        kv: &kv,
        layer: 0,
        out: &out,
        max_tokens: n_tokens,
    };
    let prefill = AttentionPrefill::new(&ctx, &cache, &b).expect("prefill");
    set_step(&ctx, &step, pos, n_tokens);
    submit_kernels(&ctx, "prefill q8_0", &[&prefill.kernel]);
    let got = read_f32(&ctx, &out, q.len()).await;
    // the CPU reference: causal attention of each query over the dequantized cache
    let mut want = vec![0.0; q.len()];
    let rows = q
        .chunks_exact(dims.q_dim())
        .zip(want.chunks_exact_mut(dims.q_dim()));
    for (t, (qt, ot)) in rows.enumerate() {
        cpu::attention(ot, qt, &k, &v, pos + t + 1, dims.n_head_kv, dims.head_dim);
    }
    assert_close(
        &format!("prefill q8_0 {dims:?} pos {pos} T {n_tokens}"),
        &got,
        &want,
    );

    // the last query token alone through decode, every chunk size
    let row = dims.q_dim();
    let q_last = &q[(n_tokens - 1) * row..];
    let n_kv = pos + n_tokens;
    let want = want[(n_tokens - 1) * row..].to_vec();
    let q1 = upload(&ctx, "q1", q_last);
    for chunk in attention_decode::DECODE_CHUNKS_SUPPORTED {
        let scratch = DecodeScratch::with_chunk(&ctx, dims, n_ctx, chunk).expect("scratch");
        let decode = AttentionDecode::new(
            &ctx,
            &cache,
            &AttentionDecodeBindings {
                step: &step,
                q: &q1,
                kv: &kv,
                layer: 0,
                scratch: &scratch,
                out: &out,
            },
        )
        .expect("decode");
        set_step(&ctx, &step, n_kv - 1, 1);
        submit_kernels(&ctx, "decode q8_0", &[&decode.partial, &decode.merge]);
        let got = read_f32(&ctx, &out, row).await;
        assert_close(
            &format!("decode q8_0 {dims:?} chunk {chunk} n_kv {n_kv}"),
            &got,
            &want,
        );
    }
    ctx.take_error().expect("no wgpu error");
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= TOL_ATTN * w.abs().max(1.0),
            "{what}: index {i}: got {g}, want {w} (tol {TOL_ATTN})"
        );
    }
}

#[gpu_test]
async fn q8_0_attention_matches_cpu_over_the_same_blocks() {
    check_attention(TINY, 300, 250, 33).await;
    check_attention(BONSAI_1_7B, 140, 120, 9).await;
    check_attention(SMALL_MHA, 90, 60, 17).await;
    check_attention(ONE_BLOCK, 70, 0, 40).await;
}
