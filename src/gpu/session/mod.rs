//! One conversation on the GPU: activations, KV cache, and every kernel of the forward pass
//! ([`forward`]), built once at session creation. A decode step is one encoder, one compute
//! pass, one submit, and a 4-byte read-back of the chosen token, which the head also leaves in
//! the token input of the next step: GPU-resident generation ([`queued`]) submits step n+1
//! before it reads step n's token. What steps cost the host is counted in [`DecodeStats`].

use std::sync::Arc;

use crate::cache_type::CacheType;
use crate::cpu::ops::top_k;
use crate::engine::{Engine, candidates, check_argmax, check_truncate};
use crate::error::{Error, Result};
use crate::generate::Stopwatch;
use crate::gpu::buffers::{Readback, StepParams};
use crate::gpu::kernel::{Op, dispatches_recorded};
use crate::gpu::kv_cache::KvCache;
use crate::gpu::memory_plan::{MemoryLimits, MemoryPlan};
use crate::gpu::model::GpuModel;
use crate::gpu::ops::argmax::{Argmax, ArgmaxBindings};
use crate::gpu::ops::attention_decode::DecodeScratch;
use crate::gpu::ops::topk::MAX_K;
use crate::sampler::SamplerConfig;

mod batch;
mod forward;
mod profile;
mod queued;
mod stats;

use forward::{Activations, Forward, FusedDecode, Step};

pub use batch::GpuBatch;
pub use profile::{FUSED_PROFILE_CATEGORIES, PROFILE_CATEGORIES};
pub use queued::RING;
pub use stats::{DecodeStats, PerToken};

/// KV cache length when the caller does not choose one (capped by the model's context).
pub const DEFAULT_N_CTX: usize = 4096;
/// Tokens processed per prefill submit when the caller does not choose.
pub const DEFAULT_MAX_BATCH: usize = 256;

/// Sizes of a session.
#[derive(Clone, Copy, Debug)]
pub struct SessionOptions {
    /// KV cache capacity in tokens (at most the model's training context).
    pub n_ctx: usize,
    /// Most tokens one prefill submit processes; longer inputs are split.
    pub max_batch: usize,
    /// How the KV cache stores K and V.
    pub cache_type: CacheType,
    /// Which kernels a one-token step runs.
    pub decode_plan: DecodePlan,
}

/// The kernels of a decode (one-token) step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecodePlan {
    /// `Fused` on every adapter. On GPUs the chain of ~370 dependent dispatches per token is
    /// the bound the fused plan cuts (ARCHITECTURE.md, "A decode step"); on CPU adapters
    /// (lavapipe, measured) its kernels cost what the unfused ones do per weight and the norm,
    /// RoPE, merge, SiLU and argmax kernels it drops are saved. `Unfused` stays selectable.
    #[default]
    Auto,
    /// 5 kernels per layer and 3 outside them (RMSNorm folded into the matvecs, q|k|v and
    /// gate|up joined, QK-norm + RoPE + cache write in the attention prologue, the attention
    /// merge in Wo's input, argmax stage 1 in the LM head), when the model's weights allow
    /// (packed and joinable: every Bonsai file); else as `Unfused`.
    Fused,
    /// One kernel per op (13 per layer), the same list prefill runs: the reference the fused
    /// plan is tested against.
    Unfused,
}

impl DecodePlan {
    /// The name the tools accept and print.
    pub fn name(self) -> &'static str {
        match self {
            DecodePlan::Auto => "auto",
            DecodePlan::Fused => "fused",
            DecodePlan::Unfused => "unfused",
        }
    }
}

impl std::fmt::Display for DecodePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DecodePlan {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DecodePlan::Auto),
            "fused" => Ok(DecodePlan::Fused),
            "unfused" => Ok(DecodePlan::Unfused),
            other => Err(Error::InvalidArgument(format!(
                "decode plan `{other}`: expected auto, fused or unfused"
            ))),
        }
    }
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: DEFAULT_N_CTX,
            max_batch: DEFAULT_MAX_BATCH,
            cache_type: CacheType::default(),
            decode_plan: DecodePlan::default(),
        }
    }
}

impl SessionOptions {
    /// The memory plan of a session of `model` with these options on its device.
    pub fn memory_plan(&self, model: &GpuModel) -> MemoryPlan {
        MemoryPlan::for_device(&model.ctx, &model.config, model.weight_bytes(), self)
    }
}

