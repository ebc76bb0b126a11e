//! Greedy sampling on the GPU (`argmax.wgsl`, two stages): the index of the largest logit, so a
//! decode step reads back 4 bytes instead of 600 KB of logits.

use crate::gpu::buffers::storage_buffer;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader, split_workgroups};
use crate::{Error, Result};

/// Threads per workgroup and values per thread of stage 1.
const WG: u32 = 256;
const STAGE1_ITEMS: u32 = 8;

/// Both stages and their buffers; `result` holds the winning index (u32) after encoding.
#[derive(Clone, Debug)]
pub struct Argmax {
    /// Reduces the logits to one (max, index) pair per workgroup.
    pub stage1: Kernel,
    /// Reduces stage 1's pairs with one workgroup.
    pub stage2: Kernel,
    /// Stage 1 maxima: (n_groups) f32.
    pub partial_val: wgpu::Buffer,
    /// Stage 1 indices: (n_groups) u32.
    pub partial_idx: wgpu::Buffer,
    /// The maximum: (1) f32.
    pub result_val: wgpu::Buffer,
    /// Its index: (1) u32 (ties: lowest), u32::MAX if none.
    pub result: wgpu::Buffer,
}

impl Argmax {
    /// Argmax over the first `n` values of `logits`.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        logits: &wgpu::Buffer, // (n) f32
        n: u32,
    ) -> Result<Argmax> {
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
        let result = storage_buffer(ctx, "argmax result", 4)?;
        let stage1 = Kernel::new(
            ctx,
            cache,
            KernelSpec {
                label: format!("argmax stage 1 over {n}"),
                shader: Shader::Argmax,
                entry: "main",
                overrides: &[("N", n as f64), ("ITEMS", STAGE1_ITEMS as f64)],
                // Stage 1 ignores `idx`; any buffer it does not write will do.
                bindings: &[
                    logits.as_entire_binding(),
                    result.as_entire_binding(),
                    partial_val.as_entire_binding(),
                    partial_idx.as_entire_binding(),
                ],
                workgroups: split_workgroups(
                    n_groups,
                    ctx.limits.max_compute_workgroups_per_dimension,
                ),
            },
        )?;
        let stage2 = Kernel::new(
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
        )?;
        Ok(Argmax {
            stage1,
            stage2,
            partial_val,
            partial_idx,
            result_val,
            result,
        })
    }

    /// Records both stages.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.stage1.encode(pass);
        self.stage2.encode(pass);
    }
}

/// CPU reference with the shader's rules: ties to the lowest index, NaN and -inf never win
/// (on GPUs non-finite logits are unspecified: WGSL allows assuming finite floats).
pub fn run_cpu(logits: &[f32]) -> u32 {
    let (mut best, mut best_i) = (-f32::MAX, u32::MAX);
    for (i, &v) in logits.iter().enumerate() {
        if v > best || (v == best && (i as u32) < best_i) {
            (best, best_i) = (v, i as u32);
        }
    }
    best_i
}
