//! [`Engine`] for the GPU [`Session`]: feeding, read-backs (greedy, top-k, logits), truncation
//! and device-resident generation (`queued.rs`).

use super::Session;
use crate::engine::{Engine, check_truncate, top_k_of};
use crate::error::{Error, Result};
use crate::sampler::SamplerConfig;

impl Engine for Session {
    fn n_vocab(&self) -> usize {
        self.model.config.n_vocab
    }

    fn n_ctx(&self) -> usize {
        self.kv.n_ctx
    }

    fn n_past(&self) -> usize {
        self.n_past
    }

    async fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        self.check_idle()?;
        self.pending_refeed = false;
        self.feed_tokens(tokens)
    }

    async fn logits(&mut self) -> Result<Vec<f32>> {
        self.check_idle()?;
        self.ensure_head().await?;
        self.check_head()?;
        let ctx = &*self.model.ctx;
        let n = self.model.config.n_vocab;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("logits readback"),
            });
        self.logits_readback
            .encode_copy(&mut encoder, &self.a.logits, 0, n as u64 * 4);
        ctx.queue.submit([encoder.finish()]);
        self.stats.host_waits += 1;
        self.logits_readback.read(ctx, n).await
    }

    async fn greedy(&mut self) -> Result<u32> {
        self.check_idle()?;
        self.ensure_head().await?;
        self.check_head()?;
        self.stats.host_waits += 1;
        let id = self.token_readback.read::<u32>(&self.model.ctx, 1).await?[0];
        if id as usize >= self.model.config.n_vocab {
            return Err(Error::Gpu(format!(
                "argmax returned {id}: logits are not finite"
            )));
        }
        Ok(id)
    }

    /// Up to `topk::MAX_K` candidates are selected on the GPU and 512 bytes read back; a larger `k`
    /// reads back all logits.
    async fn top_k(&mut self, k: usize) -> Result<Vec<(u32, f32)>> {
        self.check_idle()?;
        self.ensure_head().await?;
        self.check_head()?;
        if k > self.head.topk.k as usize {
            let logits = self.logits().await?;
            return Ok(top_k_of(&logits, k));
        }
        let ctx = &*self.model.ctx;
        let kk = self.head.topk.k as u64;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("top-k"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("top-k"),
                timestamp_writes: None,
            });
            self.head.topk.encode(&mut pass);
        }
        let (values, ids) = self.head.topk.result();
        let staging = &self.topk_readback.staging;
        encoder.copy_buffer_to_buffer(values, 0, staging, 0, kk * 4);
        encoder.copy_buffer_to_buffer(ids, 0, staging, kk * 4, kk * 4);
        ctx.queue.submit([encoder.finish()]);
        self.stats.host_waits += 1;
        let words = self.topk_readback.read::<u32>(ctx, 2 * kk as usize).await?;
        let (values, ids) = words.split_at(kk as usize);
        Ok(ids
            .iter()
            .zip(values)
            .filter(|&(&id, _)| (id as usize) < self.model.config.n_vocab)
            .map(|(&id, &v)| (id, f32::from_bits(v)))
            .take(k)
            .collect())
    }

    fn truncate(&mut self, n_past: usize) -> Result<()> {
        self.check_idle()?;
        check_truncate(n_past, self.n_past)?;
        if n_past < self.n_past {
            self.head_valid = false;
            self.pending_refeed = false;
        }
        self.n_past = n_past;
        self.history.truncate(n_past);
        Ok(())
    }

    async fn begin_queued(&mut self, config: &SamplerConfig, history: &[u32]) -> Result<bool> {
        self.begin_queued_impl(config, history).await
    }

    fn queue_step(&mut self) -> Result<()> {
        self.queue_step_impl()
    }

    async fn next_queued(&mut self) -> Result<u32> {
        self.next_queued_impl().await
    }

    async fn end_queued(&mut self, n_past: usize) -> Result<()> {
        self.end_queued_impl(n_past).await
    }
}
