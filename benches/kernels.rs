//! Criterion benches of the Q1_0 matvec (decode) and matmul (prefill) kernels on the default
//! adapter, reported as effective weight GB/s (Q1_0 bytes read per second).
//!
//! cargo bench --bench kernels            (BONSAI_WGPU_ADAPTER / BONSAI_WGPU_BACKEND pick the GPU)

use std::sync::Arc;

use bonsai_wgpu::gpu::buffers::{StepParams, storage_buffer, uniform_buffer_init};
use bonsai_wgpu::gpu::kernel::Kernel;
use bonsai_wgpu::gpu::ops::matmul_q1_0::{self, MatmulQ1_0Bindings};
use bonsai_wgpu::gpu::ops::matvec_q1_0::{MatvecOptions, MatvecQ1_0};
use bonsai_wgpu::gpu::q1_0::Q1_0Weight;
use bonsai_wgpu::gpu::{GpuContext, GpuOptions, PipelineCache};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// (name, k, n): Bonsai-1.7B and 8B projection shapes.
const SHAPES: &[(&str, usize, usize)] = &[
    ("1.7B ffn_up 2048x6144", 2048, 6144),
    ("1.7B ffn_down 6144x2048", 6144, 2048),
    ("8B ffn_up 4096x12288", 4096, 12288),
];
/// Tokens per prefill batch in the matmul bench.
const BATCH: u32 = 64;
/// Kernel launches per measured submit, so submit overhead does not dominate.
const LAUNCHES: usize = 8;

fn run(ctx: &GpuContext, kernels: &[Kernel]) {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        for _ in 0..LAUNCHES {
            for k in kernels {
                k.encode(&mut pass);
            }
        }
    }
    ctx.queue.submit([encoder.finish()]);
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
}

fn weight(ctx: &GpuContext, k: usize, n: usize) -> Q1_0Weight {
    // contents do not change the speed: a repeating byte pattern with small f16 scales
    let bytes: Vec<u8> = (0..n * k / 128 * 18)
        .map(|i| (i * 37 % 251) as u8 & 0x3b)
        .collect();
    Q1_0Weight::upload(ctx, "bench", &bytes, k, n).expect("upload")
}

fn kernels(c: &mut Criterion) {
    let ctx =
        Arc::new(pollster::block_on(GpuContext::new(&GpuOptions::default())).expect("adapter"));
    let cache = PipelineCache::new();
    let adapter = format!("{} ({:?})", ctx.info.name, ctx.info.backend);

    let mut group = c.benchmark_group(format!("matvec_q1_0 on {adapter}"));
    group.sample_size(10);
    for &(name, k, n) in SHAPES {
        let w = weight(&ctx, k, n);
        let x = storage_buffer(&ctx, "x", k as u64 * 4).expect("x");
        let y = storage_buffer(&ctx, "y", n as u64 * 4).expect("y");
        let op =
            MatvecQ1_0::new(&ctx, &cache, &w, &x, &y, MatvecOptions::default()).expect("matvec");
        group.throughput(Throughput::Bytes(w.gpu_bytes() * LAUNCHES as u64));
        group.bench_function(name, |b| b.iter(|| run(&ctx, &op.kernels)));
    }
    group.finish();

    let mut group = c.benchmark_group(format!("matmul_q1_0 x{BATCH} tokens on {adapter}"));
    group.sample_size(10);
    let step = StepParams::new(0, BATCH as usize);
    let step = uniform_buffer_init(&ctx, "step", &step);
    for &(name, k, n) in SHAPES {
        let w = weight(&ctx, k, n);
        let x = storage_buffer(&ctx, "x", (BATCH as usize * k) as u64 * 4).expect("x");
        let y = storage_buffer(&ctx, "y", (BATCH as usize * n) as u64 * 4).expect("y");
        let b = MatmulQ1_0Bindings {
            step: &step,
            x: &x,
            w: &w,
            y: &y,
        };
        let op = matmul_q1_0::build(&ctx, &cache, BATCH as usize, false, &b).expect("matmul");
        // weights are read once per batch: report the weight bytes the batch covers
        group.throughput(Throughput::Bytes(w.gpu_bytes() * LAUNCHES as u64));
        group.bench_function(name, |b| b.iter(|| run(&ctx, &op.kernels)));
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
