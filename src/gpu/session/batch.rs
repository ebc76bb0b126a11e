//! Continuous batching on one GPU model: [`GpuBatch`], a [`BatchEngine`] whose decode step
//! reads every weight once for all the sequences it advances.
//!
//! Each slot is a [`Session`] (its own KV cache, activations, prefill and read-back). A batched
//! decode step of B sequences is recorded as:
//!
//! ```text
//! embed B tokens -> x (B rows)
//! per layer:
//!   attn_norm, q/k/v matmuls over the B rows               (BatchForward::pre, one pass)
//!   copy row i of q, k, v into slot i's q, k, v
//!   per slot: QK-norm + RoPE + cache write, decode attention over its own cache
//!   copy slot i's attention output into row i of xb
//!   Wo (+=), ffn_norm, gate/up, silu*up, down (+=) matmuls over the B rows   (BatchForward::post)
//! final norm + LM head matmul -> logits (B rows); copy row i into slot i's logits
//! per slot: argmax -> its tokens[0] and token read-back
//! ```
//!
//! The linear layers are the prefill matmul kernels (a weight tile is read once per 16 rows),
//! whose result for a row does not depend on the other rows, so a sequence's tokens are the
//! same alone and in any batch (tests/gpu_batch.rs). Attention stays per sequence: its cost is
//! each sequence's own cache. Afterwards each slot's logits are those of its new token, and
//! [`Candidates::read`] reads them through the slot's session like any [`Engine`].

use std::sync::Arc;

use super::Session;
use super::forward::{self, Activations, BatchForward};
use crate::batch::{BatchEngine, Candidates, EnginePool};
use crate::gpu::buffers::{StepParams, storage_buffer};
use crate::gpu::kernel::Op;
use crate::gpu::model::GpuModel;
use crate::gpu::session::SessionOptions;
use crate::sampler::CandidateRequest;
use crate::{Error, Result};

/// `n_slots` sessions over one model, decoded together (see the module docs).
pub struct GpuBatch {
    model: Arc<GpuModel>,
    /// The slots' sessions: prefill, truncate and read-back go through the pool as they would
    /// for `EnginePool`; only `decode` is batched here.
    pool: EnginePool<Session>,
    /// Batch activations: one row per sequence of a decode step.
    a: Activations,
    /// (n_slots, n_vocab) f32: the LM head's output rows.
    logits: wgpu::Buffer,
    forward: BatchForward,
    /// Per slot: indices in its `forward.layers` of each layer's rope+kv and attention steps.
    attention_steps: Vec<(usize, usize)>,
}

impl GpuBatch {
    /// `n_slots` sessions of `opts` (each with its own `opts.n_ctx` cache) over `model`.
    pub fn new(model: Arc<GpuModel>, n_slots: usize, opts: SessionOptions) -> Result<GpuBatch> {
        if n_slots == 0 {
            return Err(Error::InvalidArgument(
                "a GPU batch needs at least one slot".into(),
            ));
        }
        let slots = (0..n_slots)
            .map(|_| Session::new(model.clone(), opts))
            .collect::<Result<Vec<_>>>()?;
        let ctx = &*model.ctx;
        let c = &model.config;
        let a = Activations::new(ctx, &model, n_slots)?;
        let logits = storage_buffer(ctx, "batch logits", n_slots as u64 * c.n_vocab as u64 * 4)?;
        let forward = BatchForward::new(&model, &a, &logits, n_slots)?;
        // The session's unfused list has each layer's "rope+kv" then "attention" step.
        let layers = &slots[0].forward.layers;
        let find = |name: &str| -> Vec<usize> {
            (0..layers.len())
                .filter(|&i| layers[i].category == name)
                .collect()
        };
        let (rope, attend) = (find("rope+kv"), find("attention"));
        if rope.len() != c.n_layer || attend.len() != c.n_layer {
            return Err(Error::InvalidArgument(format!(
                "the session's forward has {} rope and {} attention steps for {} layers",
                rope.len(),
                attend.len(),
                c.n_layer
            )));
        }
        let attention_steps = rope.into_iter().zip(attend).collect();
        model.ctx.take_error()?;
        Ok(GpuBatch {
            model,
            pool: EnginePool::new(slots)?,
            a,
            logits,
            forward,
            attention_steps,
        })
    }

    /// The session of one slot.
    pub fn session(&self, slot: usize) -> Option<&Session> {
        self.pool.engines.get(slot)
    }

    /// Checks a decode batch: distinct existing slots, idle, with room and valid tokens.
    fn check_batch(&self, batch: &[(usize, u32)]) -> Result<()> {
        let n = self.pool.engines.len();
        if batch.len() > n {
            return Err(Error::InvalidArgument(format!(
                "a decode step of {} sequences over {n} slots",
                batch.len()
            )));
        }
        let mut seen = vec![false; n];
        for &(slot, token) in batch {
            let Some(s) = self.pool.engines.get(slot) else {
                return Err(Error::InvalidArgument(format!(
                    "slot {slot} does not exist ({n} slots)"
                )));
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(Error::InvalidArgument(format!(
                    "slot {slot} appears twice in one decode step"
                )));
            }
            s.check_idle()?;
            s.check_tokens(&[token])?;
        }
        Ok(())
    }

