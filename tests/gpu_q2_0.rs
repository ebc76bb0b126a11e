//! The Q2_0 (Ternary-Bonsai) GPU kernels against their CPU references: repack, matvec (both
//! reductions, split parts and dispatch, fused residual), embedding gather and the prefill
//! matmul, on random codes (all four, +2d included) and on the tiny-ternary-dev tensors. Runs
//! natively (lavapipe in CI) and in the browser (wasm-bindgen-test, WebGPU on SwiftShader).

#[macro_use]
mod common;

use bonsai_wgpu::cpu::ops::Matrix;
use bonsai_wgpu::gguf::{GgmlType, Gguf};
use bonsai_wgpu::gpu::buffers::{
    StepParams, read_buffer, storage_buffer, storage_buffer_init, uniform_buffer_init,
};
use bonsai_wgpu::gpu::kernel::submit_kernels;
use bonsai_wgpu::gpu::ops::embed_q1_0::{EmbedQ1_0, EmbedQ1_0Bindings};
use bonsai_wgpu::gpu::ops::matmul_q1_0::{MatmulQ1_0, MatmulQ1_0Bindings};
use bonsai_wgpu::gpu::ops::matvec_q1_0::{MatvecOptions, MatvecQ1_0, MatvecQ1_0Bindings, Reduce};
use bonsai_wgpu::gpu::q1_0::{Q1_0Weight, repack};
use bonsai_wgpu::gpu::{GpuContext, GpuOptions, PipelineCache};
use bonsai_wgpu::quant::q2_0::QK2_0;
use common::{assert_close, gpu_test, random_f32, random_q2_0};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// f32 GPU sums (another order, and sum(c x) - sum(x) per word) vs f64 CPU sums, relative to
/// the output's RMS.
const MATVEC_TOL: f32 = 1e-5;
/// Embedding values are exact multiples of f16 scales (-d, 0, d, 2d): bit for bit.
const EMBED_TOL: f32 = 0.0;
/// f32 sums of K <= 1024 products in another order than the f64 reference, relative to
/// max(1, |want|).
const MATMUL_TOL: f32 = 1e-4;
/// Block scales of the random weights: like real Ternary-Bonsai weights.
const WEIGHT_SCALES: std::ops::Range<f32> = 0.005..0.05;
/// Initial y of non-accumulating ops: a row left unwritten shows up as this value.
const SENTINEL: f32 = 1e30;

const Q2: GgmlType = GgmlType::Q2_0;

/// The CPU reference matvec (`cpu::ops::Matrix`): `y (=|+=) W x` for `W` `[k, n]` of type `ty`.
fn cpu_matvec(ty: GgmlType, w: &[u8], k: usize, n: usize, x: &[f32], y: &mut [f32], acc: bool) {
    let mut out = vec![0.0f32; n];
    Matrix::new(ty, w.to_vec(), k, n)
        .unwrap()
        .matvec(&mut out, x);
    for (y, o) in y.iter_mut().zip(out) {
        *y = if acc { *y + o } else { o };
    }
}

/// The CPU reference embedding: row `token` of a `[k, n]` table of type `ty` into `out`.
fn cpu_embed(ty: GgmlType, table: &[u8], k: usize, n: usize, token: usize, out: &mut [f32]) {
    Matrix::new(ty, table.to_vec(), k, n)
        .unwrap()
        .embed(token, out);
}

/// The CPU reference matmul: `y[t] = W x[t]` (+ `residual[t]`) for every token of `x`.
fn cpu_matmul(
    ty: GgmlType,
    w: &[u8],
    k: usize,
    n: usize,
    x: &[f32],
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let mut y = residual.map_or_else(|| vec![0.0; x.len() / k * n], <[f32]>::to_vec);
    for (xt, yt) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
        cpu_matvec(ty, w, k, n, xt, yt, residual.is_some());
    }
    y
}

async fn ctx() -> GpuContext {
    GpuContext::new(&GpuOptions::default())
        .await
        .expect("GPU context")
}

