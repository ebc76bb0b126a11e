//! Every GPU op against its CPU reference on random input and real fixture tensors. Runs
//! natively (lavapipe in CI) and in the browser (wasm-bindgen-test, WebGPU on SwiftShader in CI).

#[macro_use]
mod common;

use bonsai_wgpu::cpu::ops::{self as cpu, Matrix};
use bonsai_wgpu::gguf::GgmlType;
use bonsai_wgpu::gpu::buffers::StepParams;
use bonsai_wgpu::gpu::buffers::storage_buffer;
use bonsai_wgpu::gpu::buffers::{read_buffer, storage_buffer_init};
use bonsai_wgpu::gpu::kernel::Op;
use bonsai_wgpu::gpu::kernel::submit_kernels;
use bonsai_wgpu::gpu::ops::argmax::{Argmax, ArgmaxBindings};
use bonsai_wgpu::gpu::ops::embed_q1_0::{EmbedQ1_0, EmbedQ1_0Bindings};
use bonsai_wgpu::gpu::ops::matvec_q1_0::{
    Fusion, MatvecOptions, MatvecQ1_0, MatvecQ1_0Bindings, MergeInput, NormOut, Reduce,
    SUBGROUP_WORKGROUP_SIZES,
};
use bonsai_wgpu::gpu::ops::rmsnorm::{Rmsnorm, RmsnormBindings};
use bonsai_wgpu::gpu::ops::silu_mul::{SiluMul, SiluMulBindings};
use bonsai_wgpu::gpu::ops::topk::{TopK, TopKBindings};
use bonsai_wgpu::gpu::q1_0::{Q1_0Weight, repack_q1_0};
use bonsai_wgpu::gpu::{GpuContext, GpuOptions, KernelPath, PipelineCache};
use common::{assert_close, gpu_test, now_ms, random_f32, random_q1_0};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// f32 GPU sums vs f32 CPU sums in another order: relative to the output's RMS.
const MATVEC_TOL: f32 = 1e-5;
/// The q8 path against its CPU reference (`Matrix::matvec_q8`): the same int8 input and integer
/// sums, f32 combination in another order: relative to the output's RMS.
const Q8_TOL: f32 = 1e-5;
/// The q8 path against its CPU reference when the kernel quantizes a scaled input (RMS: r * g,
/// scaled by 1/rms after; the reference quantizes rmsnorm(r) * g): rounding ties can fall on
/// the other side for a few activations.
const Q8_FUSED_TOL: f32 = 2e-3;
/// The f16 path against the f32 reference: x rounded to f16 (2^-11 relative), relative to the
/// output's RMS.
const F16_TOL: f32 = 2e-3;
/// Least cosine similarity of the q8 path with its CPU reference (issue contract), and with the
/// f32 reference (what int8 activations cost).
const Q8_COSINE_MIN: f64 = 0.9999;

/// Embedding values are exact f16 scales: the GPU must reproduce them bit for bit.
const EMBED_TOL: f32 = 0.0;
/// f32 sum of squares in a different order, inverseSqrt vs sqrt.
const RMSNORM_TOL: f32 = 1e-5;
/// GPU exp vs libm exp (WGSL allows a few ulp).
const SILU_TOL: f32 = 1e-5;

/// Initial y of non-accumulating matvecs: a row left unwritten shows up as this value (finite:
/// WGSL lets GPUs assume no NaN).
const SENTINEL: f32 = 1e30;

/// The f32 path's context: the tests below that do not name a path check the f32 kernels
/// against the f32 reference; the q8 ones pass [`MatvecOptions::path`].
async fn ctx() -> GpuContext {
    GpuContext::new(&GpuOptions {
        kernel_path: KernelPath::F32,
        ..GpuOptions::default()
    })
    .await
    .expect("GPU context")
}

/// Cosine similarity of two vectors, in f64.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Block scales of the random weights: like real Bonsai weights.
const WEIGHT_SCALES: std::ops::Range<f32> = 0.005..0.05;

/// Names the adapter every kernel test below runs on. In the browser it must be WebGPU: a test
/// run that fell back to anything else would prove nothing about the browser build.
#[gpu_test]
async fn adapter_under_test() {
    let ctx = ctx().await;
    let f = &ctx.features;
    note!(
        "adapter: {} ({:?}); subgroups {}, shader-f16 {}, timestamps {}, max binding {} MiB",
        ctx.info.name,
        ctx.info.backend,
        f.has_subgroups,
        f.has_f16,
        f.has_timestamps,
        ctx.max_binding_bytes() >> 20
    );
    #[cfg(target_arch = "wasm32")]
    assert_eq!(ctx.info.backend, wgpu::Backend::BrowserWebGpu);
}

#[gpu_test]
async fn repack_q1_0_matches_gguf_blocks() {
    let mut rng = StdRng::seed_from_u64(1);
    let (k, n) = (384, 5); // 3 blocks per row, 15 in all: odd count pads the last scale word
    let bytes = random_q1_0(&mut rng, k, n, WEIGHT_SCALES);
    let (signs, scales) = repack_q1_0(&bytes, k, n).unwrap();
    assert_eq!(signs.len(), n * k / 32);
    assert_eq!(scales.len(), (n * k / 128).div_ceil(2));
    for r in 0..n {
        for j in 0..k {
            let blk = (r * k + j) / 128;
            let block = &bytes[blk * 18..blk * 18 + 18];
            let d_bits = u16::from_le_bytes([block[0], block[1]]);
            let bit = (block[2 + (j % 128) / 8] >> (j % 8)) & 1;
            let word = signs[r * k / 32 + j / 32];
            assert_eq!(
                (word >> (j % 32)) & 1,
                bit as u32,
                "sign of row {r} weight {j}"
            );
            let half = (scales[blk / 2] >> (16 * (blk % 2))) as u16;
            assert_eq!(half, d_bits, "scale of block {blk}");
        }
    }
    assert!(repack_q1_0(&bytes[1..], k, n).is_err());
    assert!(repack_q1_0(&bytes, 100, n).is_err());
}

