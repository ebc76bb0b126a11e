//! GPU-resident generation: the head (greedy argmax, or the GPU sampler) writes the chosen
//! token into `tokens[0]`, which the next step's embedding reads, so step n+1 is recorded and
//! submitted before step n's token is read. Each step first copies the token it feeds into one
//! slot of a small ring of mapped read-back buffers; the host reads the slots in order as they
//! complete (no wait while a later step is queued) and checks its stop conditions there.
//!
//! Steps that ran past a stop are rolled back: positions past the kept ones are truncated
//! (their cache entries are never read), and the logits and next choice of the last kept
//! position are restored exactly as the step-by-step path left them. Where the generation
//! began they are copied back from a snapshot; past that the last kept token is fed again when
//! its logits are next needed (a decode step is deterministic: same kernels, same inputs, same
//! bits). A next turn feeds new tokens and never pays for that.

use std::collections::VecDeque;

use super::Session;
use crate::engine::check_truncate;
use crate::error::{Error, Result};
use crate::gpu::buffers::StepParams;
use crate::gpu::kernel::Op;
use crate::sampler::SamplerConfig;

/// Read-back slots: at most this many GPU-resident steps are queued at once.
pub const RING: usize = 4;

type MapResult = std::result::Result<(), wgpu::BufferAsyncError>;

/// One queued step: its read-back slot, its submission, and the slot's map callback.
struct InFlight {
    slot: usize,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    index: wgpu::SubmissionIndex,
    mapped: futures::channel::oneshot::Receiver<MapResult>,
}

/// The ring and the state of the running generation.
pub(super) struct Queue {
    /// (RING) MAP_READ buffers of one u32: the token each step fed.
    slots: Vec<wgpu::Buffer>,
    next_slot: usize,
    in_flight: VecDeque<InFlight>,
    /// A generation is running (between `begin_queued` and `end_queued`).
    pub(super) active: bool,
    /// The GPU sampler chooses after each step's head (else the head's argmax).
    sampling: bool,
    /// n_past when the generation began.
    base: usize,
    /// The tokens the steps read so far fed, in order (position base + i).
    fed: Vec<u32>,
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
            active: false,
            sampling: false,
            base: 0,
            fed: Vec::new(),
        }
    }
}

impl Session {
    /// See [`crate::Engine::begin_queued`]: snapshots the logits, then chooses the first token
    /// into `tokens[0]` (the argmax, or the configured GPU sampler).
    pub(super) fn begin_queued_impl(
        &mut self,
        config: &SamplerConfig,
        history: &[u32],
    ) -> Result<bool> {
        self.check_idle()?;
        let sampling = !config.is_greedy() || config.penalties_active();
        if sampling && !self.forward.sample.supports(config) {
            return Ok(false);
        }
        self.ensure_head()?;
        self.check_head()?;
        let ctx = self.model.ctx.clone();
        if sampling {
            self.forward.sample.configure(&ctx, config, history)?;
        }
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("first choice"),
            });
        let bytes = self.snapshot.size();
        encoder.copy_buffer_to_buffer(&self.a.logits, 0, &self.snapshot, 0, bytes);
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("first choice"),
                timestamp_writes: None,
            });
            let step = StepParams::default();
            match sampling {
                true => self.forward.sample.encode(&mut pass, &step),
                false => self.choose.encode(&mut pass, &step),
            }
        }
        ctx.queue.submit([encoder.finish()]);
        let q = &mut self.queue;
        q.active = true;
        q.sampling = sampling;
        q.base = self.n_past;
        q.fed.clear();
        Ok(true)
    }

    /// See [`crate::Engine::queue_step`]: one write (the step's position), one submit.
    pub(super) fn queue_step_impl(&mut self) -> Result<()> {
        if !self.queue.active {
            return Err(Error::InvalidArgument(
                "queue_step: no GPU-resident generation (call begin_queued)".into(),
            ));
        }
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
        let ctx = self.model.ctx.clone();
        // The one host write of the step: its position. The token is already on the GPU.
        let step = StepParams::new(self.n_past, 1);
        ctx.queue
            .write_buffer(&self.a.step, 0, bytemuck::bytes_of(&step));
        let slot = self.queue.next_slot;
        self.queue.next_slot = (slot + 1) % RING;
        let buffer = self.queue.slots[slot].clone();
        let sampling = self.queue.sampling;
        let index = self.submit_step("resident step", &step, |s, encoder| {
            encoder.copy_buffer_to_buffer(&s.a.tokens, 0, &buffer, 0, 4); // the token it feeds
            s.encode_forward(encoder, &step, sampling)
        });
        let (tx, rx) = futures::channel::oneshot::channel();
        buffer.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.queue.in_flight.push_back(InFlight {
            slot,
            index,
            mapped: rx,
        });
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
        self.queue.fed.push(id);
        if id as usize >= self.model.config.n_vocab {
            return Err(Error::Gpu(format!(
                "the device chose token {id}: no finite logit"
            )));
        }
        Ok(id)
    }

    /// See [`crate::Engine::end_queued`].
    pub(super) async fn end_queued_impl(&mut self, n_past: usize) -> Result<()> {
        if !self.queue.active {
            return Err(Error::InvalidArgument(
                "end_queued: no GPU-resident generation".into(),
            ));
        }
        let mut first_error = None;
        while !self.queue.in_flight.is_empty() {
            if let Err(e) = self.next_queued_impl().await {
                first_error.get_or_insert(e);
            }
        }
        self.queue.active = false;
        let (base, sampled) = (self.queue.base, self.queue.sampling);
        if let Some(e) = first_error {
            // Nothing past the generation's start is known to be right.
            self.n_past = base;
            self.head_valid = false;
            return Err(e);
        }
        check_truncate(n_past, self.n_past)?;
        let ctx = self.model.ctx.clone();
        if n_past < base {
            self.n_past = n_past;
            self.head_valid = false;
        } else if n_past == base {
            // Back to where it began: that position's logits from the snapshot, its argmax
            // into the token input and the read-back, as the last feed left them.
            self.n_past = n_past;
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("restore"),
                });
            let bytes = self.snapshot.size();
            encoder.copy_buffer_to_buffer(&self.snapshot, 0, &self.a.logits, 0, bytes);
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("restore"),
                    timestamp_writes: None,
                });
                self.choose.encode(&mut pass, &StepParams::default());
            }
            self.token_readback
                .encode_copy(&mut encoder, &self.forward.token, 0, 4);
            ctx.queue.submit([encoder.finish()]);
        } else if n_past < self.n_past || sampled {
            // Later steps (or the sampler's in-place penalties) changed the logits of the
            // last kept position: feed its token again when they are needed.
            self.refeed = Some(self.queue.fed[n_past - 1 - base]);
            self.n_past = n_past;
            self.head_valid = false;
        } else {
            // Every step kept, greedy: the logits are the last step's and `tokens[0]` holds
            // their argmax; the read-back gets it as a feed would have.
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("last choice"),
                });
            self.token_readback
                .encode_copy(&mut encoder, &self.forward.token, 0, 4);
            ctx.queue.submit([encoder.finish()]);
        }
        Ok(())
    }

    /// Recomputes the logits of position n_past - 1 after a rollback by feeding its token again.
    pub(super) fn ensure_head(&mut self) -> Result<()> {
        let Some(token) = self.refeed.take() else {
            return Ok(());
        };
        self.n_past -= 1;
        self.feed_tokens(&[token])
    }
}