fn upload(ctx: &GpuContext, bytes: &[u8], k: usize, n: usize, max_binding: u64) -> Q1_0Weight {
    Q1_0Weight::upload_as(ctx, Q2, "w", bytes, k, n, max_binding).expect("upload Q2_0")
}

#[gpu_test]
async fn repack_q2_0_matches_gguf_blocks() {
    let mut rng = StdRng::seed_from_u64(1);
    let (k, n) = (192, 5); // 3 blocks per row, 15 in all: odd count pads the last scale word
    let bytes = random_q2_0(&mut rng, k, n, WEIGHT_SCALES);
    let (codes, scales) = repack(Q2, &bytes, k, n).unwrap();
    assert_eq!(codes.len(), n * k / 16);
    assert_eq!(scales.len(), (n * k / QK2_0).div_ceil(2));
    for r in 0..n {
        for j in 0..k {
            let blk = (r * k + j) / QK2_0;
            let block = &bytes[blk * 18..blk * 18 + 18];
            let code = (block[2 + (j % QK2_0) / 4] >> (2 * (j % 4))) & 3;
            let word = codes[r * k / 16 + j / 16];
            assert_eq!(
                (word >> (2 * (j % 16))) & 3,
                code as u32,
                "row {r} weight {j}"
            );
            let half = (scales[blk / 2] >> (16 * (blk % 2))) as u16;
            assert_eq!(
                half,
                u16::from_le_bytes([block[0], block[1]]),
                "scale {blk}"
            );
        }
    }
    assert!(repack(Q2, &bytes[1..], k, n).is_err());
    assert!(repack(Q2, &bytes, 96, n).is_err()); // not a multiple of 64
}

async fn gpu_matvec(
    ctx: &GpuContext,
    w: &Q1_0Weight,
    x: &[f32],
    y0: &[f32],
    opts: MatvecOptions,
) -> Vec<f32> {
    let cache = PipelineCache::new();
    let xb = storage_buffer_init(ctx, "x", x).unwrap();
    let yb = storage_buffer_init(ctx, "y", y0).unwrap();
    let b = MatvecQ1_0Bindings {
        w,
        x: &xb,
        y: &yb,
        opts,
    };
    let op = MatvecQ1_0::new(ctx, &cache, &b).unwrap();
    let kernels: Vec<_> = op.kernels.iter().collect();
    submit_kernels(ctx, "matvec q2_0", &kernels);
    let out = read_buffer::<f32>(ctx, &yb, 0, y0.len()).await.unwrap();
    ctx.take_error().expect("no wgpu error");
    out
}

/// `y (=|+=) W x` for a random Q2_0 `[k, n]`, in parts of at most `max_binding` bytes, with the
/// dispatch split at `max_groups_per_dim` (0: the device limit).
async fn check_matvec(k: usize, n: usize, accumulate: bool, max_binding: u64, max_dim: u32) {
    let ctx = ctx().await;
    let mut rng = StdRng::seed_from_u64((k * 7 + n) as u64);
    let bytes = random_q2_0(&mut rng, k, n, WEIGHT_SCALES);
    let x = random_f32(&mut rng, k, 1.0);
    let y0 = match accumulate {
        true => random_f32(&mut rng, n, 1.0),
        false => vec![SENTINEL; n],
    };
    let w = upload(&ctx, &bytes, k, n, max_binding);
    let mut want = y0.clone();
    cpu_matvec(Q2, &bytes, k, n, &x, &mut want, accumulate);
    for reduce in [Reduce::Shared, Reduce::Subgroup] {
        if reduce == Reduce::Subgroup && !ctx.features.has_subgroups {
            note!("skip subgroups: {} has none", ctx.info.name);
            continue;
        }
        let opts = MatvecOptions {
            accumulate,
            reduce,
            max_groups_per_dim: max_dim,
            ..Default::default()
        };
        let got = gpu_matvec(&ctx, &w, &x, &y0, opts).await;
        let what = format!(
            "q2_0 matvec {k}x{n} {reduce:?} acc={accumulate} parts {}",
            w.parts.len()
        );
        assert_close(&what, &got, &want, MATVEC_TOL);
    }
}

