//! Greedy sampling on the GPU (`argmax.wgsl`, two stages): the index of the largest logit, so a
//! decode step reads back 4 bytes instead of 600 KB of logits. CPU reference and tie/NaN rule:
//! [`crate::cpu::ops::argmax`].

use crate::gpu::buffers::{StepParams, check_binding, storage_buffer};
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, Op, PipelineCache, Shader, split_workgroups};
use crate::{Error, Result};

/// Threads per workgroup and values per thread of stage 1.
const WG: u32 = 256;
const STAGE1_ITEMS: u32 = 8;

/// What the argmax reads.
pub struct ArgmaxBindings<'a> {
    /// The logits: (n) f32.
    pub logits: &'a wgpu::Buffer,
    /// Values to reduce.
    pub n: u32,
    /// Where stage 2 writes the winning index: `out[0]` of this (>= 1) u32 buffer, e.g. the
    /// session's token input, so the next decode step embeds the chosen token without the
    /// host; `None`: a buffer of its own.
    pub out: Option<&'a wgpu::Buffer>,
}

/// Both stages and their buffers; `result` holds the winning index (u32) after encoding.
#[derive(Clone, Debug)]
pub struct Argmax {
    /// Reduces the logits to one (max, index) pair per workgroup; `None` when another kernel
    /// writes the pairs ([`Argmax::over_partials`]).
    pub stage1: Option<Kernel>,
    /// Reduces stage 1's pairs with one workgroup.
    pub stage2: Kernel,
    /// Stage 1 maxima: (n_groups) f32.
    pub partial_val: wgpu::Buffer,
    /// Stage 1 indices: (n_groups) u32.
    pub partial_idx: wgpu::Buffer,
    /// The maximum: (1) f32.
    pub result_val: wgpu::Buffer,
    /// Its index at word 0: u32 (ties: lowest), u32::MAX if none ([`ArgmaxBindings::out`]).
    pub result: wgpu::Buffer,
}

impl Argmax {
    /// Argmax over the first `n` values of `logits`.
    pub fn new(ctx: &GpuContext, cache: &PipelineCache, b: &ArgmaxBindings<'_>) -> Result<Argmax> {
        let (logits, n) = (b.logits, b.n);
        if n == 0 || logits.size() < 4 * n as u64 {
            return Err(Error::InvalidArgument(format!(
                "argmax over {n} values of a {}-byte buffer",
                logits.size()
            )));
        }
        let n_groups = n.div_ceil(WG * STAGE1_ITEMS);
        let partial_val = storage_buffer(ctx, "argmax partial_val", 4 * n_groups as u64)?;
        let partial_idx = storage_buffer(ctx, "argmax partial_idx", 4 * n_groups as u64)?;
        let result_val = storage_buffer(ctx, "argmax result_val", 4)?;
        let result = match b.out {
            Some(out) => {
                check_binding(out, 4, "argmax out")?;
                out.clone()
            }
            None => storage_buffer(ctx, "argmax result", 4)?,
        };
        let stage1 = Kernel::new(
            ctx,
            cache,
            KernelSpec {
                label: format!("argmax stage 1 over {n}"),
                shader: Shader::Argmax,
                entry: "main",
                overrides: &[("N", n as f64), ("ITEMS", STAGE1_ITEMS as f64)],
                // Stage 1 ignores `idx`, but `select` loads it: bind the logits again (N values,
                // read only), so the load stays in range in the unchecked build.
                bindings: &[
                    logits.as_entire_binding(),
                    logits.as_entire_binding(),
                    partial_val.as_entire_binding(),
                    partial_idx.as_entire_binding(),
                ],
                workgroups: split_workgroups(
                    n_groups,
                    ctx.limits.max_compute_workgroups_per_dimension,
                ),
            },
        )?;
        let stage2 = stage2_kernel(
            ctx,
            cache,
            n_groups,
            &partial_val,
            &partial_idx,
            &result_val,
            &result,
        )?;
        Ok(Argmax {
            stage1: Some(stage1),
            stage2,
            partial_val,
            partial_idx,
            result_val,
            result,
        })
    }

    /// Stage 2 alone, over `n_groups` (value, index) pairs that another kernel writes into
    /// `partial_val` / `partial_idx` (the fused LM head's epilogue: stage 1 there); the index
    /// goes to `out[0]` as in [`ArgmaxBindings::out`].
    pub fn over_partials(
        ctx: &GpuContext,
        cache: &PipelineCache,
        n_groups: u32,
        out: Option<&wgpu::Buffer>,
    ) -> Result<Argmax> {
        if n_groups == 0 {
            return Err(Error::InvalidArgument("argmax over 0 partials".into()));
        }
        let partial_val = storage_buffer(ctx, "argmax partial_val", 4 * n_groups as u64)?;
        let partial_idx = storage_buffer(ctx, "argmax partial_idx", 4 * n_groups as u64)?;
        let result_val = storage_buffer(ctx, "argmax result_val", 4)?;
        let result = match out {
            Some(out) => {
                check_binding(out, 4, "argmax out")?;
                out.clone()
            }
            None => storage_buffer(ctx, "argmax result", 4)?,
        };
        let stage2 = stage2_kernel(
            ctx,
            cache,
            n_groups,
            &partial_val,
            &partial_idx,
            &result_val,
            &result,
        )?;
        Ok(Argmax {
            stage1: None,
            stage2,
            partial_val,
            partial_idx,
            result_val,
            result,
        })
    }
}

/// Reduces `n_groups` (value, index) pairs with one workgroup into `result_val` / `result`.
fn stage2_kernel(
    ctx: &GpuContext,
    cache: &PipelineCache,
    n_groups: u32,
    partial_val: &wgpu::Buffer,
    partial_idx: &wgpu::Buffer,
    result_val: &wgpu::Buffer,
    result: &wgpu::Buffer,
) -> Result<Kernel> {
    Kernel::new(
        ctx,
        cache,
        KernelSpec {
            label: format!("argmax stage 2 over {n_groups}"),
            shader: Shader::Argmax,
            entry: "main",
            overrides: &[
                ("N", n_groups as f64),
                ("ITEMS", n_groups.div_ceil(WG) as f64),
                ("USE_IDX", 1.0),
            ],
            bindings: &[
                partial_val.as_entire_binding(),
                partial_idx.as_entire_binding(),
                result_val.as_entire_binding(),
                result.as_entire_binding(),
            ],
            workgroups: [1, 1, 1],
        },
    )
}

/// Both stages, whatever the step.
impl Op for Argmax {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        if let Some(stage1) = &self.stage1 {
            stage1.encode(pass, step);
        }
        self.stage2.encode(pass, step);
    }
}
