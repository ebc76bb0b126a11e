//! What the fused decode ops share: the Q1_0 row core (`shaders/q1_0_rows.wgsl`), its workgroup
//! shape, and the checks every fused kernel makes before it is built.
//!
//! The fused kernels are built without wgpu's runtime bounds checks (see
//! [`Shader::trusted`](crate::gpu::kernel::Shader::trusted)), so these host checks are what keeps their
//! indices in range: each kernel's WGSL header says which index each check bounds.

use crate::gpu::buffers::check_binding;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::Shader;
use crate::gpu::q1_0::{Q1_0Part, Q1_0Weight};
use crate::{Error, Result};

/// Threads per workgroup of the row core (`const WG`).
pub const WG: u32 = 256;

/// How a fused kernel reduces its row groups, and how many weight rows a workgroup owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowPlan {
    /// `Some(size)`: `q1_0_reduce_subgroup.wgsl` with `SG = size` (one subgroup per group of 4
    /// rows, no barriers); `None`: the workgroup-memory tree of `q1_0_reduce_shared.wgsl`.
    pub subgroup: Option<u32>,
    /// Weight rows per workgroup (`ROWS_PER_WG`).
    pub rows_per_wg: u32,
}

impl RowPlan {
    /// Subgroups when the adapter has them at one fixed size (then a subgroup is a known run of
    /// invocations), else the workgroup-memory tree, for rows of length `k`.
    pub fn new(ctx: &GpuContext, k: usize) -> RowPlan {
        let (lo, hi) = (ctx.info.subgroup_min_size, ctx.info.subgroup_max_size);
        if ctx.features.has_subgroups && lo == hi && lo.is_power_of_two() && (4..=64).contains(&lo)
        {
            return RowPlan {
                subgroup: Some(lo),
                rows_per_wg: 4 * WG / lo,
            };
        }
        RowPlan::shared(ctx, k)
    }

    /// The workgroup-memory tree: threads per group of 4 rows a power of two up to 64 (8 on CPU
    /// adapters, which pay for every barrier round: 3 rounds instead of 6) and at most the
    /// row's sign words.
    pub fn shared(ctx: &GpuContext, k: usize) -> RowPlan {
        let words = (k / 32).max(1) as u32;
        let cap = match ctx.info.device_type {
            wgpu::DeviceType::Cpu => 8,
            _ => 64,
        };
        let threads = cap.min(1 << words.ilog2());
        RowPlan {
            subgroup: None,
            rows_per_wg: 4 * WG / threads,
        }
    }

    /// The variant of `shader` (a fused kernel) this plan runs.
    pub fn shader(&self, shader: Shader) -> Shader {
        match self.subgroup {
            Some(_) => shader.with_subgroups(),
            None => shader,
        }
    }

    /// The plan's override constants (`ROWS_PER_WG`, and `SG` for subgroups).
    pub fn overrides(&self) -> Vec<(&'static str, f64)> {
        let mut o = vec![("ROWS_PER_WG", self.rows_per_wg as f64)];
        if let Some(sg) = self.subgroup {
            o.push(("SG", sg as f64));
        }
        o
    }
}

/// The single part of a fused weight. Fused weights are small next to the binding limit (the
/// largest, 8B's gate|up, is 24 MiB of 128), so they are never split; a split one is an error.
pub fn single_part(w: &Q1_0Weight) -> Result<&Q1_0Part> {
    match w.parts.as_slice() {
        [part] => Ok(part),
        parts => Err(Error::InvalidArgument(format!(
            "fused weight {} is split in {} parts; fused kernels need one binding",
            w.name,
            parts.len()
        ))),
    }
}

/// `x` holds `k` f32 and `k` is a row length the core can walk (a multiple of 128).
pub fn check_input(w: &Q1_0Weight, x: &wgpu::Buffer, what: &str) -> Result<()> {
    if !w.k.is_multiple_of(128) {
        return Err(Error::BadTensor {
            name: w.name.clone(),
            reason: format!("row length {} is not a multiple of 128", w.k),
        });
    }
    check_binding(x, 4 * w.k, what)
}
