//! Token embedding: `x[t, :] = token_embd[tokens[t], :]` from a Q1_0 table (`embed_q1_0.wgsl`).

use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader};
use crate::gpu::q1_0::Q1_0Weight;
use crate::quant::q1_0;
use crate::{Error, Result};

/// One kernel per table part; encode them all (exactly one part holds each token).
#[derive(Clone, Debug)]
pub struct EmbedQ1_0 {
    /// One kernel per part of the table.
    pub kernels: Vec<Kernel>,
}

impl EmbedQ1_0 {
    /// Gathers `n_tokens` rows: `tokens` holds n_tokens u32 ids (checked < vocab by the caller),
    /// `x` at least n_tokens * k f32.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        table: &Q1_0Weight,    // (n_vocab, n_embd) as [k = n_embd, n = n_vocab]
        tokens: &wgpu::Buffer, // (n_tokens) u32
        x: &wgpu::Buffer,      // (n_tokens, n_embd) f32
        n_tokens: u32,
    ) -> Result<EmbedQ1_0> {
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

    /// Records every part's kernel.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for k in &self.kernels {
            k.encode(pass);
        }
    }

    /// Gathers only the first `n_tokens` tokens (at most the built count).
    pub fn encode_tokens(&self, pass: &mut wgpu::ComputePass<'_>, n_tokens: u32) {
        for k in &self.kernels {
            k.encode_groups(pass, [k.workgroups[0], n_tokens, 1]);
        }
    }
}

/// CPU reference from GGUF Q1_0 bytes: row `token` of a `[k, n]` table into `x` (k values).
pub fn run_cpu(table_bytes: &[u8], k: usize, token: usize, x: &mut [f32]) {
    let row_bytes = q1_0::row_bytes(k);
    q1_0::dequantize_row_q1_0(
        &table_bytes[token * row_bytes..(token + 1) * row_bytes],
        &mut x[..k],
    );
}
