//! Residual add (`add.wgsl`): `x += xb2`.

use crate::gpu::context::GpuContext;
use crate::gpu::op::{Kernel, KernelSpec, PipelineCache, Shader};
use crate::gpu::ops::elementwise::{encode_len, workgroups_for};
use crate::{Error, Result};

/// Kernel for `x += xb2` over a fixed element count.
#[derive(Clone, Debug)]
pub struct Add {
    /// The dispatch, sized for the element count it was built for.
    pub kernel: Kernel,
    max_per_dim: u32,
}

impl Add {
    /// Over the first `n` elements (n_tokens * n_embd).
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        x: &wgpu::Buffer,   // (n) f32, updated
        xb2: &wgpu::Buffer, // (n) f32
        n: u32,
    ) -> Result<Add> {
        if x.size() < 4 * n as u64 || xb2.size() < 4 * n as u64 {
            return Err(Error::InvalidArgument(format!(
                "add: buffers too small for {n} values"
            )));
        }
        let kernel = Kernel::new(
            ctx,
            cache,
            KernelSpec {
                label: format!("add {n}"),
                shader: Shader::Add,
                entry: "main",
                overrides: &[("N", n as f64)],
                bindings: &[x.as_entire_binding(), xb2.as_entire_binding()],
                workgroups: workgroups_for(ctx, n),
            },
        )?;
        Ok(Add {
            kernel,
            max_per_dim: ctx.limits.max_compute_workgroups_per_dimension,
        })
    }

    /// Records the add over every element it was built for.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.kernel.encode(pass);
    }

    /// Processes only the first `n` elements (at most the built count): a shorter batch.
    pub fn encode_len(&self, pass: &mut wgpu::ComputePass<'_>, n: u32) {
        encode_len(self.max_per_dim, &self.kernel, pass, n);
    }
}

/// CPU reference.
pub fn run_cpu(x: &mut [f32], xb2: &[f32]) {
    for (a, b) in x.iter_mut().zip(xb2) {
        *a += b;
    }
}
