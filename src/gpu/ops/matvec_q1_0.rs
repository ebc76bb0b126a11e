//! `y = W x` (or `y += W x`) for a Q1_0 weight: the op that dominates decode time.
//! Shaders: `matvec_q1_0.wgsl` (workgroup-memory reduction, every adapter) and
//! `matvec_q1_0_subgroup.wgsl` (subgroupAdd, when the adapter has subgroups).

use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader, split_workgroups};
use crate::gpu::q1_0::Q1_0Weight;
use crate::quant::q1_0;
use crate::{Error, Result};

/// Threads per workgroup of both matvec shaders (`const WG` in the WGSL).
const WG: u32 = 256;
/// Rows that share each load of x (the `vec4` accumulators in the WGSL).
const ROWS_PER_GROUP: u32 = 4;

/// Which reduction the kernel uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduce {
    /// Subgroups when the adapter has them, else workgroup memory.
    #[default]
    Auto,
    /// Workgroup-memory tree (works everywhere).
    Shared,
    /// `subgroupAdd` (errors if the adapter lacks subgroups).
    Subgroup,
}

/// Options of a matvec.
#[derive(Clone, Copy, Debug, Default)]
pub struct MatvecOptions {
    /// `y += W x` instead of `y = W x`: attn_output and ffn_down write into the residual stream.
    pub accumulate: bool,
    /// How the dot products are reduced (workgroup memory or subgroups).
    pub reduce: Reduce,
    /// Cap on workgroups per dispatch dimension; 0 = the device limit. Tests lower it to
    /// exercise the x/y split that the 151,669-row head needs on small-subgroup adapters.
    pub max_groups_per_dim: u32,
    /// Subgroup size range to plan for instead of the adapter's (must contain the real size).
    /// Tests widen it to exercise the rounds a driver with varying subgroup sizes needs.
    pub subgroup_sizes: Option<(u32, u32)>,
}

/// One kernel per weight part; encode them all (they write disjoint ranges of y).
#[derive(Clone, Debug)]
pub struct MatvecQ1_0 {
    /// One kernel per weight part.
    pub kernels: Vec<Kernel>,
}

impl MatvecQ1_0 {
    /// `y[0..n] (=|+=) w[n, k] x[k]`; `x` holds at least k f32, `y` at least n f32.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        w: &Q1_0Weight,
        x: &wgpu::Buffer, // (k) f32
        y: &wgpu::Buffer, // (n) f32
        opts: MatvecOptions,
    ) -> Result<MatvecQ1_0> {
        if x.size() < (w.k * 4) as u64 || y.size() < (w.n * 4) as u64 {
            return Err(Error::InvalidArgument(format!(
                "matvec {}: x has {} bytes (need {}), y has {} bytes (need {})",
                w.name,
                x.size(),
                w.k * 4,
                y.size(),
                w.n * 4
            )));
        }
        let subgroup = match opts.reduce {
            Reduce::Auto => ctx.features.has_subgroups,
            Reduce::Shared => false,
            Reduce::Subgroup => true,
        };
        // Both shaders work on groups of ROWS_PER_GROUP rows sharing each load of x.
        let (shader, rows_per_wg, iters) = if subgroup {
            // Enough row groups for the smallest subgroup size, and enough rounds that the
            // largest covers them too (unknown sizes: WebGPU's bounds 4..128).
            let reported = (ctx.info.subgroup_min_size, ctx.info.subgroup_max_size);
            let (sg_min, sg_max) = match opts.subgroup_sizes.unwrap_or(reported) {
                (lo, hi) if lo.is_power_of_two() && hi.is_power_of_two() && lo <= hi => {
                    (lo.clamp(4, 128), hi.clamp(4, 128))
                }
                _ => (4, 128),
            };
            (
                Shader::MatvecQ1_0Subgroup,
                ROWS_PER_GROUP * WG / sg_min,
                sg_max / sg_min,
            )
        } else {
            // Threads per row group: a power of two up to 64, at most the row's word count.
            let words = (w.k / 32) as u32;
            let tpg = 1u32 << words.min(64).ilog2();
            (Shader::MatvecQ1_0, ROWS_PER_GROUP * WG / tpg, 0)
        };
        let max_per_dim = match opts.max_groups_per_dim {
            0 => ctx.limits.max_compute_workgroups_per_dimension,
            m => m.min(ctx.limits.max_compute_workgroups_per_dimension),
        };
        let mut kernels = Vec::with_capacity(w.parts.len());
        for part in &w.parts {
            let mut overrides = vec![
                ("K", w.k as f64),
                ("N", part.n_rows as f64),
                ("Y_OFFSET", part.row0 as f64),
                ("ROWS_PER_WG", rows_per_wg as f64),
                ("ACCUMULATE", if opts.accumulate { 1.0 } else { 0.0 }),
            ];
            if subgroup {
                overrides.push(("ITERS", iters as f64));
            }
            let n_groups = (part.n_rows as u32).div_ceil(rows_per_wg);
            kernels.push(Kernel::new(
                ctx,
                cache,
                KernelSpec {
                    label: format!("matvec {} rows {}..", w.name, part.row0),
                    shader,
                    entry: "main",
                    overrides: &overrides,
                    bindings: &[
                        part.signs.as_entire_binding(),
                        part.scales.as_entire_binding(),
                        x.as_entire_binding(),
                        y.as_entire_binding(),
                    ],
                    workgroups: split_workgroups(n_groups, max_per_dim),
                },
            )?);
        }
        Ok(MatvecQ1_0 { kernels })
    }

    /// Records every part's kernel.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for k in &self.kernels {
            k.encode(pass);
        }
    }
}

/// CPU reference straight from GGUF Q1_0 bytes: `y (=|+=) W x` for `W` `[k, n]`.
pub fn run_cpu(w_bytes: &[u8], k: usize, n: usize, x: &[f32], y: &mut [f32], accumulate: bool) {
    let row_bytes = q1_0::row_bytes(k);
    for (r, out) in y.iter_mut().enumerate().take(n) {
        let dot = q1_0::dot_q1_0_f32(&w_bytes[r * row_bytes..(r + 1) * row_bytes], x);
        *out = if accumulate { *out + dot } else { dot };
    }
}
