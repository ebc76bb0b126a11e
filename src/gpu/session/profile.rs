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
/// The fused plan's dispatches: D1..D5 per layer, and embed + head outside the layers.
pub const PROFILE_CATEGORIES: [&str; 8] = [
    "embed",
    "norm+qkv+rope+kv (D1)",
    "attention partials (D2)",
    "merge+wo+residual (D3)",
    "norm+gate/up+silu (D4)",
    "down+residual (D5)",
    "norm+head+argmax1",
    "argmax2",
];

/// Timed passes per layer (D1 .. D5) and outside the layers (embed, head, argmax stage 2).
const PASSES_PER_LAYER: usize = 5;
const PASSES_OUTSIDE_LAYERS: usize = 3;

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
        self.check_idle()?;
        self.check_tokens(&[token])?;
        self.pending_refeed = false;
        self.history.push(token);
        self.write_step(&[token]);

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
            let [embed, d1, d2, d3, d4, d5, head, argmax2] = PROFILE_CATEGORIES;
            timed(embed, &|p| self.embed.encode_tokens(p, 1));
            for l in &self.layers {
                let d = &l.decode;
                timed(d1, &|p| d.qkv_rope.encode(p));
                timed(d2, &|p| l.attention.decode.encode_partial_kv(p, n_kv));
                timed(d3, &|p| d.wo_merge.encode(p));
                timed(d4, &|p| d.gate_up.encode(p));
                timed(d5, &|p| d.down.encode(p));
            }
            timed(head, &|p| {
                for k in &self.head.decode.parts {
                    k.encode(p);
                }
            });
            timed(argmax2, &|p| self.head.decode.stage2.encode(p));
        }
        self.token_readback
            .encode_copy(&mut encoder, &self.a.tokens, 0, 4);
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
