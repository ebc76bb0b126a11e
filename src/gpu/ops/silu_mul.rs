//! SwiGLU gate (`silu_mul.wgsl`): `hb = silu(hb) * hb2`, in place on `hb`.

use crate::Result;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{PipelineCache, Shader};
use crate::gpu::ops::elementwise::Elementwise;

/// Kernel for `hb = silu(hb) * hb2` over the first `n` elements (n_tokens * n_ff).
pub fn build(
    ctx: &GpuContext,
    cache: &PipelineCache,
    hb: &wgpu::Buffer,  // (n) f32: ffn_gate x in, result out
    hb2: &wgpu::Buffer, // (n) f32: ffn_up x
    n: u32,
) -> Result<Elementwise> {
    Elementwise::new(ctx, cache, Shader::SiluMul, hb, hb2, n)
}

/// CPU reference.
pub fn run_cpu(hb: &mut [f32], hb2: &[f32]) {
    for (g, u) in hb.iter_mut().zip(hb2) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}