/// The CPU reference: `y0 (+)= W x`, or `W x` when not accumulating.
fn cpu_matvec(
    bytes: &[u8],
    k: usize,
    n: usize,
    x: &[f32],
    y0: &[f32],
    accumulate: bool,
) -> Vec<f32> {
    cpu_matvec_path(KernelPath::F32, bytes, k, n, x, y0, accumulate)
}

/// [`cpu_matvec`] in `path`'s arithmetic: f32, or the q8 path's (`Matrix::matvec_q8`).
fn cpu_matvec_path(
    path: KernelPath,
    bytes: &[u8],
    k: usize,
    n: usize,
    x: &[f32],
    y0: &[f32],
    accumulate: bool,
) -> Vec<f32> {
    let mut y = vec![0.0; n];
    let m = Matrix::new(GgmlType::Q1_0, bytes.to_vec(), k, n).unwrap();
    match path {
        KernelPath::Q8 => m.matvec_q8(&mut y, x),
        _ => m.matvec(&mut y, x),
    }
    if accumulate {
        y.iter_mut().zip(y0).for_each(|(y, y0)| *y += y0);
    }
    y
}

/// Runs one matvec on the GPU: y (starting from `y0`) (=|+=) W x.
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
    let t = now_ms();
    submit_kernels(ctx, "matvec", &kernels);
    let out = read_buffer::<f32>(ctx, &yb, 0, y0.len()).await.unwrap();
    note!(
        "matvec {}x{} {:?}: {:.1} ms",
        w.n,
        w.k,
        opts.reduce,
        now_ms() - t
    );
    out
}

async fn check_matvec(k: usize, n: usize, reduce: Reduce, accumulate: bool, seed: u64) {
    check_matvec_path(KernelPath::F32, k, n, reduce, accumulate, seed).await;
}

/// The kernel-vs-reference tolerance of `path` (against the reference in its own arithmetic).
fn path_tol(path: KernelPath) -> f32 {
    match path {
        KernelPath::F16 => F16_TOL,
        _ => MATVEC_TOL.max(Q8_TOL),
    }
}

/// One random matvec on `path` against that path's CPU reference (and, for q8, the f32 one).
async fn check_matvec_path(
    path: KernelPath,
    k: usize,
    n: usize,
    reduce: Reduce,
    accumulate: bool,
    seed: u64,
) {
    let ctx = ctx().await;
    if reduce == Reduce::Subgroup && !ctx.features.has_subgroups {
        note!("skip: {} has no subgroups", ctx.info.name);
        return;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let bytes = random_q1_0(&mut rng, k, n, WEIGHT_SCALES);
    let x = random_f32(&mut rng, k, 1.0);
    let y0 = if accumulate {
        random_f32(&mut rng, n, 1.0)
    } else {
        vec![0.0; n]
    };
    let w = Q1_0Weight::upload(&ctx, "w", &bytes, k, n).unwrap();
    let opts = MatvecOptions {
        accumulate,
        reduce,
        path: Some(path),
        ..Default::default()
    };
    let got = gpu_matvec(&ctx, &w, &x, &y0, opts).await;
    let want = cpu_matvec_path(path, &bytes, k, n, &x, &y0, accumulate);
    let what = format!("matvec {k}x{n} {reduce:?} {path} acc={accumulate}");
    assert_close(&what, &got, &want, path_tol(path));
    if path == KernelPath::F16 {
        let cos = cosine(&got, &want);
        note!("{what}: cosine {cos:.7} with f32");
        assert!(cos >= Q8_COSINE_MIN, "{what}: cosine {cos} with f32");
    }
    if path == KernelPath::Q8 {
        let cos = cosine(&got, &want);
        let f32_want = cpu_matvec(&bytes, k, n, &x, &y0, accumulate);
        let cos_f32 = cosine(&got, &f32_want);
        note!("{what}: cosine {cos:.7} with its reference, {cos_f32:.7} with f32");
        assert!(
            cos >= Q8_COSINE_MIN,
            "{what}: cosine {cos} with the q8 reference"
        );
        assert!(
            cos_f32 >= Q8_COSINE_MIN,
            "{what}: cosine {cos_f32} with f32"
        );
    }
}

/// The f16-pair path at the q8 test's shapes.
#[gpu_test]
async fn matvec_q1_0_f16_shapes() {
    check_path_shapes(KernelPath::F16, 50).await;
}

/// The q8 path at small, Bonsai (1.7B ffn_up) and long (8B ffn_down: three staged chunks) rows,
/// both reductions, accumulating too.
#[gpu_test]
async fn matvec_q1_0_q8_shapes() {
    check_path_shapes(KernelPath::Q8, 40).await;
}

/// `path` at 256x100, 2048x6144, 12288x256 and 768x256 accumulating, with the shared reduction
/// and (natively) the subgroup one; seeds `seed..seed + 8`.
async fn check_path_shapes(path: KernelPath, seed: u64) {
    let shapes = [
        (256, 100, false),
        (2048, 6144, false),
        (12288, 256, false),
        (768, 256, true),
    ];
    // wgpu 30's WebGPU backend maps no subgroups feature.
    let reductions: &[Reduce] = match cfg!(target_arch = "wasm32") {
        true => &[Reduce::Shared],
        false => &[Reduce::Shared, Reduce::Subgroup],
    };
    for (r, &reduce) in reductions.iter().enumerate() {
        for (i, &(k, n, accumulate)) in shapes.iter().enumerate() {
            let seed = seed + (4 * r + i) as u64;
            check_matvec_path(path, k, n, reduce, accumulate, seed).await;
        }
    }
}

#[gpu_test]
async fn matvec_q1_0_shared_small() {
    check_matvec(256, 100, Reduce::Shared, false, 2).await;
}

#[gpu_test]
#[cfg_attr(
    target_arch = "wasm32",
    ignore = "wgpu 30's WebGPU backend maps no subgroups feature"
)]
async fn matvec_q1_0_subgroup_small() {
    check_matvec(256, 100, Reduce::Subgroup, false, 3).await;
}

