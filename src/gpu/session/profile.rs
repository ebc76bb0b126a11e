//! Where a decode step's GPU time goes: the forward's own step list ([`super::forward`]), each
//! run of steps of one category in its own compute pass with timestamp queries, summed by
//! category over the layers.
//!
//! A debug/profile path: one pass per kernel group costs barriers and timestamp writes the
//! normal decode (one pass, one submit) does not pay, so the total is a little above a real
//! step's GPU time. The result of the step is the same: it advances the session like `feed`.

use super::Session;
use super::forward::{self, Step};
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

/// Kernel categories of a decode step of the fused plan ([`super::DecodePlan::Fused`]).
pub const FUSED_PROFILE_CATEGORIES: [&str; 8] = [
    "embed",
    "qkv",
    "attention",
    "wo",
    "gate/up",
    "down",
    "head",
    "argmax",
];

/// Consecutive steps of one category: one timed pass each.
fn runs(steps: &[Step]) -> impl Iterator<Item = &[Step]> {
    steps.chunk_by(|a, b| a.category == b.category)
}

impl Session {
    /// The categories [`Self::profile_decode`] reports for this session's decode plan:
    /// [`FUSED_PROFILE_CATEGORIES`] or [`PROFILE_CATEGORIES`].
    pub fn profile_categories(&self) -> &'static [&'static str] {
        match self.decode_plan() {
            super::DecodePlan::Fused => &FUSED_PROFILE_CATEGORIES,
            super::DecodePlan::Unfused | super::DecodePlan::Auto => &PROFILE_CATEGORIES,
        }
    }

    /// Runs one decode step of `token` at position n_past with every op category in its own
    /// timed compute pass and advances the session as `feed(&[token])` would (`greedy`,
    /// `logits` and `top_k` then see this position). Returns milliseconds of GPU time per
    /// category of [`Self::profile_categories`], in that order, summed over the layers.
    ///
    /// Fails with [`Error::Gpu`] ("timestamps unsupported") when the adapter has no timestamp
    /// queries.
    pub async fn profile_decode(&mut self, token: u32) -> Result<Vec<(String, f64)>> {
        let ctx = self.model.ctx.clone();
        let capacity = {
            let (layers, head, _) = self.decode_steps();
            runs(layers).count() + runs(head).count()
        };
        let Some(mut timer) = PassTimer::new(&ctx, capacity as u32) else {
            return Err(Error::Gpu(format!(
                "timestamps unsupported: adapter `{}` has no timestamp queries, cannot profile",
                ctx.info.name
            )));
        };
        self.check_idle()?;
        self.check_tokens(&[token])?;
        self.refeed = None;
        let step = self.write_step(&[token]);

        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("profiled decode"),
            });
        // The decode step's own list, in order; only the pass boundaries differ.
        let (layers, head, token_buffer) = self.decode_steps();
        for run in runs(layers).chain(runs(head)) {
            let label = run[0].category;
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: timer.pass(label),
            });
            forward::encode(run, &mut pass, &step);
        }
        self.token_readback
            .encode_copy(&mut encoder, token_buffer, 0, 4);
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
        Ok(self
            .profile_categories()
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