/// A KV cache and the forward pass over a shared [`GpuModel`]; implements [`Engine`].
pub struct Session {
    model: Arc<GpuModel>,
    kv: KvCache,
    a: Activations,
    _scratch: DecodeScratch,
    plan: MemoryPlan,
    forward: Forward,
    fused: Option<FusedDecode>,
    /// logits -> tokens[0] alone: the first choice of a GPU-resident generation, and the
    /// choice again after one rolled back to where it began.
    choose: Argmax,
    /// (n_vocab) f32: the logits where the current GPU-resident generation began.
    snapshot: wgpu::Buffer,
    queue: queued::Queue,
    /// After a GPU-resident generation rolled back: the token at n_past - 1, fed again (same
    /// kernels, same bits) when its logits are next needed.
    refeed: Option<u32>,
    stats: DecodeStats,
    token_readback: Readback,
    logits_readback: Readback,
    topk_readback: Readback, // (MAX_K) f32 values, then (MAX_K) u32 ids
    max_batch: usize,
    n_past: usize,
    /// Whether the head ran for position n_past - 1 (false after truncate or before any feed).
    head_valid: bool,
}

impl Session {
    /// Checks the memory plan against the device ([`Error::ContextTooLarge`] when it does not
    /// fit), then allocates the cache and activations and builds every kernel of the forward
    /// pass.
    pub fn new(model: Arc<GpuModel>, opts: SessionOptions) -> Result<Session> {
        let c = &model.config;
        if opts.n_ctx == 0 || opts.n_ctx > c.n_ctx_train {
            return Err(Error::InvalidArgument(format!(
                "n_ctx {} must be in 1..={} (the model's context length)",
                opts.n_ctx, c.n_ctx_train
            )));
        }
        let plan = opts.memory_plan(&model);
        plan.check(&MemoryLimits::of(&model.ctx), c)?;
        let max_batch = opts.max_batch.clamp(1, opts.n_ctx);
        let ctx = &*model.ctx;
        let a = Activations::new(ctx, &model, max_batch)?;
        let kv = KvCache::new(ctx, c, opts.n_ctx, opts.cache_type)?;
        let scratch = DecodeScratch::new(ctx, kv.dims, opts.n_ctx)?;
        let forward = Forward::new(&model, &a, &kv, &scratch, max_batch)?;
        let fused_wanted = match opts.decode_plan {
            DecodePlan::Auto | DecodePlan::Fused => true,
            DecodePlan::Unfused => false,
        };
        let fused = match fused_wanted {
            true => FusedDecode::new(&model, &a, &kv, &scratch)?,
            false => None,
        };
        let choose = Argmax::new(
            ctx,
            &model.pipelines,
            &ArgmaxBindings {
                logits: &a.logits,
                n: c.n_vocab as u32,
                out: Some(&a.tokens),
            },
        )?;
        let session = Session {
            snapshot: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("logits snapshot"),
                size: c.n_vocab as u64 * 4,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            choose,
            queue: queued::Queue::new(&ctx.device),
            refeed: None,
            stats: DecodeStats::default(),
            token_readback: Readback::new(ctx, "token readback", 4),
            logits_readback: Readback::new(ctx, "logits readback", c.n_vocab as u64 * 4),
            topk_readback: Readback::new(ctx, "top-k readback", MAX_K as u64 * 8),
            forward,
            fused,
            kv,
            a,
            _scratch: scratch,
            plan,
            max_batch,
            n_past: 0,
            head_valid: false,
            model,
        };
        session.model.ctx.take_error()?;
        Ok(session)
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<GpuModel> {
        &self.model
    }

    /// Host cost of the decode steps so far (see [`DecodeStats`]).
    pub fn decode_stats(&self) -> DecodeStats {
        self.stats
    }

    /// Starts [`Self::decode_stats`] again from zero.
    pub fn reset_decode_stats(&mut self) {
        self.stats = DecodeStats::default();
    }

    /// Bytes of the KV cache on the GPU.
    pub fn kv_bytes(&self) -> u64 {
        self.kv.total_bytes()
    }

    /// The memory plan this session was checked and allocated by.
    pub fn memory_plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// Moves the position `n` tokens forward **without computing them**: their cache entries
    /// keep whatever the buffers hold (zeros in a new session) and there are no logits until the
    /// next feed. Only for timing decode at a depth where a real prefill would take too long
    /// (`bench -d N --fast-depth` on a CPU adapter): attention's cost depends on how many
    /// positions are cached, not on their values. Everything generated after it is garbage.
    pub fn advance_uncomputed(&mut self, n: usize) -> Result<()> {
        self.check_idle()?;
        self.refeed = None;
        if self.n_past + n > self.kv.n_ctx {
            return Err(Error::ContextOverflow {
                needed: self.n_past + n,
                capacity: self.kv.n_ctx,
            });
        }
        self.n_past += n;
        self.head_valid = false;
        Ok(())
    }

    /// The plan one-token steps run (`Fused` or `Unfused`, never `Auto`).
    pub fn decode_plan(&self) -> DecodePlan {
        match self.fused {
            Some(_) => DecodePlan::Fused,
            None => DecodePlan::Unfused,
        }
    }

    /// The steps of a decode (layers, head) and the buffer its token lands in.
    fn decode_steps(&self) -> (&[Step], &[Step], &wgpu::Buffer) {
        match &self.fused {
            Some(f) => (&f.layers, &f.head, &self.forward.token),
            None => (
                &self.forward.layers,
                &self.forward.head,
                &self.forward.token,
            ),
        }
    }

    /// Records and submits the forward pass for `tokens` (1..=max_batch) at position n_past,
    /// ending with the LM head and argmax of the last token.
    fn submit_batch(&mut self, tokens: &[u32]) -> Result<()> {
        let step = self.write_step(tokens);
        self.submit_step("forward", &step, |s, encoder| {
            let cost = s.encode_forward(encoder, &step, false);
            s.token_readback
                .encode_copy(encoder, &s.forward.token, 0, 4);
            cost
        });
        Ok(())
    }

    /// Records the forward pass of `step` (its token ids already in `tokens`: written by the
    /// host, or for a GPU-resident step by the previous step's head), then the head's choice
    /// into `tokens[0]`: the argmax, or with `sample` the GPU sampler. A decode step is one
    /// compute pass; a batch is two, with its last residual row copied between them. Advances
    /// n_past; returns the dispatches and passes recorded.
    fn encode_forward(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        step: &StepParams,
        sample: bool,
    ) -> (u64, u64) {
        let before = dispatches_recorded();
        let t = step.n_tokens as u64;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("forward"),
            timestamp_writes: None,
        });
        let (layers, head) = match t {
            1 => {
                let (layers, head, _) = self.decode_steps();
                (layers, head)
            }
            _ => (&self.forward.layers[..], &self.forward.head[..]),
        };
        forward::encode(layers, &mut pass, step);
        let passes = if t > 1 {
            drop(pass);
            // the head only needs the last token's residual row
            let row = self.model.config.n_embd as u64 * 4;
            encoder.copy_buffer_to_buffer(&self.a.x, (t - 1) * row, &self.a.x_last, 0, row);
            pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("head"),
                timestamp_writes: None,
            });
            2
        } else {
            1
        };
        forward::encode(head, &mut pass, step);
        if sample {
            self.forward.sample.encode(&mut pass, step); // tokens[0] = the draw
        }
        drop(pass);
        self.n_past += t as usize;
        self.head_valid = true;
        (dispatches_recorded() - before, passes)
    }

    /// Records and submits one step: the host time both take is measured around them, the
    /// submit apart (a driver may block in it, e.g. lavapipe until the previous submission is
    /// done). Decode steps are counted in the statistics (batches are not decode steps).
    fn submit_step(
        &mut self,
        label: &str,
        step: &StepParams,
        record: impl FnOnce(&mut Self, &mut wgpu::CommandEncoder) -> (u64, u64),
    ) -> wgpu::SubmissionIndex {
        let clock = Stopwatch::start();
        let ctx = self.model.ctx.clone();
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        let (dispatches, passes) = record(self, &mut encoder);
        let commands = encoder.finish();
        let recorded = clock.elapsed();
        let index = ctx.queue.submit([commands]);
        if step.n_tokens == 1 {
            let s = &mut self.stats;
            s.steps += 1;
            s.dispatches += dispatches;
            s.passes += passes;
            s.record_ns += recorded.as_nanos() as u64;
            s.host_ns += clock.elapsed().as_nanos() as u64;
        }
        index
    }

    /// Writes the step uniform and token ids for `tokens` (1..=max_batch) at position n_past;
    /// returns the step the ops are encoded for.
    fn write_step(&self, tokens: &[u32]) -> StepParams {
        let ctx = &*self.model.ctx;
        let step = StepParams::new(self.n_past, tokens.len());
        ctx.queue
            .write_buffer(&self.a.step, 0, bytemuck::bytes_of(&step));
        ctx.queue
            .write_buffer(&self.a.tokens, 0, bytemuck::cast_slice(tokens));
        step
    }

    /// Token ids in the vocabulary and room for them in the KV cache.
    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        let n_vocab = self.model.config.n_vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Error::BadToken { id, n_vocab });
        }
        if self.n_past + tokens.len() > self.kv.n_ctx {
            return Err(Error::ContextOverflow {
                needed: self.n_past + tokens.len(),
                capacity: self.kv.n_ctx,
            });
        }
        Ok(())
    }

    /// Feeds `tokens` at n_past (the work of [`Engine::feed`]).
    fn feed_tokens(&mut self, tokens: &[u32]) -> Result<()> {
        self.check_tokens(tokens)?;
        for chunk in tokens.chunks(self.max_batch) {
            self.submit_batch(chunk)?;
        }
        self.model.ctx.take_error()
    }

    /// No GPU-resident generation is running (its steps own the token input and the logits).
    fn check_idle(&self) -> Result<()> {
        if self.queue.active {
            return Err(Error::InvalidArgument(
                "a GPU-resident generation is running: call end_queued first".into(),
            ));
        }
        Ok(())
    }

    fn check_head(&self) -> Result<()> {
        if !self.head_valid {
            return Err(Error::InvalidArgument(
                "no logits: feed a token first (after a reset or truncate)".into(),
            ));
        }
        Ok(())
    }
}

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
        // The cache entry at n_past - 1 is already right; only its logits were lost.
        self.refeed = None;
        self.feed_tokens(tokens)
    }

    async fn logits(&mut self) -> Result<Vec<f32>> {
        self.check_idle()?;
        self.ensure_head()?;
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
        self.ensure_head()?;
        self.check_head()?;
        self.stats.host_waits += 1;
        let id = self.token_readback.read::<u32>(&self.model.ctx, 1).await?[0];
        check_argmax(id, self.model.config.n_vocab)
    }

    /// Up to [`MAX_K`] candidates are selected on the GPU and 512 bytes read back; a larger `k`
    /// reads back all logits.
    async fn top_k(&mut self, k: usize) -> Result<Vec<(u32, f32)>> {
        self.check_idle()?;
        self.ensure_head()?;
        self.check_head()?;
        let n_vocab = self.model.config.n_vocab;
        let topk = &self.forward.topk;
        if k > topk.k as usize {
            let logits = self.logits().await?;
            return Ok(candidates(&top_k(&logits, k), n_vocab));
        }
        let ctx = &*self.model.ctx;
        let kk = topk.k as u64;
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
            topk.encode(&mut pass, &StepParams::default());
        }
        let (values, ids) = topk.result();
        let staging = &self.topk_readback.staging;
        encoder.copy_buffer_to_buffer(values, 0, staging, 0, kk * 4);
        encoder.copy_buffer_to_buffer(ids, 0, staging, kk * 4, kk * 4);
        ctx.queue.submit([encoder.finish()]);
        self.stats.host_waits += 1;
        let words = self.topk_readback.read::<u32>(ctx, 2 * kk as usize).await?;
        let (values, ids) = words.split_at(kk as usize);
        let pairs: Vec<(f32, u32)> = values
            .iter()
            .zip(ids)
            .map(|(&v, &id)| (f32::from_bits(v), id))
            .take(k)
            .collect();
        Ok(candidates(&pairs, n_vocab))
    }

    fn truncate(&mut self, n_past: usize) -> Result<()> {
        self.check_idle()?;
        check_truncate(n_past, self.n_past)?;
        if n_past < self.n_past {
            self.head_valid = false;
            self.refeed = None;
        }
        self.n_past = n_past;
        Ok(())
    }

    async fn begin_queued(&mut self, config: &SamplerConfig, history: &[u32]) -> Result<bool> {
        self.begin_queued_impl(config, history)
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