#[gpu_test]
async fn matvec_q1_0_shared_2048x6144() {
    check_matvec(2048, 6144, Reduce::Shared, false, 4).await;
}

#[gpu_test]
#[cfg_attr(
    target_arch = "wasm32",
    ignore = "wgpu 30's WebGPU backend maps no subgroups feature"
)]
async fn matvec_q1_0_subgroup_2048x6144() {
    check_matvec(2048, 6144, Reduce::Subgroup, false, 5).await;
}

#[gpu_test]
async fn matvec_q1_0_k12288_both_reductions() {
    check_matvec(12288, 512, Reduce::Shared, false, 6).await;
    check_matvec(12288, 512, Reduce::Subgroup, false, 7).await;
}

#[gpu_test]
async fn matvec_q1_0_accumulate_residual() {
    check_matvec(768, 256, Reduce::Shared, true, 8).await;
    check_matvec(768, 256, Reduce::Subgroup, true, 9).await;
}

/// Plans the subgroup kernel for subgroup sizes 4..128 (whatever the adapter's real size), so
/// most workgroup rounds find no row group: the guards must keep them from writing.
#[gpu_test]
#[cfg_attr(
    target_arch = "wasm32",
    ignore = "wgpu 30's WebGPU backend maps no subgroups feature"
)]
async fn matvec_q1_0_subgroup_planned_for_any_size() {
    let ctx = ctx().await;
    if !ctx.features.has_subgroups {
        note!("skip: {} has no subgroups", ctx.info.name);
        return;
    }
    let mut rng = StdRng::seed_from_u64(11);
    let (k, n) = (640, 1234);
    let bytes = random_q1_0(&mut rng, k, n, WEIGHT_SCALES);
    let x = random_f32(&mut rng, k, 1.0);
    let w = Q1_0Weight::upload(&ctx, "w", &bytes, k, n).unwrap();
    let opts = MatvecOptions {
        reduce: Reduce::Subgroup,
        subgroup_sizes: Some((4, 128)),
        ..Default::default()
    };
    let got = gpu_matvec(&ctx, &w, &x, &vec![SENTINEL; n], opts).await;
    let want = cpu_matvec(&bytes, k, n, &x, &[], false);
    assert_close(
        "matvec planned for subgroups 4..128",
        &got,
        &want,
        MATVEC_TOL,
    );
}

/// The subgroup kernel at every workgroup size a GPU may get (64 and 128 threads for small
/// projections), for every path, on rows of fewer words than the subgroup (slots of 2 or 4
/// lanes where the adapter has one subgroup size, as lavapipe's 8) and of many.
#[gpu_test]
#[cfg_attr(
    target_arch = "wasm32",
    ignore = "wgpu 30's WebGPU backend maps no subgroups feature"
)]
async fn matvec_q1_0_subgroup_workgroup_sizes_and_slots() {
    let ctx = ctx().await;
    if !ctx.features.has_subgroups {
        note!("skip: {} has no subgroups", ctx.info.name);
        return;
    }
    let mut rng = StdRng::seed_from_u64(12);
    // f32 words are 32 weights, q8 / f16 words 128: k 128 is 4 and 1 words, 256 is 8 and 2.
    for (k, n) in [(128, 300), (256, 100), (2048, 1000)] {
        let bytes = random_q1_0(&mut rng, k, n, WEIGHT_SCALES);
        let x = random_f32(&mut rng, k, 1.0);
        let y0 = random_f32(&mut rng, n, 1.0);
        let w = Q1_0Weight::upload(&ctx, "w", &bytes, k, n).unwrap();
        for path in [KernelPath::F32, KernelPath::Q8, KernelPath::F16] {
            let want = cpu_matvec_path(path, &bytes, k, n, &x, &y0, true);
            for threads in SUBGROUP_WORKGROUP_SIZES {
                if threads < ctx.info.subgroup_max_size {
                    continue;
                }
                let opts = MatvecOptions {
                    accumulate: true,
                    reduce: Reduce::Subgroup,
                    workgroup_size: Some(threads),
                    path: Some(path),
                    ..Default::default()
                };
                let got = gpu_matvec(&ctx, &w, &x, &y0, opts).await;
                let what = format!("matvec {k}x{n} {path} in workgroups of {threads}");
                assert_close(&what, &got, &want, path_tol(path));
            }
        }
    }
    // A size that is not one of them is an error, not a dispatch.
    let bytes = random_q1_0(&mut rng, 128, 4, WEIGHT_SCALES);
    let w = Q1_0Weight::upload(&ctx, "w", &bytes, 128, 4).unwrap();
    let (xb, yb) = (
        storage_buffer(&ctx, "x", 512).unwrap(),
        storage_buffer(&ctx, "y", 16).unwrap(),
    );
    let b = MatvecQ1_0Bindings {
        w: &w,
        x: &xb,
        y: &yb,
        opts: MatvecOptions {
            reduce: Reduce::Subgroup,
            workgroup_size: Some(96),
            ..Default::default()
        },
    };
    let err = MatvecQ1_0::new(&ctx, &PipelineCache::new(), &b).unwrap_err();
    assert!(err.to_string().contains("workgroup size 96"), "{err}");
}

/// Splits the weight into parts (small binding limit) and the dispatch over x and y (small
/// per-dimension cap): the paths the 8B head and the 151,669-row vocab need.
#[gpu_test]
async fn matvec_q1_0_split_parts_and_dispatch() {
    let ctx = ctx().await;
    let mut rng = StdRng::seed_from_u64(10);
    let (k, n) = (512, 1001);
    let bytes = random_q1_0(&mut rng, k, n, WEIGHT_SCALES);
    let x = random_f32(&mut rng, k, 1.0);
    // 64 bytes of signs per row: 4 KiB -> 64 rows per part, 16 parts (last one short).
    let w = Q1_0Weight::upload_with_limit(&ctx, "w", &bytes, k, n, 4096).unwrap();
    assert_eq!(w.parts.len(), 16);
    assert_eq!(w.parts.iter().map(|p| p.n_rows).sum::<usize>(), n);
    for path in [KernelPath::F32, KernelPath::Q8] {
        let want = cpu_matvec_path(path, &bytes, k, n, &x, &[], false);
        for reduce in [Reduce::Shared, Reduce::Subgroup] {
            if reduce == Reduce::Subgroup && !ctx.features.has_subgroups {
                continue;
            }
            let opts = MatvecOptions {
                reduce,
                max_groups_per_dim: 3,
                path: Some(path),
                ..Default::default()
            };
            let got = gpu_matvec(&ctx, &w, &x, &vec![SENTINEL; n], opts).await;
            let what = format!("split matvec {reduce:?} {path}");
            assert_close(&what, &got, &want, MATVEC_TOL);
        }
    }
}

