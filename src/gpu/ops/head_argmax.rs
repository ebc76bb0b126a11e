//! The LM head of a decode step in two dispatches: `head_argmax.wgsl` (output norm folded into the
//! head matvec, logits written, argmax stage 1 in the epilogue) and `argmax.wgsl`'s stage 2,
//! which writes the winning id straight into a buffer the caller chooses: the next step's token
//! input, so greedy decoding never needs the host between steps.

use crate::Result;
use crate::engine::argmax;
use crate::gpu::buffers::check_binding;
use crate::gpu::buffers::storage_buffer;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader, split_workgroups};
use crate::gpu::ops::fused::{RowPlan, WG, check_input};
use crate::gpu::ops::{matvec_q1_0, rmsnorm};
use crate::gpu::q1_0::Q1_0Weight;

/// The head kernels and their pair buffers.
#[derive(Clone, Debug)]
pub struct HeadArgmax {
    /// One kernel per part of the head weight (one for every Bonsai model).
    pub parts: Vec<Kernel>,
    /// Reduces the per-workgroup pairs into `token`.
    pub stage2: Kernel,
    /// Stage-1 maxima: (n_pairs) f32.
    pub pair_val: wgpu::Buffer,
    /// Stage-1 indices: (n_pairs) u32.
    pub pair_idx: wgpu::Buffer,
    /// The winning logit: (1) f32.
    pub result_val: wgpu::Buffer,
}

impl HeadArgmax {
    /// Records the head: part kernels, then stage 2.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for k in &self.parts {
            k.encode(pass);
        }
        self.stage2.encode(pass);
    }

    /// Dispatches this head records.
    pub fn dispatches(&self) -> usize {
        self.parts.len() + 1
    }
}

/// The buffers the head binds.
pub struct HeadArgmaxBindings<'a> {
    /// Residual stream after the last layer: (n_embd) f32.
    pub x: &'a wgpu::Buffer,
    /// output_norm weight: (n_embd) f32.
    pub norm: &'a wgpu::Buffer,
    /// LM head (or the tied embedding): (n_vocab, n_embd).
    pub w: &'a Q1_0Weight,
    /// Logits out: (n_vocab) f32.
    pub logits: &'a wgpu::Buffer,
    /// Receives the argmax id at word 0 (ties: lowest id; u32::MAX if no logit is finite).
    pub token: &'a wgpu::Buffer,
}

/// Builds the head for `b.w`.
pub fn build(
    ctx: &GpuContext,
    cache: &PipelineCache,
    eps: f32,
    b: &HeadArgmaxBindings<'_>,
) -> Result<HeadArgmax> {
    let w = b.w;
    check_input(w, b.x, "head_argmax x")?;
    check_binding(b.norm, 4 * w.k, "head_argmax norm")?;
    check_binding(b.logits, 4 * w.n, "head_argmax logits")?;
    check_binding(b.token, 4, "head_argmax token")?;
    let plan = RowPlan::new(ctx, w.k);
    let rows = plan.rows_per_wg;
    let groups: Vec<u32> = w
        .parts
        .iter()
        .map(|p| (p.n_rows as u32).div_ceil(rows))
        .collect();
    let n_pairs: u32 = groups.iter().sum();
    let pair_val = storage_buffer(ctx, "head pair_val", 4 * n_pairs as u64)?;
    let pair_idx = storage_buffer(ctx, "head pair_idx", 4 * n_pairs as u64)?;
    let result_val = storage_buffer(ctx, "head result_val", 4)?;
    let max_dim = ctx.limits.max_compute_workgroups_per_dimension;
    let mut group_offset = 0;
    let mut parts = Vec::with_capacity(w.parts.len());
    for (part, &n_groups) in w.parts.iter().zip(&groups) {
        let mut overrides = plan.overrides();
        overrides.extend([
            ("K", w.k as f64),
            ("N", part.n_rows as f64),
            ("EPS", eps as f64),
            ("Y_OFFSET", part.row0 as f64),
            ("GROUP_OFFSET", group_offset as f64),
        ]);
        parts.push(Kernel::new(
            ctx,
            cache,
            KernelSpec {
                label: format!("head_argmax {}[{}..]", w.name, part.row0),
                shader: plan.shader(Shader::HeadArgmax),
                entry: "main",
                overrides: &overrides,
                bindings: &[
                    b.x.as_entire_binding(),
                    b.norm.as_entire_binding(),
                    part.signs.as_entire_binding(),
                    part.scales.as_entire_binding(),
                    b.logits.as_entire_binding(),
                    pair_val.as_entire_binding(),
                    pair_idx.as_entire_binding(),
                ],
                workgroups: split_workgroups(n_groups, max_dim),
            },
        )?);
        group_offset += n_groups;
    }
    let stage2 = Kernel::new(
        ctx,
        cache,
        KernelSpec {
            label: format!("head argmax stage 2 over {n_pairs}"),
            shader: Shader::Argmax,
            entry: "main",
            overrides: &[
                ("N", n_pairs as f64),
                ("ITEMS", n_pairs.div_ceil(WG) as f64),
                ("USE_IDX", 1.0),
            ],
            bindings: &[
                pair_val.as_entire_binding(),
                pair_idx.as_entire_binding(),
                result_val.as_entire_binding(),
                b.token.as_entire_binding(),
            ],
            workgroups: [1, 1, 1],
        },
    )?;
    Ok(HeadArgmax {
        parts,
        stage2,
        pair_val,
        pair_idx,
        result_val,
    })
}

/// CPU reference: logits `W rmsnorm(x) * norm` for GGUF Q1_0 `w` of shape `[x.len(), n]`, and
/// their argmax (lowest id on ties).
pub fn run_cpu(x: &[f32], norm: &[f32], eps: f32, w: &[u8], n: usize) -> (Vec<f32>, u32) {
    let mut xb = vec![0.0; x.len()];
    rmsnorm::run_cpu(x, norm, eps, &mut xb);
    let mut logits = vec![0.0; n];
    matvec_q1_0::run_cpu(w, x.len(), n, &xb, &mut logits, false);
    let id = argmax(&logits);
    (logits, id)
}
