//! Decode step D3 (`shaders/wo_merge.wgsl`): `x += Wo attn`, where the attention output is the
//! merge of `attention_decode`'s per-chunk partials, computed in the matvec's input load (so no
//! merge pass and no attention output buffer between the two).

use crate::Error;
use crate::Result;
use crate::gpu::buffers::check_binding;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader, split_workgroups};
use crate::gpu::kv_cache::AttnDims;
use crate::gpu::ops::attention_decode::{self, DecodeScratch};
use crate::gpu::ops::fused::{RowPlan, single_part};
use crate::gpu::ops::matvec_q1_0;
use crate::gpu::q1_0::Q1_0Weight;

/// Most query heads the kernel merges (`MAX_HEADS` in the WGSL).
pub const MAX_HEADS: usize = 128;

/// The buffers one layer's kernel binds.
pub struct WoMergeBindings<'a> {
    /// `StepParams` uniform: `n_kv` (how many chunks hold keys).
    pub step: &'a wgpu::Buffer,
    /// The attention partials of this step (written by `attention_decode`).
    pub scratch: &'a DecodeScratch,
    /// attn_output weight: (n_embd, q_dim).
    pub w: &'a Q1_0Weight,
    /// Residual stream, accumulated into: (n_embd) f32.
    pub x: &'a wgpu::Buffer,
}

/// Builds one layer's kernel for attention shape `dims`.
pub fn build(
    ctx: &GpuContext,
    cache: &PipelineCache,
    dims: AttnDims,
    b: &WoMergeBindings<'_>,
) -> Result<Kernel> {
    dims.check()?;
    if dims.n_head > MAX_HEADS || b.w.k != dims.q_dim() {
        return Err(Error::InvalidArgument(format!(
            "wo_merge: {} is [{}, {}] for {} heads of {} (at most {MAX_HEADS} heads)",
            b.w.name, b.w.k, b.w.n, dims.n_head, dims.head_dim
        )));
    }
    let part = single_part(b.w)?;
    check_binding(b.x, 4 * b.w.n, "wo_merge x")?;
    let s = b.scratch;
    check_binding(
        &s.part_ml,
        8 * dims.n_head * s.max_chunks,
        "wo_merge part_ml",
    )?;
    check_binding(
        &s.part_o,
        4 * dims.q_dim() * s.max_chunks,
        "wo_merge part_o",
    )?;
    let plan = RowPlan::new(ctx, b.w.k);
    let groups = (b.w.n as u32).div_ceil(plan.rows_per_wg);
    let mut overrides = plan.overrides();
    overrides.extend([
        ("K", b.w.k as f64),
        ("N", b.w.n as f64),
        ("HEAD_DIM", dims.head_dim as f64),
        ("N_HEAD", dims.n_head as f64),
        ("CHUNK", s.chunk as f64),
        ("MAX_CHUNKS", s.max_chunks as f64),
    ]);
    Kernel::new(
        ctx,
        cache,
        KernelSpec {
            label: format!("wo_merge {}", b.w.name),
            shader: plan.shader(Shader::WoMerge),
            entry: "main",
            overrides: &overrides,
            bindings: &[
                b.step.as_entire_binding(),
                s.part_o.as_entire_binding(),
                s.part_ml.as_entire_binding(),
                part.signs.as_entire_binding(),
                part.scales.as_entire_binding(),
                b.x.as_entire_binding(),
            ],
            workgroups: split_workgroups(groups, ctx.limits.max_compute_workgroups_per_dimension),
        },
    )
}

/// CPU reference: attention of `q` (position `n_kv - 1`) over `k`, `v`, then `x += Wo attn`
/// for the GGUF Q1_0 bytes `wo` of shape `[q_dim, x.len()]`.
pub fn run_cpu(
    dims: AttnDims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_kv: usize,
    wo: &[u8],
    x: &mut [f32],
) {
    let attn = attention_decode::run_cpu(dims, q, k, v, n_kv);
    let n = x.len();
    matvec_q1_0::run_cpu(wo, dims.q_dim(), n, &attn, x, true);
}
