//! Device-resident generation: the head (greedy argmax, or the GPU sampler) writes the chosen
//! token into `tokens[0]`, which the next step's embedding reads, so step n+1 is recorded and
//! submitted before step n's token is read. Each step first copies the token it feeds into one
//! slot of a small ring of mapped read-back buffers; the host reads the slots in order as they
//! complete and checks its stop conditions there. Steps that ran past a stop are rolled back by
//! truncating the cache (entries past `n_past` are never read), and the logits of the last kept
//! position are recomputed on demand by feeding its token again (`pending_refeed`): a decode
//! step is deterministic, so the cache and logits are those of the step-by-step path.

use std::collections::VecDeque;

use super::Session;
use crate::error::{Error, Result};
use crate::gpu::buffers::StepParams;
use crate::sampler::SamplerConfig;

/// Read-back slots: at most this many steps are queued at once.
pub const RING: usize = 4;

/// One queued step: its read-back slot, submission, and the slot's map callback.
pub(super) struct InFlight {
    slot: usize,
    index: wgpu::SubmissionIndex,
    mapped: futures::channel::oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

/// The ring and the steps in flight.
pub(super) struct Queue {
    /// (RING) MAP_READ buffers of one u32: the token each step fed.
    slots: Vec<wgpu::Buffer>,
    next_slot: usize,
    in_flight: VecDeque<InFlight>,
    /// The GPU sampler runs after each step's head (else the head's argmax chooses).
    pub(super) sampling: bool,
}

impl Queue {
    pub(super) fn new(device: &wgpu::Device) -> Queue {
        let slots = (0..RING)
            .map(|i| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&format!("token ring {i}")),
                    size: 4,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        Queue {
            slots,
            next_slot: 0,
            in_flight: VecDeque::with_capacity(RING),
            sampling: false,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }
}

impl Session {
    /// See [`crate::Engine::begin_queued`].
    pub(super) async fn begin_queued_impl(
        &mut self,
        config: &SamplerConfig,
        history: &[u32],
    ) -> Result<bool> {
        if !self.queue.is_empty() {
            return Err(Error::InvalidArgument(
                "begin_queued: steps of the last queued generation are still in flight".into(),
            ));
        }
        let sampling = !config.is_greedy() || config.penalties_active();
        if sampling && !self.sampler.supports(config) {
            return Ok(false);
        }
        self.ensure_head().await?;
        self.check_head()?;
        if sampling {
            // Choose the first token from the current logits with the sampler too.
            let ctx = &*self.model.ctx;
            self.sampler.configure(ctx, config, history)?;
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("first sample"),
                });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("sample"),
                    timestamp_writes: None,
                });
                self.sampler.encode(&mut pass);
            }
            ctx.queue.submit([encoder.finish()]);
        }
        self.queue.sampling = sampling;
        Ok(true)
    }

    /// See [`crate::Engine::queue_step`].
    pub(super) fn queue_step_impl(&mut self) -> Result<()> {
        if self.queue.in_flight.len() >= RING {
            return Err(Error::InvalidArgument(format!(
                "queue_step: {RING} steps already queued; read one with next_queued first"
            )));
        }
        if self.n_past >= self.kv.n_ctx {
            return Err(Error::ContextOverflow {
                needed: self.n_past + 1,
                capacity: self.kv.n_ctx,
            });
        }
        if !self.head_valid {
            return Err(Error::InvalidArgument(
                "queue_step: no logits to choose from (call begin_queued after a feed)".into(),
            ));
        }
        let clock = crate::generate::Stopwatch::start();
        let ctx = self.model.ctx.clone();
        // The one host write of the step: its position. The token is already on the GPU.
        let step = StepParams::new(self.n_past, 1);
        ctx.queue
            .write_buffer(&self.a.step, 0, bytemuck::bytes_of(&step));
        let slot = self.queue.next_slot;
        self.queue.next_slot = (slot + 1) % RING;
        let buffer = self.queue.slots[slot].clone();
        let index = self.submit_step(1, Some(&buffer));
        let (tx, rx) = futures::channel::oneshot::channel();
        buffer.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.queue.in_flight.push_back(InFlight {
            slot,
            index,
            mapped: rx,
        });
        self.stats.host_ns += clock.elapsed().as_nanos() as u64;
        Ok(())
    }

    /// See [`crate::Engine::next_queued`].
    pub(super) async fn next_queued_impl(&mut self) -> Result<u32> {
        let Some(step) = self.queue.in_flight.pop_front() else {
            return Err(Error::InvalidArgument("next_queued: no step queued".into()));
        };
        if self.queue.in_flight.is_empty() {
            // Nothing queued behind this step: the GPU idles until the host records more.
            self.stats.host_waits += 1;
        }
        let ctx = self.model.ctx.clone();
        #[cfg(not(target_arch = "wasm32"))]
        ctx.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(step.index),
                timeout: None,
            })
            .map_err(|e| Error::Gpu(format!("poll: {e}")))?;
        #[cfg(target_arch = "wasm32")]
        let _ = step.index;
        step.mapped
            .await
            .map_err(|_| Error::Gpu("map_async callback dropped".into()))?
            .map_err(|e| Error::Gpu(format!("map_async: {e}")))?;
        let buffer = &self.queue.slots[step.slot];
        let id = {
            let view = buffer
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("get_mapped_range: {e}")))?;
            u32::from_le_bytes([view[0], view[1], view[2], view[3]])
        };
        buffer.unmap();
        ctx.take_error()?;
        if id as usize >= self.model.config.n_vocab {
            return Err(Error::Gpu(format!(
                "the device chose token {id}: logits are not finite"
            )));
        }
        self.history.push(id);
        Ok(id)
    }

    /// See [`crate::Engine::end_queued`].
    pub(super) async fn end_queued_impl(&mut self, n_past: usize) -> Result<()> {
        let mut first_error = None;
        while !self.queue.is_empty() {
            if let Err(e) = self.next_queued_impl().await {
                first_error.get_or_insert(e);
            }
        }
        let sampled = std::mem::take(&mut self.queue.sampling);
        if let Some(e) = first_error {
            return Err(e);
        }
        crate::engine::check_truncate(n_past, self.n_past)?;
        if n_past < self.n_past || sampled {
            // Later steps (or the sampler's in-place penalties) changed the logits.
            self.n_past = n_past;
            self.history.truncate(n_past);
            self.head_valid = false;
            self.pending_refeed = n_past > 0;
        }
        Ok(())
    }

    /// Recomputes the logits of position n_past - 1 after a rollback by feeding its token again.
    pub(super) async fn ensure_head(&mut self) -> Result<()> {
        if self.head_valid || !self.pending_refeed {
            return Ok(());
        }
        self.pending_refeed = false;
        let last = self.n_past - 1;
        let token = self.history[last];
        self.n_past = last;
        self.history.truncate(last);
        self.feed_tokens(&[token])
    }
}