async fn read_f32(ctx: &GpuContext, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
    read_buffer::<f32>(ctx, b, 0, n).await.unwrap()
}

#[gpu_test]
async fn embed_q1_0_gathers_rows_across_parts() {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(20);
    let (k, n_vocab) = (256, 300);
    let bytes = random_q1_0(&mut rng, k, n_vocab, WEIGHT_SCALES);
    // 32 bytes of signs per row, 1 KiB parts: 32 rows each, 10 parts.
    let table =
        Q1_0Weight::upload_with_limit(&ctx, "token_embd", &bytes, k, n_vocab, 1024).unwrap();
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
    submit_kernels(&ctx, "embed", &kernels);
    let got = read_f32(&ctx, &xb, k * tokens.len()).await;
    let mut want = vec![0.0; k * tokens.len()];
    let cpu_table = Matrix::new(GgmlType::Q1_0, bytes, k, n_vocab).unwrap();
    for (t, &tok) in tokens.iter().enumerate() {
        cpu_table.embed(tok as usize, &mut want[t * k..(t + 1) * k]);
    }
    assert_close("embed", &got, &want, EMBED_TOL);
}

#[gpu_test]
async fn rmsnorm_vector_batch_and_inplace() {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(21);
    let eps = 1e-6;
    for (n, rows) in [(2048usize, 1usize), (256, 7), (128, 16)] {
        let x: Vec<f32> = random_f32(&mut rng, n * rows, 1.0)
            .iter()
            .map(|v| v * 3.0)
            .collect();
        let w = random_f32(&mut rng, n, 1.0);
        let mut want = vec![0.0; n * rows];
        cpu::rmsnorm(&mut want, &x, &w, eps);
        let wb = storage_buffer_init(&ctx, "w", &w).unwrap();
        let xb = storage_buffer_init(&ctx, "x", &x).unwrap();
        let yb = storage_buffer(&ctx, "y", (4 * n * rows) as u64).unwrap();
        let b = RmsnormBindings {
            w: &wb,
            x: Some(&xb),
            y: &yb,
            n: n as u32,
            n_rows: rows as u32,
            eps,
        };
        let op = Rmsnorm::new(&ctx, &cache, &b).unwrap();
        let b = RmsnormBindings {
            x: None,
            y: &xb,
            ..b
        };
        let inplace = Rmsnorm::new(&ctx, &cache, &b).unwrap();
        submit_kernels(&ctx, "rmsnorm", &[&op.kernel, &inplace.kernel]);
        assert_close(
            &format!("rmsnorm {rows}x{n}"),
            &read_f32(&ctx, &yb, n * rows).await,
            &want,
            RMSNORM_TOL,
        );
        assert_close(
            &format!("rmsnorm in place {rows}x{n}"),
            &read_f32(&ctx, &xb, n * rows).await,
            &want,
            RMSNORM_TOL,
        );
    }
}

#[gpu_test]
async fn silu_mul_elementwise() {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(22);
    let n = 6144 * 3 + 5; // a batch of 3 rows of n_ff plus a ragged tail
    let gate: Vec<f32> = random_f32(&mut rng, n, 1.0)
        .iter()
        .map(|v| v * 12.0)
        .collect();
    let up = random_f32(&mut rng, n, 1.0);
    let hb = storage_buffer_init(&ctx, "hb", &gate).unwrap();
    let hb2 = storage_buffer_init(&ctx, "hb2", &up).unwrap();
    let b = SiluMulBindings {
        hb: &hb,
        hb2: &hb2,
        n: n as u32,
        max_tokens: 1,
    };
    let silu = SiluMul::new(&ctx, &cache, &b).unwrap();
    submit_kernels(&ctx, "elementwise", &[&silu.kernel]);
    let mut want = gate.clone();
    cpu::silu_mul(&mut want, &up);
    assert_close("silu_mul", &read_f32(&ctx, &hb, n).await, &want, SILU_TOL);
}

async fn gpu_argmax(ctx: &GpuContext, logits: &[f32]) -> u32 {
    let cache = PipelineCache::new();
    let lb = storage_buffer_init(ctx, "logits", logits).unwrap();
    let b = ArgmaxBindings {
        logits: &lb,
        n: logits.len() as u32,
        out: None,
    };
    let op = Argmax::new(ctx, &cache, &b).unwrap();
    let stage1 = op.stage1.as_ref().expect("stage 1");
    submit_kernels(ctx, "argmax", &[stage1, &op.stage2]);
    read_buffer::<u32>(ctx, &op.result, 0, 1).await.unwrap()[0]
}

#[gpu_test]
async fn argmax_vocab_sized_with_ties() {
    let ctx = ctx().await;
    let mut rng = StdRng::seed_from_u64(23);
    let n = 151_669;
    let mut logits: Vec<f32> = random_f32(&mut rng, n, 1.0)
        .iter()
        .map(|v| v * 20.0)
        .collect();
    let t = now_ms();
    assert_eq!(gpu_argmax(&ctx, &logits).await, cpu::argmax(&logits));
    note!("argmax over {n}: {:.1} ms", now_ms() - t);
    // Ties across workgroups and within one: the lowest index wins.
    for &i in &[151_668usize, 99_999, 2_047, 2_049, 5] {
        logits[i] = 100.0;
    }
    assert_eq!(cpu::argmax(&logits), 5);
    assert_eq!(gpu_argmax(&ctx, &logits).await, 5);
    logits[5] = 99.0;
    assert_eq!(gpu_argmax(&ctx, &logits).await, 2_047);
    // Small inputs: one workgroup in stage 1.
    assert_eq!(gpu_argmax(&ctx, &[1.0, 3.0, 3.0, -2.0]).await, 1);
    assert_eq!(gpu_argmax(&ctx, &[-7.0]).await, 0);
}

