//! Batched Q1_0 matrix multiply for prefill: `Y[T, N] (+)= X[T, K] . W[N, K]^T`
//! (`shaders/matmul_q1_0.wgsl`). Each workgroup reads its 128 weight rows once per 16 tokens.

use crate::gpu::buffers::check_binding;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader};
use crate::gpu::q1_0::Q1_0Weight;
use crate::quant::q1_0::QK1_0;
use crate::{Error, Result};

/// Weight rows per workgroup; must equal `WG * RPT` in the shader.
const ROWS_PER_WORKGROUP: usize = 128;
/// Tokens per workgroup; must equal `TB` in the shader.
pub const TOKENS_PER_WORKGROUP: usize = 16;

/// One kernel per weight part (see [`Q1_0Weight`]), encoded back to back.
#[derive(Clone, Debug)]
pub struct MatmulQ1_0 {
    /// One kernel per weight part.
    pub kernels: Vec<Kernel>,
}

impl MatmulQ1_0 {
    /// Records every kernel for the built maximum of tokens (tiles past `step.n_tokens` exit).
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for k in &self.kernels {
            k.encode(pass);
        }
    }

    /// Encodes only the token tiles that `n_tokens` (<= the built maximum) needs.
    pub fn encode_tokens(&self, pass: &mut wgpu::ComputePass<'_>, n_tokens: u32) {
        let tiles = n_tokens.div_ceil(TOKENS_PER_WORKGROUP as u32);
        for k in &self.kernels {
            k.encode_groups(pass, [k.workgroups[0], tiles.min(k.workgroups[1]), 1]);
        }
    }
}

/// The buffers the kernels bind.
pub struct MatmulQ1_0Bindings<'a> {
    /// `StepParams` uniform: n_tokens.
    pub step: &'a wgpu::Buffer,
    /// Input rows: (max_tokens, k) f32.
    pub x: &'a wgpu::Buffer,
    /// The weight, `[k, n]`: n rows of k.
    pub w: &'a Q1_0Weight,
    /// Output rows: (max_tokens, n) f32.
    pub y: &'a wgpu::Buffer,
}

/// Which rows of a weight fused for decode a prefill matmul reads (see `W_ROW0` / `W_PAIRED` in
/// the WGSL): `n` output rows starting at weight row `first`, either contiguous (q, k, v of the
/// q|k|v weight) or in the gate/up interleave of [`super::ffn_gate_up::interleaved_row`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowView {
    /// Output rows (the logical weight's n).
    pub n: usize,
    /// Weight row of output row 0.
    pub first: usize,
    /// Rows in the gate/up interleave instead of contiguous.
    pub paired: bool,
}

/// Builds the kernels for up to `max_tokens` tokens (workgroups past `step.n_tokens` exit).
/// With `accumulate` the result is added to `y` (fused residual: `x += W xb`).
pub fn build(
    ctx: &GpuContext,
    cache: &PipelineCache,
    max_tokens: usize,
    accumulate: bool,
    b: &MatmulQ1_0Bindings<'_>,
) -> Result<MatmulQ1_0> {
    build_view(ctx, cache, max_tokens, accumulate, b, None)
}

/// As [`build`], reading only `view`'s rows of a single-part fused weight (`None`: all rows).
pub fn build_view(
    ctx: &GpuContext,
    cache: &PipelineCache,
    max_tokens: usize,
    accumulate: bool,
    b: &MatmulQ1_0Bindings<'_>,
    view: Option<RowView>,
) -> Result<MatmulQ1_0> {
    let w = b.w;
    if let Some(v) = view {
        let last = match v.paired {
            true => super::ffn_gate_up::interleaved_row(v.n.saturating_sub(1), false) + v.first,
            false => v.first + v.n.saturating_sub(1),
        };
        if w.parts.len() != 1 || v.n == 0 || last >= w.n {
            return Err(Error::InvalidArgument(format!(
                "matmul view {v:?} of {} ({} rows, {} parts)",
                w.name,
                w.n,
                w.parts.len()
            )));
        }
    }
    let n_out = view.map_or(w.n, |v| v.n);
    if !w.k.is_multiple_of(QK1_0) {
        return Err(Error::BadTensor {
            name: w.name.clone(),
            reason: format!("row length {} is not a multiple of {QK1_0}", w.k),
        });
    }
    let t = max_tokens.max(1);
    check_binding(b.x, 4 * t * w.k, &format!("matmul_q1_0 {} x", w.name))?;
    check_binding(b.y, 4 * t * n_out, &format!("matmul_q1_0 {} y", w.name))?;
    let token_groups = max_tokens.max(1).div_ceil(TOKENS_PER_WORKGROUP) as u32;
    let kernels = w
        .parts
        .iter()
        .map(|part| {
            let (row0, n_rows) = match view {
                Some(_) => (0, n_out),
                None => (part.row0, part.n_rows),
            };
            let v = view.unwrap_or(RowView {
                n: n_out,
                first: 0,
                paired: false,
            });
            Kernel::new(
                ctx,
                cache,
                KernelSpec {
                    label: format!("matmul_q1_0 {}[{}..]", w.name, row0 + v.first),
                    shader: Shader::MatmulQ1_0,
                    entry: "main",
                    overrides: &[
                        ("K", w.k as f64),
                        ("N", n_out as f64),
                        ("ROW0", row0 as f64),
                        ("N_ROWS", n_rows as f64),
                        ("ACCUMULATE", if accumulate { 1.0 } else { 0.0 }),
                        ("W_ROW0", v.first as f64),
                        ("W_PAIRED", if v.paired { 1.0 } else { 0.0 }),
                    ],
                    bindings: &[
                        b.step.as_entire_binding(),
                        b.x.as_entire_binding(),
                        part.signs.as_entire_binding(),
                        part.scales.as_entire_binding(),
                        b.y.as_entire_binding(),
                    ],
                    workgroups: [n_rows.div_ceil(ROWS_PER_WORKGROUP) as u32, token_groups, 1],
                },
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MatmulQ1_0 { kernels })
}

/// CPU reference: `w` is the dequantized weight (n, k) row-major, `x` is (n_tokens, k);
/// returns `y` (n_tokens, n), added to `residual` when given.
pub fn run_cpu(w: &[f32], k: usize, x: &[f32], residual: Option<&[f32]>) -> Vec<f32> {
    let n = w.len() / k;
    let n_tokens = x.len() / k;
    let mut y = vec![0.0f32; n_tokens * n];
    for t in 0..n_tokens {
        let xt = &x[t * k..(t + 1) * k];
        for (r, row) in w.chunks_exact(k).enumerate() {
            let dot: f64 = row
                .iter()
                .zip(xt)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum();
            y[t * n + r] = dot as f32 + residual.map_or(0.0, |res| res[t * n + r]);
        }
    }
    y
}
