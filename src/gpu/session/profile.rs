//! Where a decode step's GPU time goes: the same kernels as [`Session`]'s decode path, each in
//! its own compute pass with timestamp queries, summed by op category over the layers.
//!
//! A debug/profile path: one pass per kernel group costs barriers and timestamp writes the
//! normal decode (one pass, one submit) does not pay, so the total is a little above a real
//! step's GPU time. The result of the step is the same: it advances the session like `feed`.

use super::Session;
use crate::error::{Error, Result};
use crate::gpu::timer::PassTimer;

/// Op categories of a decode step in forward order, as [`Session::profile_decode`] reports them.
pub const PROFILE_CATEGORIES: [&str; 13] = [
    "embed",
    "attn_norm",
    "qkv matvec",
    "rope+kv",
    "attention",
    "wo matvec",
    "ffn_norm",
    "gate/up matvec",
    "silu_mul",
    "down matvec",
    "head norm",
    "head matvec",
    "argmax",
];

/// Timed passes per layer (attn_norm .. down matvec) and outside the layers (embed, head).
const PASSES_PER_LAYER: usize = 9;
const PASSES_OUTSIDE_LAYERS: usize = 4;

impl Session {
    /// Runs one decode step of `token` at position n_past with every op category in its own
    /// timed compute pass and advances the session as `feed(&[token])` would (`greedy`,
    /// `logits` and `top_k` then see this position). Returns milliseconds of GPU time per
    /// category of [`PROFILE_CATEGORIES`], in that order, summed over the layers.
    ///
    /// Fails with [`Error::Gpu`] ("timestamps unsupported") when the adapter has no timestamp
    /// queries.
    pub async fn profile_decode(&mut self, token: u32) -> Result<Vec<(String, f64)>> {
        let ctx = &*self.model.ctx;
        let capacity = PASSES_PER_LAYER * self.layers.len() + PASSES_OUTSIDE_LAYERS;
        let Some(mut timer) = PassTimer::new(ctx, capacity as u32) else {
            return Err(Error::Gpu(format!(
                "timestamps unsupported: adapter `{}` has no timestamp queries, cannot profile",
                ctx.info.name
            )));
        };
        self.check_tokens(&[token])?;
        self.write_step(&[token]);

        let n_ff = self.model.config.n_ff as u32;
        let n_kv = (self.n_past + 1) as u32;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("profiled decode"),
            });
        {
            let mut timed = |label: &'static str, ops: &dyn Fn(&mut wgpu::ComputePass<'_>)| {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(label),
                    timestamp_writes: timer.pass(label),
                });
                ops(&mut pass);
            };
            // The same kernels, in the same order, as `encode_decode` and the head.
            timed("embed", &|p| self.embed.encode_tokens(p, 1));
            for l in &self.layers {
                let w = &l.decode;
                timed("attn_norm", &|p| l.attn_norm.encode_rows(p, 1));
                timed("qkv matvec", &|p| {
                    w.wq.encode(p);
                    w.wk.encode(p);
                    w.wv.encode(p);
                });
                timed("rope+kv", &|p| l.attention.rope_decode.encode(p));
                timed("attention", &|p| l.attention.decode.encode_kv(p, n_kv));
                timed("wo matvec", &|p| w.wo.encode(p));
                timed("ffn_norm", &|p| l.ffn_norm.encode_rows(p, 1));
                timed("gate/up matvec", &|p| {
                    w.w_gate.encode(p);
                    w.w_up.encode(p);
                });
                timed("silu_mul", &|p| l.silu_mul.encode_len(p, n_ff));
                timed("down matvec", &|p| w.w_down.encode(p));
            }
            timed("head norm", &|p| self.head.norm_decode.encode(p));
            timed("head matvec", &|p| self.head.output.encode(p));
            timed("argmax", &|p| self.head.argmax.encode(p));
        }
        self.token_readback
            .encode_copy(&mut encoder, &self.head.argmax.result, 0, 4);
        timer.resolve(&mut encoder);
        ctx.queue.submit([encoder.finish()]);
        self.n_past += 1;
        self.head_valid = true;

        let passes = timer.read(&self.model.ctx).await?;
        if passes.len() != capacity {
            return Err(Error::Gpu(format!(
                "profile: {} timed passes read back, expected {capacity}",
                passes.len()
            )));
        }
        Ok(PROFILE_CATEGORIES
            .iter()
            .map(|&category| {
                let ms = passes
                    .iter()
                    .filter(|(label, _)| label == category)
                    .map(|(_, ms)| ms)
                    .sum();
                (category.to_string(), ms)
            })
            .collect())
    }
}