#[gpu_test]
async fn matvec_q2_0_small_and_odd_rows() {
    check_matvec(64, 1, false, u64::MAX, 0).await;
    check_matvec(192, 101, false, u64::MAX, 0).await;
}

#[gpu_test]
async fn matvec_q2_0_2048x6144() {
    check_matvec(2048, 6144, false, u64::MAX, 0).await;
}

#[gpu_test]
async fn matvec_q2_0_k12288_accumulate() {
    check_matvec(12288, 256, true, u64::MAX, 0).await;
}

/// The paths the 8B head and the 151,669-row vocabulary need: parts and a split dispatch.
#[gpu_test]
async fn matvec_q2_0_split_parts_and_dispatch() {
    // 512 / 4 = 128 code bytes per row: 4 KiB parts hold 32 rows, 1001 rows -> 32 parts.
    check_matvec(512, 1001, false, 4096, 3).await;
}

/// Plans the subgroup kernel for subgroup sizes 4..128: most rounds find no row group.
#[gpu_test]
#[cfg_attr(
    target_arch = "wasm32",
    ignore = "wgpu 30's WebGPU backend maps no subgroups feature"
)]
async fn matvec_q2_0_subgroup_planned_for_any_size() {
    let ctx = ctx().await;
    if !ctx.features.has_subgroups {
        note!("skip: {} has no subgroups", ctx.info.name);
        return;
    }
    let mut rng = StdRng::seed_from_u64(11);
    let (k, n) = (320, 1234);
    let bytes = random_q2_0(&mut rng, k, n, WEIGHT_SCALES);
    let x = random_f32(&mut rng, k, 1.0);
    let w = upload(&ctx, &bytes, k, n, u64::MAX);
    let opts = MatvecOptions {
        reduce: Reduce::Subgroup,
        subgroup_sizes: Some((4, 128)),
        ..Default::default()
    };
    let got = gpu_matvec(&ctx, &w, &x, &vec![SENTINEL; n], opts).await;
    let mut want = vec![0.0; n];
    cpu_matvec(Q2, &bytes, k, n, &x, &mut want, false);
    assert_close("q2_0 matvec for subgroups 4..128", &got, &want, MATVEC_TOL);
}

#[gpu_test]
async fn embed_q2_0_gathers_rows_across_parts() {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(20);
    let (k, n_vocab) = (256, 300);
    let bytes = random_q2_0(&mut rng, k, n_vocab, WEIGHT_SCALES);
    // 64 code bytes per row, 2 KiB parts: 32 rows each, 10 parts.
    let table = upload(&ctx, &bytes, k, n_vocab, 2048);
    assert_eq!(table.parts.len(), 10);
    let tokens: Vec<u32> = vec![0, 299, 31, 32, 150, 7];
    let tb = storage_buffer_init(&ctx, "tokens", &tokens).unwrap();
    let xb = storage_buffer(&ctx, "x", (4 * k * tokens.len()) as u64).unwrap();
    let b = EmbedQ1_0Bindings {
        table: &table,
        tokens: &tb,
        x: &xb,
        max_tokens: tokens.len() as u32,
    };
    let op = EmbedQ1_0::new(&ctx, &cache, &b).unwrap();
    let kernels: Vec<_> = op.kernels.iter().collect();
    submit_kernels(&ctx, "embed q2_0", &kernels);
    let got = read_buffer::<f32>(&ctx, &xb, 0, k * tokens.len())
        .await
        .unwrap();
    let mut want = vec![0.0; k * tokens.len()];
    for (t, &tok) in tokens.iter().enumerate() {
        let out = &mut want[t * k..(t + 1) * k];
        cpu_embed(Q2, &bytes, k, n_vocab, tok as usize, out);
    }
    assert_close("q2_0 embed", &got, &want, EMBED_TOL);
}

