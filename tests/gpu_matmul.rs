//! Batched Q1_0 matmul (prefill) against the CPU reference (the model oracle's Q1_0 matvec, token
//! by token), on random weights and activations. Runs natively and in the browser.

#[macro_use]
mod common;

use bonsai_wgpu::cpu::ops::Matrix;
use bonsai_wgpu::gguf::GgmlType;
use bonsai_wgpu::gpu::buffers::{
    StepParams, read_buffer, storage_buffer_init, uniform_buffer_init,
};
use bonsai_wgpu::gpu::kernel::{PipelineCache, submit_kernels};
use bonsai_wgpu::gpu::ops::matmul_q1_0::{MatmulQ1_0, MatmulQ1_0Bindings};
use bonsai_wgpu::gpu::q1_0::Q1_0Weight;
use bonsai_wgpu::gpu::{GpuContext, GpuOptions, KernelPath};
use bonsai_wgpu::quant::q1_0;
use common::{gpu_test, random_f32, random_q1_0};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// Both sides sum K <= 1024 products of +-d and x in f32, in different orders; the rounding
/// difference stays far below 1e-4 of max(1, |want|) (observed: < 1e-6).
const TOL_MATMUL: f32 = 1e-4;

/// Block scales of the random weights.
const WEIGHT_SCALES: std::ops::Range<f32> = 0.01..0.1;

/// The q8 path against its CPU reference (`Matrix::matvec_q8`): the same int8 input and
/// integer sums, f32 combination in another order (observed: < 1e-6).
const TOL_MATMUL_Q8: f32 = 1e-4;

/// The CPU reference: `y[t] = W x[t]` (+ `residual[t]`) for every token of `x` (n_tokens, k),
/// in `path`'s arithmetic (`Matrix::matvec_q8` for the q8 path).
fn cpu_matmul_path(
    path: KernelPath,
    bytes: &[u8],
    k: usize,
    n: usize,
    x: &[f32],
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let w = Matrix::new(GgmlType::Q1_0, bytes.to_vec(), k, n).expect("Q1_0 matrix");
    let mut y = vec![0.0f32; x.len() / k * n];
    for (xt, yt) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
        match path {
            KernelPath::Q8 => w.matvec_q8(yt, xt),
            _ => w.matvec(yt, xt),
        }
    }
    if let Some(res) = residual {
        y.iter_mut().zip(res).for_each(|(y, r)| *y += r);
    }
    y
}

/// A context whose Q1_0 matmuls take `path` (the tests that name none: f32).
async fn ctx_path(path: KernelPath) -> GpuContext {
    GpuContext::new(&GpuOptions {
        kernel_path: path,
        ..GpuOptions::default()
    })
    .await
    .expect("a wgpu adapter")
}

async fn ctx() -> GpuContext {
    ctx_path(KernelPath::F32).await
}

/// `y (+)= x W^T` for `n_tokens` tokens, W `[k, n]` uploaded with at most `max_binding` bytes
/// per part (forcing several parts when small).
async fn check_matmul(k: usize, n: usize, n_tokens: usize, accumulate: bool, max_binding: u64) {
    check_matmul_path(KernelPath::F32, k, n, n_tokens, accumulate, max_binding).await;
}