    /// Records and submits one decode step of `batch` (checked).
    fn submit_decode(&mut self, batch: &[(usize, u32)]) -> Result<()> {
        let ctx = self.model.ctx.clone();
        let c = &self.model.config;
        let rows = batch.len();
        let step = StepParams::new(0, rows);
        let tokens: Vec<u32> = batch.iter().map(|&(_, t)| t).collect();
        ctx.queue
            .write_buffer(&self.a.step, 0, bytemuck::bytes_of(&step));
        ctx.queue
            .write_buffer(&self.a.tokens, 0, bytemuck::cast_slice(&tokens));
        let mut slot_steps = Vec::with_capacity(rows);
        for &(slot, _) in batch {
            let s = &mut self.pool.engines[slot];
            // A rolled-back slot's entry at n_past - 1 is already right; a new token follows it.
            s.refeed = None;
            let st = StepParams::new(s.n_past, 1);
            ctx.queue
                .write_buffer(&s.a.step, 0, bytemuck::bytes_of(&st));
            slot_steps.push(st);
        }
        let (q_row, kv_row) = (c.q_dim() as u64 * 4, c.kv_dim() as u64 * 4);
        let vocab_row = c.n_vocab as u64 * 4;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("batch decode"),
            });
        let pass = |encoder: &mut wgpu::CommandEncoder, label: &str| {
            encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(label),
                    timestamp_writes: None,
                })
                .forget_lifetime()
        };
        let mut p = pass(&mut encoder, "batch embed");
        forward::encode(&self.forward.embed, &mut p, &step);
        for (l, &(rope, attend)) in self.attention_steps.iter().enumerate() {
            forward::encode(&self.forward.pre[l], &mut p, &step);
            drop(p);
            for (i, &(slot, _)) in batch.iter().enumerate() {
                let s = &self.pool.engines[slot];
                let i = i as u64;
                encoder.copy_buffer_to_buffer(&self.a.q, i * q_row, &s.a.q, 0, q_row);
                encoder.copy_buffer_to_buffer(&self.a.k, i * kv_row, &s.a.k, 0, kv_row);
                encoder.copy_buffer_to_buffer(&self.a.v, i * kv_row, &s.a.v, 0, kv_row);
            }
            p = pass(&mut encoder, "batch attention");
            for (i, &(slot, _)) in batch.iter().enumerate() {
                let layers = &self.pool.engines[slot].forward.layers;
                layers[rope].op.encode(&mut p, &slot_steps[i]);
                layers[attend].op.encode(&mut p, &slot_steps[i]);
            }
            drop(p);
            for (i, &(slot, _)) in batch.iter().enumerate() {
                let s = &self.pool.engines[slot];
                encoder.copy_buffer_to_buffer(&s.a.xb, 0, &self.a.xb, i as u64 * q_row, q_row);
            }
            p = pass(&mut encoder, "batch layers");
            forward::encode(&self.forward.post[l], &mut p, &step);
        }
        forward::encode(&self.forward.head, &mut p, &step);
        drop(p);
        for (i, &(slot, _)) in batch.iter().enumerate() {
            let s = &self.pool.engines[slot];
            encoder.copy_buffer_to_buffer(
                &self.logits,
                i as u64 * vocab_row,
                &s.a.logits,
                0,
                vocab_row,
            );
        }
        let mut p = pass(&mut encoder, "batch argmax");
        for (i, &(slot, _)) in batch.iter().enumerate() {
            self.pool.engines[slot]
                .choose
                .encode(&mut p, &slot_steps[i]); // tokens[0] = argmax
        }
        drop(p);
        for &(slot, _) in batch {
            let s = &self.pool.engines[slot];
            s.token_readback
                .encode_copy(&mut encoder, &s.forward.token, 0, 4);
        }
        ctx.queue.submit([encoder.finish()]);
        for &(slot, _) in batch {
            let s = &mut self.pool.engines[slot];
            s.n_past += 1;
            s.head_valid = true;
        }
        ctx.take_error()
    }
}

impl BatchEngine for GpuBatch {
    fn n_slots(&self) -> usize {
        self.pool.n_slots()
    }

    fn n_vocab(&self) -> usize {
        self.pool.n_vocab()
    }

    fn n_ctx(&self) -> usize {
        self.pool.n_ctx()
    }

    fn n_past(&self, slot: usize) -> usize {
        self.pool.n_past(slot)
    }

    fn truncate(&mut self, slot: usize, n_past: usize) -> Result<()> {
        self.pool.truncate(slot, n_past)
    }

    async fn prefill(&mut self, slot: usize, tokens: &[u32]) -> Result<()> {
        self.pool.prefill(slot, tokens).await
    }

    /// One batched forward pass (the pool's own `decode` would run one pass per slot).
    async fn decode(&mut self, batch: &[(usize, u32)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.check_batch(batch)?;
        self.submit_decode(batch)
    }

    async fn candidates(
        &mut self,
        requests: &[(usize, CandidateRequest)],
    ) -> Result<Vec<Candidates>> {
        self.pool.candidates(requests).await
    }
}
