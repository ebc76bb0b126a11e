//! The kernel benchmark harness (criterion): every op of the forward pass at Bonsai shapes on the
//! default adapter, each encoded through the same [`Op`] interface the session uses. Q1_0
//! products are reported as effective weight GB/s (Q1_0 bytes read per second) per kernel path
//! (`f32`, `q8`: [`KernelPath`]); attention as time per step at several cache lengths.
//! End-to-end tokens per second are `examples/bench.rs`'s job.
//!
//! ALU ops per weight of the inner loops (from the WGSL): the f32 matvec (lib/q1_0_dots.wgsl)
//! shifts, masks and XORs each sign into its activation's float and adds it: 4 per weight; the
//! q8 matvec (lib/q1_0_q8_dots.wgsl) places 4 sign bits with a shift and a mask and sums 4
//! activations with one dot4I8Packed: 0.75 per weight where the GPU has a packed dot product
//! (lavapipe emulates it with byte extracts and multiplies); the f16 matvec
//! (lib/q1_0_f16_dots.wgsl) flips two signs with one shift, mask and XOR, then unpacks the pair
//! and adds in f32: 2.5 per weight. The f32 matmul does a select per
//! weight and a multiply-add per weight and token; the q8 matmul 2 ops per 4 weights once, and
//! one dot4I8Packed per 4 weights and token.
//!
//! cargo bench --bench kernels            (BONSAI_WGPU_ADAPTER / BONSAI_WGPU_BACKEND pick the GPU)
//! cargo bench --bench kernels -- matvec  (one group)

use std::sync::Arc;

use bonsai_wgpu::gpu::buffers::{StepParams, storage_buffer, uniform_buffer_init};
use bonsai_wgpu::gpu::kernel::Op;
use bonsai_wgpu::gpu::kv_cache::{AttnDims, KvCache};
use bonsai_wgpu::gpu::ops::attention_decode::{
    AttentionDecode, AttentionDecodeBindings, DECODE_CHUNKS_SUPPORTED, DecodeScratch,
};
use bonsai_wgpu::gpu::ops::attention_prefill::{AttentionPrefill, AttentionPrefillBindings};
use bonsai_wgpu::gpu::ops::matmul_q1_0::{MatmulQ1_0, MatmulQ1_0Bindings};
use bonsai_wgpu::gpu::ops::matvec_q1_0::{MatvecOptions, MatvecQ1_0, MatvecQ1_0Bindings, Reduce};
use bonsai_wgpu::gpu::ops::qk_norm_rope::{QkNormRope, QkNormRopeBindings};
use bonsai_wgpu::gpu::q1_0::Q1_0Weight;
use bonsai_wgpu::gpu::{GpuContext, GpuOptions, KernelPath, PipelineCache};
use bonsai_wgpu::model::rope::RopeParams;
use bonsai_wgpu::quant::q1_0;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// (name, k, n): Bonsai-1.7B, 4B and 8B projection shapes and the 1.7B head.
const SHAPES: &[(&str, usize, usize)] = &[
    ("1.7B attn_q 2048x2048", 2048, 2048),
    ("1.7B ffn_up 2048x6144", 2048, 6144),
    ("1.7B ffn_down 6144x2048", 6144, 2048),
    ("4B ffn_up 2560x9728", 2560, 9728),
    ("8B ffn_up 4096x12288", 4096, 12288),
    ("8B ffn_down 12288x4096", 12288, 4096),
    ("1.7B head 2048x151669", 2048, 151_669),
];
/// Tokens per prefill batch in the matmul and prefill attention benches.
const BATCH: usize = 64;
/// Launches per measured submit, so submit overhead does not dominate.
const LAUNCHES: usize = 8;
/// Bonsai-1.7B's attention shape and the session's default context.
const DIMS: AttnDims = AttnDims {
    n_head: 16,
    n_head_kv: 8,
    head_dim: 128,
};
const N_CTX: usize = 4096;

