//! Dispatch size shared by the element-wise ops (256 threads per workgroup).

use crate::gpu::context::GpuContext;
use crate::gpu::op::split_workgroups;

/// Workgroups covering `n` elements, split over x/y past the per-dimension limit.
pub fn workgroups_for(ctx: &GpuContext, n: u32) -> [u32; 3] {
    split_workgroups(
        n.div_ceil(256),
        ctx.limits.max_compute_workgroups_per_dimension,
    )
}

/// Records `kernel` over only the first `n` elements (at most the built count).
pub fn encode_len(
    ctx_max_per_dim: u32,
    kernel: &crate::gpu::op::Kernel,
    pass: &mut wgpu::ComputePass<'_>,
    n: u32,
) {
    kernel.encode_groups(pass, split_workgroups(n.div_ceil(256), ctx_max_per_dim));
}