/// The references' rules for non-finite logits. GPUs are not held to them: WGSL lets
/// implementations assume floats are finite (Metal fast math does), so GPU tests use finite data.
#[gpu_test]
async fn argmax_topk_reference_rules_for_non_finite() {
    let logits = [1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3.0];
    assert_eq!(cpu::argmax(&logits), 2);
    assert_eq!(cpu::argmax(&[f32::NEG_INFINITY, f32::NAN]), u32::MAX);
    let want = vec![
        (f32::INFINITY, 2),
        (3.0, 4),
        (1.0, 0),
        (-f32::MAX, u32::MAX),
    ];
    assert_eq!(cpu::top_k(&logits, 4), want);
}

/// The repacked layout, expanded on the CPU, equals quant.rs's dequantizer (an independent
/// implementation) on every weight of a real tensor.
#[gpu_test]
async fn repacked_layout_dequantizes_like_quant_rs() {
    let gguf = common::tiny_model();
    let name = "blk.0.ffn_down.weight";
    let info = gguf.tensor_info(name).unwrap();
    let (k, n) = (info.dims[0] as usize, info.dims[1] as usize);
    let bytes = gguf.tensor_data(name).unwrap();
    let (signs, scales) = repack_q1_0(bytes, k, n).unwrap();
    let mut want = vec![0.0f32; k * n];
    bonsai_wgpu::quant::q1_0::dequantize_row_q1_0(bytes, &mut want);
    for (i, w) in want.iter().enumerate() {
        let half = (scales[i / 256] >> (16 * ((i / 128) % 2))) as u16;
        let d = half::f16::from_bits(half).to_f32();
        let bit = (signs[i / 32] >> (i % 32)) & 1;
        let got = if bit == 1 { d } else { -d };
        assert_eq!(got, *w, "{name} weight {i} (row {}, col {})", i / k, i % k);
    }
}

/// The tied head of the fixture (token_embd, 151,669 x 256) as a matvec, then argmax, and the
/// embedding of a few real tokens: real vocab-sized shapes, checked against quant.rs.
#[gpu_test]
async fn fixture_head_matvec_argmax_and_embedding() {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let gguf = common::tiny_model();
    let info = gguf.tensor_info("token_embd.weight").unwrap();
    let (k, n) = (info.dims[0] as usize, info.dims[1] as usize);
    assert_eq!((k, n), (256, 151_669));
    let bytes = gguf.tensor_data("token_embd.weight").unwrap();
    let table = Q1_0Weight::upload(&ctx, "token_embd", bytes, k, n).unwrap();
    assert_eq!(table.gpu_bytes(), bytes.len() as u64);

    let mut rng = StdRng::seed_from_u64(30);
    let x = random_f32(&mut rng, k, 1.0);
    let row_bytes = k / 128 * 18;
    let want: Vec<f32> = (0..n)
        .map(|r| {
            bonsai_wgpu::quant::q1_0::dot_q1_0_f32(&bytes[r * row_bytes..(r + 1) * row_bytes], &x)
        })
        .collect();
    for reduce in [Reduce::Shared, Reduce::Subgroup] {
        if reduce == Reduce::Subgroup && !ctx.features.has_subgroups {
            continue;
        }
        let xb = storage_buffer_init(&ctx, "x", &x).unwrap();
        let logits = storage_buffer(&ctx, "logits", 4 * n as u64).unwrap();
        let opts = MatvecOptions {
            reduce,
            ..Default::default()
        };
        let b = MatvecQ1_0Bindings {
            w: &table,
            x: &xb,
            y: &logits,
            opts,
        };
        let head = MatvecQ1_0::new(&ctx, &cache, &b).unwrap();
        let b = ArgmaxBindings {
            logits: &logits,
            n: n as u32,
            out: None,
        };
        let am = Argmax::new(&ctx, &cache, &b).unwrap();
        let mut kernels: Vec<_> = head.kernels.iter().collect();
        kernels.extend([am.stage1.as_ref().expect("stage 1"), &am.stage2]);
        let t = now_ms();
        submit_kernels(&ctx, "head", &kernels);
        let got_idx = read_buffer::<u32>(&ctx, &am.result, 0, 1).await.unwrap()[0];
        note!("head {n}x{k} + argmax {reduce:?}: {:.1} ms", now_ms() - t);
        let got = read_f32(&ctx, &logits, n).await;
        assert_close(&format!("head {reduce:?}"), &got, &want, MATVEC_TOL);
        assert_eq!(got_idx, cpu::argmax(&got), "argmax of the GPU logits");
    }

    let tokens: Vec<u32> = vec![151_645, 0, 9_707];
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
    submit_kernels(&ctx, "embed", &kernels);
    let got = read_f32(&ctx, &xb, k * tokens.len()).await;
    let mut want = vec![0.0; k * tokens.len()];
    for (t, &tok) in tokens.iter().enumerate() {
        let r = tok as usize;
        bonsai_wgpu::quant::q1_0::dequantize_row_q1_0(
            &bytes[r * row_bytes..(r + 1) * row_bytes],
            &mut want[t * k..(t + 1) * k],
        );
    }
    assert_close("embed fixture", &got, &want, EMBED_TOL);
}

