//! SwiGLU gate (`silu_mul.wgsl`): `hb = silu(hb) * hb2`, in place on `hb`.

use crate::gpu::context::GpuContext;
use crate::gpu::op::{Kernel, KernelSpec, PipelineCache, Shader};
use crate::gpu::ops::elementwise::{encode_len, workgroups_for};
use crate::{Error, Result};

/// Kernel for `hb = silu(hb) * hb2` over a fixed element count.
#[derive(Clone, Debug)]
pub struct SiluMul {
    /// The dispatch, sized for the element count it was built for.
    pub kernel: Kernel,
    max_per_dim: u32,
}

impl SiluMul {
    /// Over the first `n` elements (n_tokens * n_ff).
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        hb: &wgpu::Buffer,  // (n) f32: ffn_gate x in, result out
        hb2: &wgpu::Buffer, // (n) f32: ffn_up x
        n: u32,
    ) -> Result<SiluMul> {
        if hb.size() < 4 * n as u64 || hb2.size() < 4 * n as u64 {
            return Err(Error::InvalidArgument(format!(
                "silu_mul: buffers too small for {n} values"
            )));
        }
        let kernel = Kernel::new(
            ctx,
            cache,
            KernelSpec {
                label: format!("silu_mul {n}"),
                shader: Shader::SiluMul,
                entry: "main",
                overrides: &[("N", n as f64)],
                bindings: &[hb.as_entire_binding(), hb2.as_entire_binding()],
                workgroups: workgroups_for(ctx, n),
            },
        )?;
        Ok(SiluMul {
            kernel,
            max_per_dim: ctx.limits.max_compute_workgroups_per_dimension,
        })
    }

    /// Records the gate over every element it was built for.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.kernel.encode(pass);
    }

    /// Processes only the first `n` elements (at most the built count): a shorter batch.
    pub fn encode_len(&self, pass: &mut wgpu::ComputePass<'_>, n: u32) {
        encode_len(self.max_per_dim, &self.kernel, pass, n);
    }
}

/// CPU reference.
pub fn run_cpu(hb: &mut [f32], hb2: &[f32]) {
    for (g, u) in hb.iter_mut().zip(hb2) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}