/// `y (+)= x W^T` for `n_tokens` tokens against the dequantized weight.
async fn check_matmul(k: usize, n: usize, n_tokens: usize, accumulate: bool, max_binding: u64) {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64((k * 31 + n * 7 + n_tokens) as u64);
    let bytes = random_q2_0(&mut rng, k, n, WEIGHT_SCALES);
    let w = upload(&ctx, &bytes, k, n, max_binding);
    let x = random_f32(&mut rng, n_tokens * k, 1.0);
    let y0 = random_f32(&mut rng, n_tokens * n, 1.0);
    let max_tokens = n_tokens + 17; // extra token groups must exit
    let mut x_pad = x.clone();
    x_pad.resize(max_tokens * k, 0.0);
    let mut y_pad = y0.clone();
    y_pad.resize(max_tokens * n, 0.0);
    let x_buf = storage_buffer_init(&ctx, "x", &x_pad).unwrap();
    let y_buf = storage_buffer_init(&ctx, "y", &y_pad).unwrap();
    let step = uniform_buffer_init(&ctx, "step", &StepParams::new(0, n_tokens));
    let b = MatmulQ1_0Bindings {
        step: &step,
        x: &x_buf,
        w: &w,
        y: &y_buf,
        max_tokens,
        accumulate,
        small_tiles: false,
    };
    let mm = MatmulQ1_0::new(&ctx, &cache, &b).unwrap();
    let kernels: Vec<_> = mm.kernels.iter().collect();
    submit_kernels(&ctx, "matmul q2_0", &kernels);
    let got: Vec<f32> = read_buffer(&ctx, &y_buf, 0, max_tokens * n).await.unwrap();
    ctx.take_error().expect("no wgpu error");
    let want = cpu_matmul(Q2, &bytes, k, n, &x, accumulate.then_some(&y0[..]));
    let what = format!(
        "q2_0 matmul k {k} n {n} T {n_tokens} acc {accumulate} parts {}",
        w.parts.len()
    );
    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
        let err = (g - e).abs() / e.abs().max(1.0);
        assert!(err <= MATMUL_TOL, "{what}: index {i}: got {g}, want {e}");
    }
    assert_eq!(
        &got[n_tokens * n..],
        &y_pad[n_tokens * n..],
        "{what}: wrote past n_tokens"
    );
}

#[gpu_test]
async fn matmul_q2_0_matches_cpu() {
    check_matmul(64, 130, 1, false, u64::MAX).await;
    check_matmul(256, 200, 7, true, u64::MAX).await;
    check_matmul(320, 129, 33, false, u64::MAX).await;
    check_matmul(1024, 96, 16, true, u64::MAX).await;
}

#[gpu_test]
async fn matmul_q2_0_split_parts_matches_cpu() {
    // 384 / 4 = 96 code bytes per row: a 40-row limit gives 4 parts of 40, 40, 40, 30 rows.
    check_matmul(384, 150, 9, true, 40 * 96).await;
    check_matmul(384, 150, 20, false, 40 * 96).await;
}

/// The tiny-ternary-dev fixture: memory-mapped natively, compiled in on wasm32.
fn ternary_model() -> Gguf {
    #[cfg(not(target_arch = "wasm32"))]
    let gguf = Gguf::open(common::fixture("tiny-ternary-dev.gguf"));
    #[cfg(target_arch = "wasm32")]
    let gguf = Gguf::from_bytes(common::TINY_TERNARY_BYTES.to_vec());
    gguf.expect("tiny-ternary-dev fixture")
}

/// Real Q2_0 tensors of the ternary fixture through matvec and matmul, and its embedding table
/// through the gather, against the CPU references.
#[gpu_test]
async fn fixture_q2_0_tensors_match_cpu() {
    let ctx = ctx().await;
    let gguf = ternary_model();
    let mut rng = StdRng::seed_from_u64(30);
    for name in [
        "blk.0.attn_q.weight",
        "blk.1.ffn_down.weight",
        "token_embd.weight",
    ] {
        let info = gguf.tensor_info(name).expect("fixture tensor");
        assert_eq!(info.ggml_type, GgmlType::Q2_0, "{name}");
        let (k, n) = (info.dims[0] as usize, info.dims[1] as usize);
        let bytes = gguf.tensor_data(name).unwrap();
        let w = upload(&ctx, bytes, k, n, u64::MAX);
        let x = random_f32(&mut rng, k, 1.0);
        let mut want = vec![0.0; n];
        cpu_matvec(Q2, bytes, k, n, &x, &mut want, false);
        let got = gpu_matvec(&ctx, &w, &x, &vec![SENTINEL; n], MatvecOptions::default()).await;
        assert_close(&format!("fixture {name}"), &got, &want, MATVEC_TOL);
    }
}

