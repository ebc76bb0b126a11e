//! Decode step D4 (`shaders/ffn_gate_up.wgsl`): `hb = silu(Wgate xb) * (Wup xb)` with
//! `xb = rmsnorm(x) * ffn_norm` folded in, over gate and up rows interleaved at load time.

use crate::gpu::buffers::check_binding;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader, split_workgroups};
use crate::gpu::ops::fused::{RowPlan, check_input, single_part};
use crate::gpu::ops::{matvec_q1_0, rmsnorm, silu_mul};
use crate::gpu::q1_0::Q1_0Weight;
use crate::quant::q1_0::{QK1_0, row_bytes};
use crate::{Error, Result};

/// Gate and up as one `[k, 2 * n_ff]` tensor whose rows go in fours: gate rows 2p, 2p+1, then
/// up rows 2p, 2p+1 (so a group of 4 rows in the kernel yields both factors of two outputs).
/// `gate` and `up` are GGUF Q1_0 bytes of `[k, n_ff]`; `n_ff` must be even.
pub fn interleave_weights(gate: &[u8], up: &[u8], k: usize, n_ff: usize) -> Result<Vec<u8>> {
    let row = row_bytes(k);
    if !k.is_multiple_of(QK1_0)
        || !n_ff.is_multiple_of(2)
        || gate.len() != row * n_ff
        || up.len() != gate.len()
    {
        return Err(Error::InvalidArgument(format!(
            "gate/up interleave: [{k}, {n_ff}] needs an even n_ff and {} bytes each, got {} and {}",
            row * n_ff,
            gate.len(),
            up.len()
        )));
    }
    let mut out = Vec::with_capacity(2 * gate.len());
    for (g, u) in gate.chunks_exact(2 * row).zip(up.chunks_exact(2 * row)) {
        out.extend_from_slice(g);
        out.extend_from_slice(u);
    }
    Ok(out)
}

/// The weight row of gate (`up = false`) or up row `r` in [`interleave_weights`]'s layout.
pub fn interleaved_row(r: usize, up: bool) -> usize {
    4 * (r / 2) + r % 2 + if up { 2 } else { 0 }
}

/// The buffers one layer's kernel binds.
pub struct FfnGateUpBindings<'a> {
    /// Residual stream: (n_embd) f32.
    pub x: &'a wgpu::Buffer,
    /// ffn_norm weight: (n_embd) f32.
    pub norm: &'a wgpu::Buffer,
    /// [`interleave_weights`] of the layer: (2 * n_ff, n_embd).
    pub w: &'a Q1_0Weight,
    /// Output `silu(gate) * up`: (n_ff) f32.
    pub hb: &'a wgpu::Buffer,
}

/// Builds one layer's kernel.
pub fn build(
    ctx: &GpuContext,
    cache: &PipelineCache,
    eps: f32,
    b: &FfnGateUpBindings<'_>,
) -> Result<Kernel> {
    if !b.w.n.is_multiple_of(4) {
        return Err(Error::InvalidArgument(format!(
            "ffn_gate_up: {} has {} rows, not 2 * an even n_ff",
            b.w.name, b.w.n
        )));
    }
    let part = single_part(b.w)?;
    check_input(b.w, b.x, "ffn_gate_up x")?;
    check_binding(b.norm, 4 * b.w.k, "ffn_gate_up norm")?;
    check_binding(b.hb, 4 * b.w.n / 2, "ffn_gate_up hb")?;
    let plan = RowPlan::new(ctx, b.w.k);
    let groups = (b.w.n as u32).div_ceil(plan.rows_per_wg);
    let mut overrides = plan.overrides();
    overrides.extend([
        ("K", b.w.k as f64),
        ("N", b.w.n as f64),
        ("EPS", eps as f64),
    ]);
    Kernel::new(
        ctx,
        cache,
        KernelSpec {
            label: format!("ffn_gate_up {}", b.w.name),
            shader: plan.shader(Shader::FfnGateUp),
            entry: "main",
            overrides: &overrides,
            bindings: &[
                b.x.as_entire_binding(),
                b.norm.as_entire_binding(),
                part.signs.as_entire_binding(),
                part.scales.as_entire_binding(),
                b.hb.as_entire_binding(),
            ],
            workgroups: split_workgroups(groups, ctx.limits.max_compute_workgroups_per_dimension),
        },
    )
}

/// CPU reference from the unfused references: `silu(Wgate xb) * (Wup xb)` with
/// `xb = rmsnorm(x) * norm`, for GGUF Q1_0 `gate`, `up` of shape `[x.len(), n_ff]`.
pub fn run_cpu(x: &[f32], norm: &[f32], eps: f32, gate: &[u8], up: &[u8], n_ff: usize) -> Vec<f32> {
    let k = x.len();
    let mut xb = vec![0.0; k];
    rmsnorm::run_cpu(x, norm, eps, &mut xb);
    let mut hb = vec![0.0; n_ff];
    let mut hb2 = vec![0.0; n_ff];
    matvec_q1_0::run_cpu(gate, k, n_ff, &xb, &mut hb, false);
    matvec_q1_0::run_cpu(up, k, n_ff, &xb, &mut hb2, false);
    silu_mul::run_cpu(&mut hb, &hb2);
    hb
}