async fn check_matmul_path(
    path: KernelPath,
    k: usize,
    n: usize,
    n_tokens: usize,
    accumulate: bool,
    max_binding: u64,
) {
    let ctx = ctx_path(path).await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64((k * 31 + n * 7 + n_tokens) as u64);
    let bytes = random_q1_0(&mut rng, k, n, WEIGHT_SCALES);
    let w = Q1_0Weight::upload_with_limit(&ctx, "w", &bytes, k, n, max_binding).expect("upload");
    let x = random_f32(&mut rng, n_tokens * k, 1.0);
    let y0 = random_f32(&mut rng, n_tokens * n, 1.0);
    let max_tokens = n_tokens + 17; // extra token groups must exit
    let mut x_pad = x.clone();
    x_pad.resize(max_tokens * k, 0.0);
    let mut y_pad = y0.clone();
    y_pad.resize(max_tokens * n, 0.0);
    let x_buf = storage_buffer_init(&ctx, "x", &x_pad).expect("x");
    let y_buf = storage_buffer_init(&ctx, "y", &y_pad).expect("y");
    let step = uniform_buffer_init(&ctx, "step", &StepParams::new(0, n_tokens));
    let mm = MatmulQ1_0::new(
        &ctx,
        &cache,
        &MatmulQ1_0Bindings {
            step: &step,
            x: &x_buf,
            w: &w,
            y: &y_buf,
            max_tokens,
            accumulate,
            small_tiles: false,
        },
    )
    .expect("kernels");
    let kernels: Vec<_> = mm.kernels.iter().collect();
    submit_kernels(&ctx, "matmul", &kernels);
    let got: Vec<f32> = read_buffer(&ctx, &y_buf, 0, max_tokens * n)
        .await
        .expect("read");
    let want = cpu_matmul_path(path, &bytes, k, n, &x, accumulate.then_some(&y0[..]));
    let what = format!(
        "matmul {path} k {k} n {n} T {n_tokens} acc {accumulate} parts {}",
        w.parts.len()
    );
    let tol = match path {
        KernelPath::Q8 => TOL_MATMUL_Q8,
        _ => TOL_MATMUL,
    };
    let mut worst = 0.0f32;
    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
        let err = (g - e).abs() / e.abs().max(1.0);
        assert!(err <= tol, "{what}: index {i}: got {g}, want {e}");
        worst = worst.max(err);
    }
    // Rows of tokens past n_tokens are untouched.
    assert_eq!(
        &got[n_tokens * n..],
        &y_pad[n_tokens * n..],
        "{what}: wrote past n_tokens"
    );
    note!("{what}: max rel err {worst:.2e}");
    ctx.take_error().expect("no wgpu error");
}

#[gpu_test]
async fn matmul_q1_0_matches_cpu() {
    check_matmul(256, 200, 1, false, u64::MAX).await;
    check_matmul(256, 200, 7, true, u64::MAX).await;
    check_matmul(512, 130, 33, false, u64::MAX).await;
    check_matmul(1024, 96, 16, true, u64::MAX).await;
}

/// The q8 path's matmul against its CPU reference: one token to several tiles, accumulating,
/// split parts, and rows of 12,288 (Bonsai-8B's ffn_down).
#[gpu_test]
async fn matmul_q1_0_q8_matches_cpu() {
    let q8 = KernelPath::Q8;
    check_matmul_path(q8, 256, 200, 1, false, u64::MAX).await;
    check_matmul_path(q8, 512, 130, 33, true, u64::MAX).await;
    check_matmul_path(q8, 384, 150, 20, false, 40 * 48).await;
    check_matmul_path(q8, 12288, 64, 5, true, u64::MAX).await;
}

#[gpu_test]
async fn matmul_q1_0_split_parts_matches_cpu() {
    // 384 / 8 = 48 sign bytes per row: a 40-row limit gives 4 parts of 40, 40, 40, 30 rows.
    check_matmul(384, 150, 9, true, 40 * 48).await;
    check_matmul(384, 150, 20, false, 40 * 48).await;
}

/// Small token tiles (batched decode steps): for 1 to 8 tokens (and 12, past them) every row's
/// result is the 16-token tile's bit for bit, and the CPU reference's within TOL_MATMUL.
#[gpu_test]
async fn matmul_small_tiles_equal_the_16_token_tile() {
    small_tiles_equal_the_16_token_tile(KernelPath::F32).await;
    small_tiles_equal_the_16_token_tile(KernelPath::Q8).await;
}

