//! Residual add (`add.wgsl`): `x += xb2`.

use crate::Result;
use crate::gpu::context::GpuContext;
use crate::gpu::op::{PipelineCache, Shader};
use crate::gpu::ops::elementwise::Elementwise;

/// Kernel for `x += xb2` over the first `n` elements (n_tokens * n_embd).
pub fn build(
    ctx: &GpuContext,
    cache: &PipelineCache,
    x: &wgpu::Buffer,   // (n) f32, updated
    xb2: &wgpu::Buffer, // (n) f32
    n: u32,
) -> Result<Elementwise> {
    Elementwise::new(ctx, cache, Shader::Add, x, xb2, n)
}

/// CPU reference.
pub fn run_cpu(x: &mut [f32], xb2: &[f32]) {
    for (a, b) in x.iter_mut().zip(xb2) {
        *a += b;
    }
}
