//! Wall-clock timings of the attention and prefill kernels at Bonsai 1.7B shapes (ignored by
//! default; run with `cargo test --test gpu_attention_timing -- --ignored --nocapture`).
//! Each figure is the mean over a few submits of one kernel, including submit and wait.

use std::time::Instant;

use bonsai_wgpu::gpu::buffers::{StepParams, storage_buffer, uniform_buffer_init};
use bonsai_wgpu::gpu::kernel::{Kernel, PipelineCache, submit_kernels};
use bonsai_wgpu::gpu::kv_cache::{AttnDims, KvCache};
use bonsai_wgpu::gpu::ops::{
    attention_decode, attention_prefill, matmul_q1_0, matvec_q1_0, qk_norm_rope,
};
use bonsai_wgpu::gpu::q1_0::Q1_0Weight;
use bonsai_wgpu::gpu::{GpuContext, GpuOptions};
use bonsai_wgpu::model::rope::RopeParams;

const DIMS: AttnDims = AttnDims {
    n_head: 16,
    n_head_kv: 8,
    head_dim: 128,
};
const N_CTX: usize = 4096;
const N_EMBD: usize = 2048;
const MAX_TOKENS: usize = 64;

fn time(
    ctx: &GpuContext,
    step: &wgpu::Buffer,
    pos: usize,
    n_tokens: usize,
    kernels: &[&Kernel],
) -> f64 {
    let p = StepParams::new(pos, n_tokens);
    ctx.queue.write_buffer(step, 0, bytemuck::bytes_of(&p));
    submit_kernels(ctx, "warm-up", kernels);
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    let iters = 3;
    let t = Instant::now();
    for _ in 0..iters {
        submit_kernels(ctx, "timed", kernels);
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
    }
    t.elapsed().as_secs_f64() * 1e3 / iters as f64
}

#[test]
#[ignore = "timing report, not a check"]
fn attention_and_prefill_timings() {
    let ctx = pollster::block_on(GpuContext::new(&GpuOptions::default())).expect("adapter");
    eprintln!("adapter: {}", ctx.info.name);
    let cache = PipelineCache::new();
    let rope = RopeParams {
        n_rot: 128,
        freq_base: 1e6,
        freq_scale: 0.25,
        ext_factor: 1.0,
        attn_factor: 1.0,
        beta_fast: 32.0,
        beta_slow: 1.0,
        n_ctx_orig: 8192,
    };
    let kv = KvCache::with_dims(&ctx, 1, DIMS, &rope, N_CTX).expect("kv");
    let step = uniform_buffer_init(&ctx, "step", &StepParams::default());
    let f32s = |label: &str, n: usize| storage_buffer(&ctx, label, (n * 4) as u64).expect("buffer");
    let q = f32s("q", MAX_TOKENS * DIMS.q_dim());
    let k = f32s("k", MAX_TOKENS * DIMS.kv_dim());
    let v = f32s("v", MAX_TOKENS * DIMS.kv_dim());
    let norm = f32s("norm", DIMS.head_dim);
    let out = f32s("out", MAX_TOKENS * DIMS.q_dim());
    let x = f32s("x", MAX_TOKENS * N_EMBD);
    let y = f32s("y", MAX_TOKENS * N_EMBD);

    let rope_k = qk_norm_rope::build(
        &ctx,
        &cache,
        1e-6,
        MAX_TOKENS,
        &qk_norm_rope::QkNormRopeBindings {
            step: &step,
            q: &q,
            k: &k,
            v: &v,
            q_norm: &norm,
            k_norm: &norm,
            kv: &kv,
            layer: 0,
        },
    )
    .expect("rope");
    for n in [1, MAX_TOKENS] {
        let ms = time(&ctx, &step, 100, n, &[&rope_k]);
        eprintln!("qk_norm_rope T {n} (dispatched for {MAX_TOKENS}): {ms:.2} ms");
    }
    // The same kernel dispatched for exactly one token (what qk_norm_rope::encode_tokens does).
    let mut rope_1 = rope_k.clone();
    rope_1.workgroups[1] = 1;
    let ms = time(&ctx, &step, 100, 1, &[&rope_1]);
    eprintln!("qk_norm_rope T 1 (dispatched for 1): {ms:.2} ms");

    for chunk in attention_decode::DECODE_CHUNKS_SUPPORTED {
        let scratch =
            attention_decode::DecodeScratch::with_chunk(&ctx, DIMS, N_CTX, chunk).expect("scratch");
        let decode = attention_decode::build(
            &ctx,
            &cache,
            &attention_decode::AttentionDecodeBindings {
                step: &step,
                q: &q,
                kv: &kv,
                layer: 0,
                scratch: &scratch,
                out: &out,
            },
        )
        .expect("decode");
        for n_kv in [128, 1024, N_CTX] {
            let ms = time(&ctx, &step, n_kv - 1, 1, &[&decode.partial, &decode.merge]);
            let mut exact = decode.partial.clone();
            exact.workgroups[1] = n_kv.div_ceil(chunk) as u32;
            let ms_kv = time(&ctx, &step, n_kv - 1, 1, &[&exact, &decode.merge]);
            eprintln!(
                "attention_decode chunk {chunk} n_kv {n_kv} (n_ctx {N_CTX}): {ms:.2} ms, \
                 {ms_kv:.2} ms with encode_kv"
            );
        }
    }

    let prefill = attention_prefill::build(
        &ctx,
        &cache,
        MAX_TOKENS,
        &attention_prefill::AttentionPrefillBindings {
            step: &step,
            q: &q,
            kv: &kv,
            layer: 0,
            out: &out,
        },
    )
    .expect("prefill");
    for pos in [0, 1024] {
        let ms = time(&ctx, &step, pos, MAX_TOKENS, &[&prefill]);
        eprintln!("attention_prefill T {MAX_TOKENS} at pos {pos}: {ms:.2} ms");
    }

    let bytes = vec![0x5au8; N_EMBD / 128 * 18 * N_EMBD];
    let w = Q1_0Weight::upload(&ctx, "w", &bytes, N_EMBD, N_EMBD).expect("w");
    let mm = matmul_q1_0::build(
        &ctx,
        &cache,
        MAX_TOKENS,
        false,
        &matmul_q1_0::MatmulQ1_0Bindings {
            step: &step,
            x: &x,
            w: &w,
            y: &y,
        },
    )
    .expect("matmul");
    let kernels: Vec<_> = mm.kernels.iter().collect();
    for n in [1, 16, MAX_TOKENS] {
        let ms = time(&ctx, &step, 0, n, &kernels);
        eprintln!(
            "matmul_q1_0 {N_EMBD}x{N_EMBD} T {n}: {ms:.2} ms ({:.3} ms/token)",
            ms / n as f64
        );
    }
    // The decode path's matvec on the same weight, for comparison (same machine load).
    let mv =
        matvec_q1_0::MatvecQ1_0::new(&ctx, &cache, &w, &x, &y, Default::default()).expect("matvec");
    let kernels: Vec<_> = mv.kernels.iter().collect();
    let ms = time(&ctx, &step, 0, 1, &kernels);
    eprintln!("matvec_q1_0 {N_EMBD}x{N_EMBD} (decode, 1 token): {ms:.2} ms");
    ctx.take_error().expect("no wgpu error");
}