async fn gpu_topk(ctx: &GpuContext, logits: &[f32], k: u32) -> Vec<(f32, u32)> {
    let cache = PipelineCache::new();
    let lb = storage_buffer_init(ctx, "logits", logits).unwrap();
    let b = TopKBindings {
        logits: &lb,
        n: logits.len() as u32,
        k,
    };
    let op = TopK::new(ctx, &cache, &b).unwrap();
    let kernels: Vec<_> = op.stages.iter().collect();
    submit_kernels(ctx, "topk", &kernels);
    let (vb, ib) = op.result();
    let vals = read_buffer::<f32>(ctx, vb, 0, k as usize).await.unwrap();
    let idx = read_buffer::<u32>(ctx, ib, 0, k as usize).await.unwrap();
    vals.into_iter().zip(idx).collect()
}

#[gpu_test]
async fn topk_vocab_sized_with_ties_and_padding() {
    let ctx = ctx().await;
    let mut rng = StdRng::seed_from_u64(24);
    let n = 151_669;
    // Coarse values make many ties, across and within workgroups.
    let mut logits: Vec<f32> = (0..n)
        .map(|_| (rng.random_range(0..2000) as f32) * 0.01)
        .collect();
    logits[77] = 1e30;
    logits[78] = -1e30;
    for k in [64u32, 40, 1] {
        let t = now_ms();
        let got = gpu_topk(&ctx, &logits, k).await;
        note!("topk {k} over {n}: {:.1} ms", now_ms() - t);
        assert_eq!(got, cpu::top_k(&logits, k as usize), "top-{k}");
    }
    // Fewer candidates than k: padded.
    let small = [0.5f32, -3.0, 2.0, 0.5];
    let got = gpu_topk(&ctx, &small, 6).await;
    assert_eq!(got, cpu::top_k(&small, 6));
    assert_eq!(got[..4], [(2.0, 2), (0.5, 0), (0.5, 3), (-3.0, 1)]);
    assert_eq!(got[4..], [(-f32::MAX, u32::MAX); 2]);
}

/// Timestamp queries around passes give positive, plausible durations.
#[gpu_test]
async fn pass_timer_times_matvec_passes() {
    let ctx = ctx().await;
    let Some(mut timer) = bonsai_wgpu::gpu::timer::PassTimer::new(&ctx, 4) else {
        note!("skip: {} has no timestamp queries", ctx.info.name);
        return;
    };
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(40);
    let (k, n) = (2048, 2048);
    let w =
        Q1_0Weight::upload(&ctx, "w", &random_q1_0(&mut rng, k, n, WEIGHT_SCALES), k, n).unwrap();
    let xb = storage_buffer_init(&ctx, "x", &random_f32(&mut rng, k, 1.0)).unwrap();
    let yb = storage_buffer(&ctx, "y", 4 * n as u64).unwrap();
    let b = MatvecQ1_0Bindings {
        w: &w,
        x: &xb,
        y: &yb,
        opts: MatvecOptions::default(),
    };
    let op = MatvecQ1_0::new(&ctx, &cache, &b).unwrap();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    for label in ["matvec 1", "matvec 2"] {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: timer.pass(label),
        });
        op.encode(&mut pass, &StepParams::new(0, 1));
    }
    timer.resolve(&mut encoder);
    let t = now_ms();
    ctx.queue.submit([encoder.finish()]);
    let times = timer.read(&ctx).await.unwrap();
    let wall_ms = now_ms() - t;
    note!("pass times {times:?}, wall {wall_ms:.3} ms");
    assert_eq!(times.len(), 2);
    for (label, ms) in &times {
        assert!(
            ms.is_finite() && *ms > 0.0 && *ms <= wall_ms + 1.0,
            "{label}: {ms} ms"
        );
    }
}

/// Ops built for a maximum batch, encoded for a shorter one: the first rows are computed, the
/// rest untouched (no new bind groups per batch size).
#[gpu_test]
async fn batched_ops_encode_shorter_batches() {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(50);
    let (n, max_rows, rows) = (256usize, 8usize, 3usize);
    let x = random_f32(&mut rng, n * max_rows, 1.0);
    let w = random_f32(&mut rng, n, 1.0);
    let up = random_f32(&mut rng, n * max_rows, 1.0);
    let xb = storage_buffer_init(&ctx, "x", &x).unwrap();
    let wb = storage_buffer_init(&ctx, "w", &w).unwrap();
    let yb = storage_buffer_init(&ctx, "y", &vec![SENTINEL; n * max_rows]).unwrap();
    let hb = storage_buffer_init(&ctx, "hb", &x).unwrap();
    let hb2 = storage_buffer_init(&ctx, "hb2", &up).unwrap();
    let (n32, max32) = (n as u32, max_rows as u32);
    let b = RmsnormBindings {
        w: &wb,
        x: Some(&xb),
        y: &yb,
        n: n32,
        n_rows: max32,
        eps: 1e-6,
    };
    let norm = Rmsnorm::new(&ctx, &cache, &b).unwrap();
    let b = SiluMulBindings {
        hb: &hb,
        hb2: &hb2,
        n: n32,
        max_tokens: max32,
    };
    let silu = SiluMul::new(&ctx, &cache, &b).unwrap();

    let mut bytes_rng = StdRng::seed_from_u64(51);
    let (k, vocab) = (128, 40);
    let table_bytes = random_q1_0(&mut bytes_rng, k, vocab, WEIGHT_SCALES);
    let table = Q1_0Weight::upload(&ctx, "embd", &table_bytes, k, vocab).unwrap();
    let tokens: Vec<u32> = (0..max_rows as u32).map(|t| 3 * t + 1).collect();
    let tb = storage_buffer_init(&ctx, "tokens", &tokens).unwrap();
    let eb = storage_buffer_init(&ctx, "e", &vec![SENTINEL; k * max_rows]).unwrap();
    let b = EmbedQ1_0Bindings {
        table: &table,
        tokens: &tb,
        x: &eb,
        max_tokens: max32,
    };
    let embed = EmbedQ1_0::new(&ctx, &cache, &b).unwrap();

    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        let step = StepParams::new(0, rows);
        norm.encode(&mut pass, &step);
        silu.encode(&mut pass, &step);
        embed.encode(&mut pass, &step);
    }
    ctx.queue.submit([encoder.finish()]);

    let split = n * rows;
    let mut want = vec![0.0; split];
    cpu::rmsnorm(&mut want, &x[..split], &w, 1e-6);
    let got = read_f32(&ctx, &yb, n * max_rows).await;
    assert_close("rmsnorm first rows", &got[..split], &want, RMSNORM_TOL);
    assert!(
        got[split..].iter().all(|v| *v == SENTINEL),
        "rmsnorm wrote past row {rows}"
    );

    let mut want = x[..split].to_vec();
    cpu::silu_mul(&mut want, &up[..split]);
    let got = read_f32(&ctx, &hb, n * max_rows).await;
    assert_close("silu_mul first rows", &got[..split], &want, SILU_TOL);
    assert_eq!(got[split..], x[split..], "silu_mul wrote past row {rows}");

    let got = read_f32(&ctx, &eb, k * max_rows).await;
    let cpu_table = Matrix::new(GgmlType::Q1_0, table_bytes, k, vocab).unwrap();
    for (t, &tok) in tokens.iter().enumerate().take(rows) {
        let mut want = vec![0.0; k];
        cpu_table.embed(tok as usize, &mut want);
        assert_close(
            "embed first tokens",
            &got[t * k..(t + 1) * k],
            &want,
            EMBED_TOL,
        );
    }
    assert!(
        got[k * rows..].iter().all(|v| *v == SENTINEL),
        "embed wrote past token {rows}"
    );
}