/// Random GGUF bytes of a dense `[k, n]` weight of type `ty` (F32 or F16).
fn random_dense(rng: &mut StdRng, ty: GgmlType, k: usize, n: usize) -> Vec<u8> {
    let values = random_f32(rng, k * n, 0.05);
    match ty {
        GgmlType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// The dense f32 kernels that F32 / F16 linear weights of mixed-type files use: matvec (split
/// into parts and dispatch), embedding gather and matmul, against the same CPU references.
#[gpu_test]
async fn dense_f32_and_f16_weights_match_cpu() {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(40);
    for ty in [GgmlType::F32, GgmlType::F16] {
        let (k, n) = (256, 301);
        let bytes = random_dense(&mut rng, ty, k, n);
        // 1 KiB rows, 16 KiB parts: 16 rows each, 19 parts.
        let w = Q1_0Weight::upload_as(&ctx, ty, "dense", &bytes, k, n, 16 * 1024).unwrap();
        assert_eq!(w.parts.len(), 19);
        let x = random_f32(&mut rng, k, 1.0);
        let y0 = random_f32(&mut rng, n, 1.0);
        let mut want = y0.clone();
        cpu_matvec(ty, &bytes, k, n, &x, &mut want, true);
        let opts = MatvecOptions {
            accumulate: true,
            max_groups_per_dim: 5,
            ..Default::default()
        };
        let got = gpu_matvec(&ctx, &w, &x, &y0, opts).await;
        assert_close(&format!("{ty} matvec"), &got, &want, MATVEC_TOL);

        let tokens: Vec<u32> = vec![300, 0, 17, 16];
        let tb = storage_buffer_init(&ctx, "tokens", &tokens).unwrap();
        let xb = storage_buffer(&ctx, "x", (4 * k * tokens.len()) as u64).unwrap();
        let b = EmbedQ1_0Bindings {
            table: &w,
            tokens: &tb,
            x: &xb,
            max_tokens: tokens.len() as u32,
        };
        let op = EmbedQ1_0::new(&ctx, &cache, &b).unwrap();
        submit_kernels(&ctx, "embed dense", &op.kernels.iter().collect::<Vec<_>>());
        let got = read_buffer::<f32>(&ctx, &xb, 0, k * tokens.len())
            .await
            .unwrap();
        let mut want = vec![0.0; k * tokens.len()];
        for (t, &tok) in tokens.iter().enumerate() {
            cpu_embed(
                ty,
                &bytes,
                k,
                n,
                tok as usize,
                &mut want[t * k..(t + 1) * k],
            );
        }
        assert_close(&format!("{ty} embed"), &got, &want, EMBED_TOL);

        let n_tokens = 19;
        let xs = random_f32(&mut rng, n_tokens * k, 1.0);
        let x_buf = storage_buffer_init(&ctx, "x", &xs).unwrap();
        let y_buf = storage_buffer(&ctx, "y", (4 * n_tokens * n) as u64).unwrap();
        let step = uniform_buffer_init(&ctx, "step", &StepParams::new(0, n_tokens));
        let b = MatmulQ1_0Bindings {
            step: &step,
            x: &x_buf,
            w: &w,
            y: &y_buf,
            max_tokens: n_tokens,
            accumulate: false,
            small_tiles: false,
        };
        let mm = MatmulQ1_0::new(&ctx, &cache, &b).unwrap();
        submit_kernels(&ctx, "matmul dense", &mm.kernels.iter().collect::<Vec<_>>());
        let got: Vec<f32> = read_buffer(&ctx, &y_buf, 0, n_tokens * n).await.unwrap();
        let want = cpu_matmul(ty, &bytes, k, n, &xs, None);
        assert_close(&format!("{ty} matmul"), &got, &want, MATVEC_TOL);
        ctx.take_error().expect("no wgpu error");
    }
}
