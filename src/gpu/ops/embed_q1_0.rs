//! Token embedding: `x[t, :] = token_embd[tokens[t], :]` from a Q1_0 table (`embed_q1_0.wgsl`).
//! CPU reference: [`crate::cpu::ops::Q1Matrix::embed`].

use crate::gpu::buffers::StepParams;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, Op, PipelineCache, Shader};
use crate::gpu::q1_0::Q1_0Weight;
use crate::{Error, Result};

/// What the embedding reads and writes.
pub struct EmbedQ1_0Bindings<'a> {
    /// The table: (n_vocab, n_embd) as `[k = n_embd, n = n_vocab]`.
    pub table: &'a Q1_0Weight,
    /// Token ids: (max_tokens) u32, checked < vocab by the caller.
    pub tokens: &'a wgpu::Buffer,
    /// Output rows: (max_tokens, n_embd) f32.
    pub x: &'a wgpu::Buffer,
    /// Tokens it is built for (the step's `n_tokens` are gathered, at most these).
    pub max_tokens: u32,
}

/// One kernel per table part; encode them all (exactly one part holds each token).
#[derive(Clone, Debug)]
pub struct EmbedQ1_0 {
    /// One kernel per part of the table.
    pub kernels: Vec<Kernel>,
}

impl EmbedQ1_0 {
    /// Gathers up to `max_tokens` rows of the table.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        b: &EmbedQ1_0Bindings<'_>,
    ) -> Result<EmbedQ1_0> {
        let (table, tokens, x, n_tokens) = (b.table, b.tokens, b.x, b.max_tokens);
        let k = table.k as u64;
        if tokens.size() < 4 * n_tokens as u64 || x.size() < 4 * k * n_tokens as u64 {
            return Err(Error::InvalidArgument(format!(
                "embed {}: {n_tokens} tokens need {} token bytes (have {}) and {} x bytes (have {})",
                table.name,
                4 * n_tokens,
                tokens.size(),
                4 * k * n_tokens as u64,
                x.size()
            )));
        }
        let words = (table.k / 32) as u32;
        let mut kernels = Vec::with_capacity(table.parts.len());
        for part in &table.parts {
            let overrides = [
                ("K", table.k as f64),
                ("N", part.n_rows as f64),
                ("ROW0", part.row0 as f64),
            ];
            kernels.push(Kernel::new(
                ctx,
                cache,
                KernelSpec {
                    label: format!("embed {} rows {}..", table.name, part.row0),
                    shader: Shader::EmbedQ1_0,
                    entry: "main",
                    overrides: &overrides,
                    bindings: &[
                        part.signs.as_entire_binding(),
                        part.scales.as_entire_binding(),
                        tokens.as_entire_binding(),
                        x.as_entire_binding(),
                    ],
                    workgroups: [words.div_ceil(64), n_tokens.max(1), 1],
                },
            )?);
        }
        Ok(EmbedQ1_0 { kernels })
    }
}

/// Gathers the step's `n_tokens` tokens (at most the built count); exactly one part holds each.
impl Op for EmbedQ1_0 {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        for k in &self.kernels {
            let n_tokens = step.n_tokens.min(k.workgroups[1]);
            k.dispatch_groups(pass, [k.workgroups[0], n_tokens, 1]);
        }
    }
}