async fn small_tiles_equal_the_16_token_tile(path: KernelPath) {
    let ctx = ctx_path(path).await;
    let cache = PipelineCache::new();
    let (k, n, max_tokens) = (256, 200, 16);
    let mut rng = StdRng::seed_from_u64(99);
    let bytes = random_q1_0(&mut rng, k, n, WEIGHT_SCALES);
    let w = Q1_0Weight::upload_with_limit(&ctx, "w", &bytes, k, n, u64::MAX).expect("upload");
    let x = random_f32(&mut rng, max_tokens * k, 1.0);
    let x_buf = storage_buffer_init(&ctx, "x", &x).expect("x");
    for n_tokens in [1, 2, 3, 5, 8, 12] {
        let params = StepParams::new(0, n_tokens);
        let step = uniform_buffer_init(&ctx, "step", &params);
        let mut outs = Vec::new();
        for small_tiles in [false, true] {
            let y_buf = storage_buffer_init(&ctx, "y", &vec![0.0f32; max_tokens * n]).expect("y");
            let mm = MatmulQ1_0::new(
                &ctx,
                &cache,
                &MatmulQ1_0Bindings {
                    step: &step,
                    x: &x_buf,
                    w: &w,
                    y: &y_buf,
                    max_tokens,
                    accumulate: false,
                    small_tiles,
                },
            )
            .expect("kernels");
            assert_eq!(mm.small.len(), if small_tiles { 4 } else { 0 });
            bonsai_wgpu::gpu::kernel::submit(&ctx, "matmul", &[&mm], &params);
            let y: Vec<f32> = read_buffer(&ctx, &y_buf, 0, max_tokens * n)
                .await
                .expect("read");
            assert!(
                y[n_tokens * n..].iter().all(|&v| v == 0.0),
                "T {n_tokens} small {small_tiles}: wrote past n_tokens"
            );
            outs.push(y[..n_tokens * n].to_vec());
        }
        assert!(
            outs[0] == outs[1],
            "{path} T {n_tokens}: small tile vs 16-token tile differ"
        );
        let want = cpu_matmul_path(path, &bytes, k, n, &x[..n_tokens * k], None);
        for (i, (g, e)) in outs[1].iter().zip(&want).enumerate() {
            let err = (g - e).abs() / e.abs().max(1.0);
            assert!(
                err <= TOL_MATMUL.max(TOL_MATMUL_Q8),
                "{path} T {n_tokens} index {i}: got {g}, want {e}"
            );
        }
    }
    ctx.take_error().expect("no wgpu error");
}

/// Real Q1_0 tensors of the tiny fixture (q, k, v, o, gate, up, down of one layer), checked row
/// by row against quant.rs's dot product, with a fused residual for the two that add into x.
#[gpu_test]
async fn matmul_q1_0_fixture_weights_match_quant_dot() {
    let gguf = common::tiny_model();
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(7);
    let n_tokens = 9;
    for (name, accumulate) in [
        ("blk.1.attn_q.weight", false),
        ("blk.1.attn_k.weight", false),
        ("blk.1.attn_v.weight", false),
        ("blk.1.attn_output.weight", true),
        ("blk.1.ffn_gate.weight", false),
        ("blk.1.ffn_up.weight", false),
        ("blk.1.ffn_down.weight", true),
    ] {
        let info = gguf.tensor_info(name).expect("tensor");
        let (k, n) = (info.dims[0] as usize, info.dims[1] as usize);
        let bytes = gguf.tensor_data(name).expect("tensor data");
        let w = Q1_0Weight::upload(&ctx, name, bytes, k, n).expect("upload");
        let x = random_f32(&mut rng, n_tokens * k, 1.0);
        let y0 = random_f32(&mut rng, n_tokens * n, 1.0);
        let x_buf = storage_buffer_init(&ctx, "x", &x).expect("x");
        let y_buf = storage_buffer_init(&ctx, "y", &y0).expect("y");
        let step = uniform_buffer_init(&ctx, "step", &StepParams::new(0, n_tokens));
        let b = MatmulQ1_0Bindings {
            step: &step,
            x: &x_buf,
            w: &w,
            y: &y_buf,
            max_tokens: n_tokens,
            accumulate,
            small_tiles: false,
        };
        let mm = MatmulQ1_0::new(&ctx, &cache, &b).expect("kernels");
        submit_kernels(&ctx, name, &mm.kernels.iter().collect::<Vec<_>>());
        let got: Vec<f32> = read_buffer(&ctx, &y_buf, 0, n_tokens * n)
            .await
            .expect("read");
        let row_bytes = q1_0::row_bytes(k);
        for t in 0..n_tokens {
            for r in 0..n {
                let row = &bytes[r * row_bytes..(r + 1) * row_bytes];
                let mut want = q1_0::dot_q1_0_f32(row, &x[t * k..(t + 1) * k]);
                if accumulate {
                    want += y0[t * n + r];
                }
                let g = got[t * n + r];
                let err = (g - want).abs() / want.abs().max(1.0);
                assert!(
                    err <= TOL_MATMUL,
                    "{name}: token {t} row {r}: got {g}, want {want}"
                );
            }
        }
    }
    ctx.take_error().expect("no wgpu error");
}