/// The fused decode plan's matvec options (`shaders/lib/matvec_common.wgsl`) against the
/// unfused CPU references they replace, with either reduction: the RMSNorm folded in (rms of
/// the residual over an x * g input) with `silu(gate) * up` as the epilogue of a [gate; up]
/// weight, a row view of it with the gain on its loads and argmax stage 1 in its epilogue, and
/// the attention merge (several chunks: the table) in the input with the norm_out epilogue.
async fn check_fused_matvec(reduce: Reduce, path: KernelPath) {
    let ctx = ctx().await;
    if reduce == Reduce::Subgroup && !ctx.features.has_subgroups {
        note!("skip: {} has no subgroups", ctx.info.name);
        return;
    }
    let cache = PipelineCache::new();
    let opts = MatvecOptions {
        reduce,
        path: Some(path),
        ..Default::default()
    };
    let cpu_matvec =
        |b: &[u8], k, n, x: &[f32], y0: &[f32], acc| cpu_matvec_path(path, b, k, n, x, y0, acc);
    // The kernels quantize r * g (RMS) or x * g (GAIN) where the reference takes the normed
    // input: a few roundings can differ on the q8 path.
    let (tol, merge_tol) = match path {
        KernelPath::Q8 => (Q8_FUSED_TOL, Q8_FUSED_TOL),
        KernelPath::F16 => (F16_TOL, F16_TOL),
        _ => (MATVEC_TOL, 1e-4),
    };
    let (k, n_ff, eps) = (256usize, 96usize, 1e-6f32);
    let mut rng = StdRng::seed_from_u64(77);
    let gate = random_q1_0(&mut rng, k, n_ff, WEIGHT_SCALES);
    let up = random_q1_0(&mut rng, k, n_ff, WEIGHT_SCALES);
    let x = random_f32(&mut rng, k, 1.0);
    let g: Vec<f32> = (0..k).map(|_| rng.random_range(0.5..1.5)).collect();

    // CPU: xn = rmsnorm(x) * g; hb = silu(Wgate xn) * (Wup xn); argmax of Wgate xn.
    let mut xn = vec![0.0; k];
    cpu::rmsnorm(&mut xn, &x, &g, eps);
    let gate_y = cpu_matvec(&gate, k, n_ff, &xn, &[], false);
    let up_y = cpu_matvec(&up, k, n_ff, &xn, &[], false);
    let want_hb: Vec<f32> = gate_y
        .iter()
        .zip(&up_y)
        .map(|(&a, &b)| cpu::silu(a) * b)
        .collect();

    let wg = Q1_0Weight::upload(&ctx, "gate", &gate, k, n_ff).unwrap();
    let wu = Q1_0Weight::upload(&ctx, "up", &up, k, n_ff).unwrap();
    let joined = Q1_0Weight::concat(&ctx, "gate_up", &[&wg, &wu])
        .unwrap()
        .expect("joinable");
    let xb = storage_buffer_init(&ctx, "x", &x).unwrap();
    let gb = storage_buffer_init(&ctx, "g", &g).unwrap();
    let hb = storage_buffer_init(&ctx, "hb", &vec![SENTINEL; n_ff]).unwrap();
    // The rms option reads x * g and x's sums of squares in groups of 4 (what a norm_out
    // epilogue writes) and takes the RMS of x from them.
    let xg: Vec<f32> = x.iter().zip(&g).map(|(a, b)| a * b).collect();
    let xgb = storage_buffer_init(&ctx, "x * g", &xg).unwrap();
    let ssb = storage_buffer_init(&ctx, "x sumsq", &sums_of_squares(&x)).unwrap();
    let glu = MatvecQ1_0::fused(
        &ctx,
        &cache,
        &MatvecQ1_0Bindings {
            w: &joined,
            x: &xgb,
            y: &hb,
            opts,
        },
        &Fusion {
            rms: Some((&ssb, eps)),
            glu: true,
            ..Fusion::default()
        },
    )
    .unwrap();
    // A row view of the joined weight (gate), with argmax stage 1 and stage 2 over its partials.
    let gate_view = joined.view("gate view", 0, n_ff).unwrap();
    let yb = storage_buffer_init(&ctx, "y", &vec![SENTINEL; n_ff]).unwrap();
    let n_partials = MatvecQ1_0::argmax_partials(&gate_view);
    let argmax = Argmax::over_partials(&ctx, &cache, n_partials, None).unwrap();
    let head = MatvecQ1_0::fused(
        &ctx,
        &cache,
        &MatvecQ1_0Bindings {
            w: &gate_view,
            x: &xb,
            y: &yb,
            opts,
        },
        &Fusion {
            gain: Some(&gb),
            argmax: Some((&argmax.partial_val, &argmax.partial_idx)),
            ..Fusion::default()
        },
    )
    .unwrap();
    let step = StepParams::default();
    let ops: Vec<&dyn Op> = vec![&glu, &head, &argmax];
    bonsai_wgpu::gpu::kernel::submit(&ctx, "fused matvecs", &ops, &step);
    let got_hb = read_f32(&ctx, &hb, n_ff).await;
    assert_close(
        &format!("norm + silu(gate) * up {reduce:?} {path}"),
        &got_hb,
        &want_hb,
        tol,
    );
    let got_y = read_f32(&ctx, &yb, n_ff).await;
    let want_y = cpu_matvec(&gate, k, n_ff, &xg, &[], false);
    assert_close(
        &format!("gain + gate view {reduce:?} {path}"),
        &got_y,
        &want_y,
        tol,
    );
    let got_idx = read_buffer::<u32>(&ctx, &argmax.result, 0, 1)
        .await
        .unwrap()[0];
    assert_eq!(
        got_idx,
        cpu::argmax(&got_y),
        "argmax folded into the matvec {reduce:?}"
    );

    // Merge: 2 heads of 64, 3 live chunks of 16 positions out of 4: x = sum_c w_c o_c.
    let (head_dim, n_head, chunk, max_chunks, live) = (64usize, 2usize, 16usize, 4usize, 3usize);
    let kq = n_head * head_dim;
    let wo = random_q1_0(&mut rng, kq, 8, WEIGHT_SCALES);
    let part_o = random_f32(&mut rng, n_head * max_chunks * head_dim, 1.0);
    let part_ml: Vec<f32> = (0..n_head * max_chunks)
        .flat_map(|_| [rng.random_range(-3.0..3.0), rng.random_range(0.5..4.0)])
        .collect();
    let mut merged = vec![0.0; kq];
    for h in 0..n_head {
        let ml = |c: usize| {
            (
                part_ml[2 * (h * max_chunks + c)],
                part_ml[2 * (h * max_chunks + c) + 1],
            )
        };
        let m = (0..live).map(|c| ml(c).0).fold(f32::MIN, f32::max);
        let l: f32 = (0..live).map(|c| (ml(c).0 - m).exp() * ml(c).1).sum();
        for d in 0..head_dim {
            merged[h * head_dim + d] = (0..live)
                .map(|c| (ml(c).0 - m).exp() * part_o[(h * max_chunks + c) * head_dim + d])
                .sum::<f32>()
                / l;
        }
    }
    let y0 = random_f32(&mut rng, 8, 1.0);
    let want_o = cpu_matvec(&wo, kq, 8, &merged, &y0, true);
    let g_next: Vec<f32> = (0..8).map(|_| rng.random_range(0.5..1.5)).collect();
    let want_scaled: Vec<f32> = want_o.iter().zip(&g_next).map(|(a, b)| a * b).collect();
    let gnb = storage_buffer_init(&ctx, "g_next", &g_next).unwrap();
    let scaled = storage_buffer_init(&ctx, "scaled", &[SENTINEL; 8]).unwrap();
    let sumsq = storage_buffer_init(&ctx, "sumsq", &[SENTINEL; 2]).unwrap();
    let w = Q1_0Weight::upload(&ctx, "wo", &wo, kq, 8).unwrap();
    let ob = storage_buffer_init(&ctx, "part_o", &part_o).unwrap();
    let mlb = storage_buffer_init(&ctx, "part_ml", &part_ml).unwrap();
    let step_params = StepParams::new(live * chunk - 5, 1);
    let stepb = bonsai_wgpu::gpu::buffers::uniform_buffer_init(&ctx, "step", &step_params);
    let yo = storage_buffer_init(&ctx, "y", &y0).unwrap();
    let merge_opts = MatvecOptions {
        accumulate: true,
        ..opts
    };
    let op = MatvecQ1_0::fused(
        &ctx,
        &cache,
        &MatvecQ1_0Bindings {
            w: &w,
            x: &ob,
            y: &yo,
            opts: merge_opts,
        },
        &Fusion {
            merge: Some(MergeInput {
                step: &stepb,
                part_ml: &mlb,
                head_dim,
                chunk,
                max_chunks,
            }),
            norm_out: Some(NormOut {
                g_next: &gnb,
                out: &scaled,
                sumsq: &sumsq,
            }),
            ..Fusion::default()
        },
    )
    .unwrap();
    bonsai_wgpu::gpu::kernel::submit(&ctx, "merge matvec", &[&op], &step_params);
    let got_o = read_f32(&ctx, &yo, 8).await;
    let what = format!("{reduce:?} {path}");
    assert_close(&format!("Wo merge {what}"), &got_o, &want_o, merge_tol);
    let got_scaled = read_f32(&ctx, &scaled, 8).await;
    let norm_out = format!("norm_out {what}");
    assert_close(&norm_out, &got_scaled, &want_scaled, merge_tol);
    let got_ss = read_f32(&ctx, &sumsq, 2).await;
    let ss_want = sums_of_squares(&want_o);
    assert_close(
        &format!("{norm_out} sums of squares"),
        &got_ss,
        &ss_want,
        merge_tol,
    );
}

/// `v`'s sums of squares in groups of 4 (what a norm_out epilogue writes for an rms option).
fn sums_of_squares(v: &[f32]) -> Vec<f32> {
    v.chunks(4).map(|c| c.iter().map(|a| a * a).sum()).collect()
}

#[gpu_test]
async fn matvec_fused_options_shared() {
    check_fused_matvec(Reduce::Shared, KernelPath::F32).await;
    check_fused_matvec(Reduce::Shared, KernelPath::Q8).await;
    check_fused_matvec(Reduce::Shared, KernelPath::F16).await;
}

#[gpu_test]
async fn matvec_fused_options_subgroup() {
    check_fused_matvec(Reduce::Subgroup, KernelPath::F32).await;
    check_fused_matvec(Reduce::Subgroup, KernelPath::Q8).await;
    check_fused_matvec(Reduce::Subgroup, KernelPath::F16).await;
}
