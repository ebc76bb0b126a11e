//! The element-wise ops over two f32 buffers, `a = f(a, b)` for n values (256 threads per
//! workgroup): [`silu_mul`](crate::gpu::ops::silu_mul).

use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader, split_workgroups};
use crate::{Error, Result};

/// An element-wise kernel built for a fixed element count; encodable for fewer (shorter batch).
#[derive(Clone, Debug)]
pub struct Elementwise {
    /// The dispatch, sized for the element count it was built for.
    pub kernel: Kernel,
    max_per_dim: u32,
}

impl Elementwise {
    /// `shader` over the first `n` values of `a` (updated in place) and `b`.
    pub(crate) fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        shader: Shader,
        a: &wgpu::Buffer, // (n) f32, updated
        b: &wgpu::Buffer, // (n) f32
        n: u32,
    ) -> Result<Elementwise> {
        let name = shader.name();
        if a.size() < 4 * n as u64 || b.size() < 4 * n as u64 {
            return Err(Error::InvalidArgument(format!(
                "{name}: buffers too small for {n} values"
            )));
        }
        let kernel = Kernel::new(
            ctx,
            cache,
            KernelSpec {
                label: format!("{name} {n}"),
                shader,
                entry: "main",
                overrides: &[("N", n as f64)],
                bindings: &[a.as_entire_binding(), b.as_entire_binding()],
                workgroups: workgroups_for(ctx, n),
            },
        )?;
        Ok(Elementwise {
            kernel,
            max_per_dim: ctx.limits.max_compute_workgroups_per_dimension,
        })
    }

    /// Records the op over every element it was built for.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.kernel.encode(pass);
    }

    /// Processes only the first `n` elements (at most the built count): a shorter batch.
    pub fn encode_len(&self, pass: &mut wgpu::ComputePass<'_>, n: u32) {
        let groups = split_workgroups(n.div_ceil(256), self.max_per_dim);
        self.kernel.encode_groups(pass, groups);
    }
}

/// Workgroups covering `n` elements, split over x/y past the per-dimension limit.
fn workgroups_for(ctx: &GpuContext, n: u32) -> [u32; 3] {
    split_workgroups(
        n.div_ceil(256),
        ctx.limits.max_compute_workgroups_per_dimension,
    )
}