/// Encodes `op` for `step` LAUNCHES times in one pass, submits and waits.
fn run(ctx: &GpuContext, op: &dyn Op, step: &StepParams) {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        for _ in 0..LAUNCHES {
            op.encode(&mut pass, step);
        }
    }
    ctx.queue.submit([encoder.finish()]);
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
}

fn weight(ctx: &GpuContext, k: usize, n: usize) -> Q1_0Weight {
    // contents do not change the speed: a repeating byte pattern with small f16 scales
    let bytes: Vec<u8> = (0..n * q1_0::row_bytes(k))
        .map(|i| (i * 37 % 251) as u8 & 0x3b)
        .collect();
    Q1_0Weight::upload(ctx, "bench", &bytes, k, n).expect("upload")
}

fn f32s(ctx: &GpuContext, label: &str, n: usize) -> wgpu::Buffer {
    storage_buffer(ctx, label, n as u64 * 4).expect("buffer")
}

/// The kernel paths the Q1_0 products are measured on (f16: the matvec; its matmul is f32's).
const PATHS: [KernelPath; 3] = [KernelPath::F32, KernelPath::Q8, KernelPath::F16];

fn matvec(c: &mut Criterion, ctx: &GpuContext, cache: &PipelineCache, adapter: &str) {
    let one = StepParams::new(0, 1);
    for (path, reduce) in PATHS
        .iter()
        .flat_map(|&p| [(p, Reduce::Shared), (p, Reduce::Subgroup)])
    {
        if reduce == Reduce::Subgroup && !ctx.features.has_subgroups {
            continue;
        }
        let mut group = c.benchmark_group(format!("matvec_q1_0 {path} {reduce:?} on {adapter}"));
        group.sample_size(10);
        for &(name, k, n) in SHAPES {
            let w = weight(ctx, k, n);
            let (x, y) = (f32s(ctx, "x", k), f32s(ctx, "y", n));
            let opts = MatvecOptions {
                reduce,
                path: Some(path),
                ..MatvecOptions::default()
            };
            let b = MatvecQ1_0Bindings {
                w: &w,
                x: &x,
                y: &y,
                opts,
            };
            let op = MatvecQ1_0::new(ctx, cache, &b).expect("matvec");
            group.throughput(Throughput::Bytes(w.gpu_bytes() * LAUNCHES as u64));
            group.bench_function(name, |b| b.iter(|| run(ctx, &op, &one)));
        }
        group.finish();
    }
}

fn matmul(c: &mut Criterion, ctx: &GpuContext, cache: &PipelineCache, adapter: &str) {
    for path in [KernelPath::F32, KernelPath::Q8] {
        // The matmul takes its path from the context it is built on.
        let mut on_path = ctx.clone();
        on_path.kernel_path = path;
        matmul_path(c, &on_path, cache, adapter);
    }
}

fn matmul_path(c: &mut Criterion, ctx: &GpuContext, cache: &PipelineCache, adapter: &str) {
    let path = ctx.kernel_path;
    let mut group = c.benchmark_group(format!("matmul_q1_0 {path} x{BATCH} tokens on {adapter}"));
    group.sample_size(10);
    let batch = StepParams::new(0, BATCH);
    let step = uniform_buffer_init(ctx, "step", &batch);
    for &(name, k, n) in &SHAPES[..SHAPES.len() - 1] {
        let w = weight(ctx, k, n);
        let (x, y) = (f32s(ctx, "x", BATCH * k), f32s(ctx, "y", BATCH * n));
        let b = MatmulQ1_0Bindings {
            step: &step,
            x: &x,
            w: &w,
            y: &y,
            max_tokens: BATCH,
            accumulate: false,
            small_tiles: false,
        };
        let op = MatmulQ1_0::new(ctx, cache, &b).expect("matmul");
        // weights are read once per batch: report the weight bytes the batch covers
        group.throughput(Throughput::Bytes(w.gpu_bytes() * LAUNCHES as u64));
        group.bench_function(name, |b| b.iter(|| run(ctx, &op, &batch)));
    }
    group.finish();
}

