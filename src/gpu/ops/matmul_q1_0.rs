//! Batched Q1_0 / Q2_0 matrix multiply for prefill: `Y[T, N] (+)= X[T, K] . W[N, K]^T`
//! (`shaders/matmul_q1_0.wgsl` / `matmul_q2_0.wgsl`, by the weight's format; `matmul_f32.wgsl`
//! for dense rows; `matmul_q1_0_q8.wgsl` for Q1_0 on the context's [`KernelPath::Q8`]). Each
//! workgroup reads its weight rows once per 16 tokens.
//! CPU reference: [`crate::cpu::ops::Matrix::matvec`] per token (`matvec_q8` for the q8 path).

use crate::gpu::buffers::{StepParams, check_binding};
use crate::gpu::context::{GpuContext, KernelPath};
use crate::gpu::kernel::{Kernel, KernelSpec, Op, PipelineCache, Shader};
use crate::gpu::q1_0::{Q1_0Weight, WeightFormat};
use crate::{Error, Result};

/// Weight rows per workgroup; must equal `WG * RPT` in the shader.
const ROWS_PER_WORKGROUP: usize = 128;
/// Weight rows per workgroup of `matmul_f32.wgsl` (`WG` there).
const DENSE_ROWS_PER_WORKGROUP: usize = 64;
/// Tokens per workgroup; must equal `TB` in the shader.
pub const TOKENS_PER_WORKGROUP: usize = 16;

/// Token tiles of the [`MatmulQ1_0Bindings::small_tiles`] kernels (packed formats).
const SMALL_TILES: [u32; 4] = [1, 2, 4, 8];

/// One kernel per weight part (see [`Q1_0Weight`]), encoded back to back.
#[derive(Clone, Debug)]
pub struct MatmulQ1_0 {
    /// One kernel per weight part, 16 tokens per workgroup.
    pub kernels: Vec<Kernel>,
    /// With [`MatmulQ1_0Bindings::small_tiles`]: (tokens per workgroup, one kernel per part)
    /// for 1, 2, 4 and 8 tokens, smallest first.
    pub small: Vec<(u32, Vec<Kernel>)>,
}

/// Only the token tiles the step's `n_tokens` (<= the built maximum) need; tiles past
/// `step.n_tokens` would exit at once. A step of at most 8 tokens takes the smallest small
/// tile that holds it, when built.
impl Op for MatmulQ1_0 {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        let n = step.n_tokens;
        if let Some((_, kernels)) = self.small.iter().find(|(t, _)| n <= *t) {
            for k in kernels {
                k.dispatch_groups(pass, [k.workgroups[0], 1, 1]);
            }
            return;
        }
        let tiles = n.div_ceil(TOKENS_PER_WORKGROUP as u32);
        for k in &self.kernels {
            k.dispatch_groups(pass, [k.workgroups[0], tiles.min(k.workgroups[1]), 1]);
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
    /// Tokens it is built for (workgroups past `step.n_tokens` exit).
    pub max_tokens: usize,
    /// `y += W x` instead of `y = W x` (fused residual: `x += W xb`).
    pub accumulate: bool,
    /// Also build kernels taking 1, 2, 4 or 8 tokens per workgroup (packed formats), for
    /// steps of few rows (batched decode): a row's result is the same bits either way, and an
    /// ALU-bound adapter does not compute 16 token lanes for 2 rows.
    pub small_tiles: bool,
}

impl MatmulQ1_0 {
    /// Builds the kernels for up to `b.max_tokens` tokens.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        b: &MatmulQ1_0Bindings<'_>,
    ) -> Result<MatmulQ1_0> {
        let (w, max_tokens, accumulate) = (b.w, b.max_tokens, b.accumulate);
        let block = w.format.block();
        if !w.k.is_multiple_of(block) {
            return Err(Error::BadTensor {
                name: w.name.clone(),
                reason: format!("row length {} is not a multiple of {block}", w.k),
            });
        }
        let (shader, rows_per_workgroup) = match w.format {
            WeightFormat::Q1_0 if ctx.kernel_path == KernelPath::Q8 => {
                (Shader::MatmulQ1_0Q8, ROWS_PER_WORKGROUP)
            }
            WeightFormat::Q1_0 => (Shader::MatmulQ1_0, ROWS_PER_WORKGROUP),
            WeightFormat::Q2_0 => (Shader::MatmulQ2_0, ROWS_PER_WORKGROUP),
            WeightFormat::F32 => (Shader::MatmulF32, DENSE_ROWS_PER_WORKGROUP),
        };
        let t = max_tokens.max(1);
        check_binding(b.x, 4 * t * w.k, &format!("matmul_q1_0 {} x", w.name))?;
        check_binding(b.y, 4 * t * w.n, &format!("matmul_q1_0 {} y", w.name))?;
        let build = |tokens: u32| {
            let token_groups = max_tokens.max(1).div_ceil(tokens as usize) as u32;
            w.parts
                .iter()
                .map(|part| {
                    let mut bindings = vec![b.step.as_entire_binding(), b.x.as_entire_binding()];
                    bindings.extend(part.bindings());
                    bindings.push(b.y.as_entire_binding());
                    let mut overrides = vec![
                        ("K", w.k as f64),
                        ("N", w.n as f64),
                        ("ROW0", part.row0 as f64),
                        ("N_ROWS", part.n_rows as f64),
                        ("ACCUMULATE", if accumulate { 1.0 } else { 0.0 }),
                    ];
                    if w.format.has_scales() {
                        overrides.push(("W_ROW0", part.w_row0 as f64));
                        overrides.push(("TOKENS", tokens as f64));
                    }
                    Kernel::new(
                        ctx,
                        cache,
                        KernelSpec {
                            label: format!("{} {}[{}..]", shader.name(), w.name, part.row0),
                            shader,
                            entry: "main",
                            overrides: &overrides,
                            bindings: &bindings,
                            workgroups: [
                                part.n_rows.div_ceil(rows_per_workgroup) as u32,
                                token_groups,
                                1,
                            ],
                        },
                    )
                })
                .collect::<Result<Vec<_>>>()
        };
        let kernels = build(TOKENS_PER_WORKGROUP as u32)?;
        let small = match b.small_tiles && w.format.has_scales() {
            true => SMALL_TILES
                .iter()
                .map(|&t| Ok((t, build(t)?)))
                .collect::<Result<Vec<_>>>()?,
            false => Vec::new(),
        };
        Ok(MatmulQ1_0 { kernels, small })
    }
}
