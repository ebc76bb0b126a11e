//! Measures Q1_0 matvec throughput (weight GB/s) on the chosen adapter for Bonsai shapes.
//!
//! `cargo run --example matvec_bench [-- REPS]`; `BONSAI_WGPU_ADAPTER` / `BONSAI_WGPU_BACKEND`
//! pick the device.

use anyhow::Result;
use bonsai_wgpu::gpu::buffers::{storage_buffer, storage_buffer_init};
use bonsai_wgpu::gpu::kernel::Kernel;
use bonsai_wgpu::gpu::ops::matvec_q1_0::{MatvecOptions, MatvecQ1_0, Reduce};
use bonsai_wgpu::gpu::q1_0::Q1_0Weight;
use bonsai_wgpu::gpu::timer::PassTimer;
use bonsai_wgpu::gpu::{GpuContext, GpuOptions, PipelineCache};

/// (name, k, n): Bonsai-1.7B q/ffn_up, ffn_down, 4B ffn_up, 8B ffn_down, 1.7B head.
const SHAPES: &[(&str, usize, usize)] = &[
    ("1.7B attn_q", 2048, 2048),
    ("1.7B ffn_up", 2048, 6144),
    ("1.7B ffn_down", 6144, 2048),
    ("4B ffn_up", 2560, 9728),
    ("8B ffn_down", 12288, 4096),
    ("1.7B head", 2048, 151_669),
];

/// CPU seconds used by this process (all threads): on lavapipe the GPU *is* the CPU, and this
/// is far less noisy than wall time on a shared machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// (wall seconds, CPU seconds) for `reps` rounds of `kernels` in one submit.
fn time_reps(ctx: &GpuContext, kernels: &[Kernel], reps: usize) -> Result<(f64, f64)> {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        for _ in 0..reps {
            for k in kernels {
                k.encode(&mut pass);
            }
        }
    }
    let (t, cpu) = (std::time::Instant::now(), cpu_seconds());
    ctx.queue.submit([encoder.finish()]);
    ctx.device.poll(wgpu::PollType::wait_indefinitely())?;
    ctx.take_error()?;
    Ok((t.elapsed().as_secs_f64(), cpu_seconds() - cpu))
}

/// Fastest of `reps` passes by GPU timestamps (None without timestamp queries).
fn gpu_min_ms(ctx: &GpuContext, kernels: &[Kernel], reps: usize) -> Result<Option<f64>> {
    let Some(mut timer) = PassTimer::new(ctx, reps as u32) else {
        return Ok(None);
    };
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    for _ in 0..reps {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("matvec"),
            timestamp_writes: timer.pass("matvec"),
        });
        for k in kernels {
            k.encode(&mut pass);
        }
    }
    timer.resolve(&mut encoder);
    ctx.queue.submit([encoder.finish()]);
    let times = pollster::block_on(timer.read(ctx))?;
    Ok(times.into_iter().map(|(_, ms)| ms).reduce(f64::min))
}

fn main() -> Result<()> {
    let reps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let ctx = pollster::block_on(GpuContext::new(&GpuOptions::default()))?;
    println!(
        "{} ({:?}, {}) subgroups {} ({}..{}), f16 {}",
        ctx.info.name,
        ctx.info.backend,
        ctx.info.driver_info,
        ctx.features.has_subgroups,
        ctx.info.subgroup_min_size,
        ctx.info.subgroup_max_size,
        ctx.features.has_f16
    );
    let cache = PipelineCache::new();
    for &(name, k, n) in SHAPES {
        // Weight contents do not change the speed: a repeating byte pattern is enough.
        let bytes: Vec<u8> = (0..n * k / 128 * 18)
            .map(|i| (i * 37 % 251) as u8 & 0x3b)
            .collect();
        let w = Q1_0Weight::upload(&ctx, name, &bytes, k, n)?;
        let x = storage_buffer_init(&ctx, "x", &vec![0.5f32; k])?;
        let y = storage_buffer(&ctx, "y", 4 * n as u64)?;
        for reduce in [Reduce::Shared, Reduce::Subgroup] {
            if reduce == Reduce::Subgroup && !ctx.features.has_subgroups {
                continue;
            }
            let opts = MatvecOptions {
                reduce,
                ..Default::default()
            };
            let op = MatvecQ1_0::new(&ctx, &cache, &w, &x, &y, opts)?;
            time_reps(&ctx, &op.kernels, 1)?; // warm-up
            let (wall, cpu) = time_reps(&ctx, &op.kernels, reps)?;
            let (wall, cpu) = (wall / reps as f64, cpu / reps as f64);
            let gbs = w.gpu_bytes() as f64 / wall / 1e9;
            let gpu = match gpu_min_ms(&ctx, &op.kernels, reps)? {
                Some(ms) => format!(
                    "gpu min {ms:8.3} ms {:6.2} GB/s",
                    w.gpu_bytes() as f64 / ms / 1e6
                ),
                None => String::new(),
            };
            println!(
                "{name:14} k={k:5} n={n:6} {reduce:8?}: {:8.3} ms {gbs:6.2} GB/s (cpu {:8.3} ms) {gpu}",
                wall * 1e3,
                cpu * 1e3
            );
        }
    }
    Ok(())
}