fn attention(c: &mut Criterion, ctx: &GpuContext, cache: &PipelineCache, adapter: &str) {
    let rope = RopeParams::yarn(DIMS.head_dim, 1e6, 4.0, 8192);
    let kv = KvCache::with_dims(ctx, 1, DIMS, &rope, N_CTX).expect("kv cache");
    // The shaders read the step's position and lengths from this uniform.
    let step_buffer = uniform_buffer_init(ctx, "step", &StepParams::default());
    let set_step = |step: &StepParams| {
        ctx.queue
            .write_buffer(&step_buffer, 0, bytemuck::bytes_of(step));
    };
    let q = f32s(ctx, "q", BATCH * DIMS.q_dim());
    let k = f32s(ctx, "k", BATCH * DIMS.kv_dim());
    let v = f32s(ctx, "v", BATCH * DIMS.kv_dim());
    let norm = f32s(ctx, "norm", DIMS.head_dim);
    let out = f32s(ctx, "out", BATCH * DIMS.q_dim());

    let mut group = c.benchmark_group(format!("attention 1.7B n_ctx {N_CTX} on {adapter}"));
    group.sample_size(10);
    let b = QkNormRopeBindings {
        step: &step_buffer,
        q: &q,
        k: &k,
        v: &v,
        q_norm: &norm,
        k_norm: &norm,
        kv: &kv,
        layer: 0,
        eps: 1e-6,
        max_tokens: BATCH,
    };
    let rope_op = QkNormRope::new(ctx, cache, &b).expect("qk_norm_rope");
    for n in [1, BATCH] {
        let step = StepParams::new(100, n);
        set_step(&step);
        group.bench_function(format!("qk_norm_rope T {n}"), |b| {
            b.iter(|| run(ctx, &rope_op, &step))
        });
    }
    for chunk in DECODE_CHUNKS_SUPPORTED {
        let scratch = DecodeScratch::with_chunk(ctx, DIMS, N_CTX, chunk).expect("scratch");
        let b = AttentionDecodeBindings {
            step: &step_buffer,
            q: &q,
            kv: &kv,
            layer: 0,
            scratch: &scratch,
            out: &out,
        };
        let decode = AttentionDecode::new(ctx, cache, &b).expect("decode");
        for n_kv in [128, 1024, N_CTX] {
            let step = StepParams::new(n_kv - 1, 1);
            set_step(&step);
            group.bench_function(format!("decode chunk {chunk} n_kv {n_kv}"), |b| {
                b.iter(|| run(ctx, &decode, &step))
            });
        }
    }
    let b = AttentionPrefillBindings {
        step: &step_buffer,
        q: &q,
        kv: &kv,
        layer: 0,
        out: &out,
        max_tokens: BATCH,
    };
    let prefill = AttentionPrefill::new(ctx, cache, &b).expect("prefill");
    for pos in [0, 1024] {
        let step = StepParams::new(pos, BATCH);
        set_step(&step);
        group.bench_function(format!("prefill T {BATCH} at pos {pos}"), |b| {
            b.iter(|| run(ctx, &prefill, &step))
        });
    }
    group.finish();
}

fn kernels(c: &mut Criterion) {
    let ctx =
        Arc::new(pollster::block_on(GpuContext::new(&GpuOptions::default())).expect("adapter"));
    let cache = PipelineCache::new();
    let adapter = format!("{} ({:?})", ctx.info.name, ctx.info.backend);
    matvec(c, &ctx, &cache, &adapter);
    matmul(c, &ctx, &cache, &adapter);
    attention(c, &ctx, &cache, &adapter);
    ctx.take_error().expect("no wgpu error");
}

criterion_group!(benches, kernels);
criterion_main!(benches);
