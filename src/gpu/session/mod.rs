//! One conversation on the GPU: activations, KV cache, and every kernel of the forward pass,
//! built once at session creation. A decode step is one encoder, one compute pass of
//! 5 dispatches per layer + 3 (embed, head, argmax), one submit, and a 4-byte read-back of the
//! chosen token, which the head also writes into the next step's token input.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::attention::{AttentionBuffers, LayerAttention};
use crate::gpu::buffers::{Readback, StepParams, storage_buffer, uniform_buffer_init};
use crate::gpu::kernel::Kernel;
use crate::gpu::kv_cache::KvCache;
use crate::gpu::model::GpuModel;
use crate::gpu::ops::attention_decode::DecodeScratch;
use crate::gpu::ops::elementwise::Elementwise;
use crate::gpu::ops::embed_q1_0::EmbedQ1_0;
use crate::gpu::ops::head_argmax::{self, HeadArgmax, HeadArgmaxBindings};
use crate::gpu::ops::matmul_q1_0::{self, MatmulQ1_0, MatmulQ1_0Bindings, RowView};
use crate::gpu::ops::matvec_q1_0::{MatvecOptions, MatvecQ1_0};
use crate::gpu::ops::rmsnorm::Rmsnorm;
use crate::gpu::ops::sampler::GpuSampler;
use crate::gpu::ops::topk::{MAX_K, TopK};
use crate::gpu::ops::{ffn_gate_up, qkv_rope, silu_mul, wo_merge};

mod engine;
mod profile;
mod queued;
mod stats;

pub use profile::PROFILE_CATEGORIES;
pub use queued::RING;
pub use stats::DecodeStats;

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
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: DEFAULT_N_CTX,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// Activation buffers, llama2.c names; batched ones hold `max_batch` rows.
struct Activations {
    step: wgpu::Buffer,   // StepParams uniform: n_tokens, pos, n_kv
    tokens: wgpu::Buffer, // (max_batch) u32
    x: wgpu::Buffer,      // (max_batch, n_embd) residual stream
    xb: wgpu::Buffer,     // (max_batch, max(n_embd, q_dim)) normed input / attention output
    x_last: wgpu::Buffer, // (n_embd) residual of the last prefill token
    q: wgpu::Buffer,      // (max_batch, n_head * head_dim)
    k: wgpu::Buffer,      // (max_batch, n_head_kv * head_dim)
    v: wgpu::Buffer,      // (max_batch, n_head_kv * head_dim)
    hb: wgpu::Buffer,     // (max_batch, n_ff) gate, then silu(gate) * up
    hb2: wgpu::Buffer,    // (max_batch, n_ff) up
    logits: wgpu::Buffer, // (n_vocab)
}

/// The seven Q1_0 projections of one layer as prefill matmuls (q, k, v and gate, up are row
/// views of the fused weights).
struct Projections {
    wq: MatmulQ1_0,
    wk: MatmulQ1_0,
    wv: MatmulQ1_0,
    wo: MatmulQ1_0, // accumulates into x
    w_gate: MatmulQ1_0,
    w_up: MatmulQ1_0,
    w_down: MatmulQ1_0, // accumulates into x
}

/// The five decode dispatches of one layer (ARCHITECTURE.md, "A decode step").
struct DecodeLayer {
    qkv_rope: Kernel, // D1: q, k/v cache <- rope(qk_norm(Wqkv rmsnorm(x)))
    // D2 is the layer's `attention.decode` partial kernel: per-chunk attention partials
    wo_merge: Kernel, // D3: x += Wo merge(partials)
    gate_up: Kernel,  // D4: hb = silu(Wgate rmsnorm(x)) * (Wup rmsnorm(x))
    down: MatvecQ1_0, // D5: x += Wdown hb
}

/// Every kernel of one layer. Prefill norms and SiLU are built for `max_batch` rows and
/// dispatched for the rows in use.
struct Layer {
    attn_norm: Rmsnorm,
    attention: LayerAttention,
    ffn_norm: Rmsnorm,
    silu_mul: Elementwise,
    decode: DecodeLayer,
    prefill: Projections,
}

/// LM head: norm + matvec + argmax stage 1, then stage 2 into `tokens[0]`.
struct Head {
    decode: HeadArgmax,  // x (row 0) -> logits, tokens[0]
    prefill: HeadArgmax, // x_last -> logits, tokens[0]
    topk: TopK,          // logits -> the MAX_K largest (value, id), on demand
}

/// A KV cache and the forward pass over a shared [`GpuModel`]; implements [`crate::Engine`].
pub struct Session {
    model: Arc<GpuModel>,
    kv: KvCache,
    a: Activations,
    _scratch: DecodeScratch,
    embed: EmbedQ1_0,
    layers: Vec<Layer>,
    head: Head,
    token_readback: Readback,
    logits_readback: Readback,
    topk_readback: Readback, // (MAX_K) f32 values, then (MAX_K) u32 ids
    max_batch: usize,
    stats: DecodeStats,
    sampler: GpuSampler,
    queue: queued::Queue,
    /// The token at each cached position (a rollback re-feeds the last one).
    history: Vec<u32>,
    /// After a rollback: the logits of n_past - 1 are recomputed when next needed.
    pending_refeed: bool,
    n_past: usize,
    /// Whether the head ran for position n_past - 1 (false after truncate or before any feed).
    head_valid: bool,
}

impl Session {
    /// Allocates the cache and activations and builds every kernel of the forward pass.
    pub fn new(model: Arc<GpuModel>, opts: SessionOptions) -> Result<Session> {
        let c = &model.config;
        if opts.n_ctx == 0 || opts.n_ctx > c.n_ctx_train {
            return Err(Error::InvalidArgument(format!(
                "n_ctx {} must be in 1..={} (the model's context length)",
                opts.n_ctx, c.n_ctx_train
            )));
        }
        let max_batch = opts.max_batch.clamp(1, opts.n_ctx);
        let ctx = &*model.ctx;
        let cache = &model.pipelines;
        let rows = max_batch as u64;
        let f32s = |n: usize| rows * n as u64 * 4;
        let a = Activations {
            step: uniform_buffer_init(ctx, "step params", &StepParams::default()),
            tokens: storage_buffer(ctx, "tokens", rows * 4)?,
            x: storage_buffer(ctx, "x", f32s(c.n_embd))?,
            xb: storage_buffer(ctx, "xb", f32s(c.n_embd.max(c.q_dim())))?,
            x_last: storage_buffer(ctx, "x_last", c.n_embd as u64 * 4)?,
            q: storage_buffer(ctx, "q", f32s(c.q_dim()))?,
            k: storage_buffer(ctx, "k", f32s(c.kv_dim()))?,
            v: storage_buffer(ctx, "v", f32s(c.kv_dim()))?,
            hb: storage_buffer(ctx, "hb", f32s(c.n_ff))?,
            hb2: storage_buffer(ctx, "hb2", f32s(c.n_ff))?,
            logits: storage_buffer(ctx, "logits", c.n_vocab as u64 * 4)?,
        };
        let kv = KvCache::new(ctx, c, opts.n_ctx)?;
        let scratch = DecodeScratch::new(ctx, kv.dims, opts.n_ctx)?;
        let (n_embd, eps) = (c.n_embd as u32, c.rms_eps);
        let acc = MatvecOptions {
            accumulate: true,
            ..MatvecOptions::default()
        };

        let batch = max_batch as u32;
        let attn_buffers = AttentionBuffers {
            step: &a.step,
            q: &a.q,
            k: &a.k,
            v: &a.v,
            out: &a.xb,
            scratch: &scratch,
            kv: &kv,
        };
        let mut layers = Vec::with_capacity(c.n_layer);
        let dims = kv.dims;
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
        for (l, (w, f)) in model.weights.layers.iter().zip(&model.fused).enumerate() {
            let mm = |w, view, x, y, accumulate| {
                let b = MatmulQ1_0Bindings {
                    step: &a.step,
                    x,
                    w,
                    y,
                };
                matmul_q1_0::build_view(ctx, cache, max_batch, accumulate, &b, view)
            };
            let rows = |n, first, paired| Some(RowView { n, first, paired });
            let n_ff = c.n_ff;
            layers.push(Layer {
                attn_norm: Rmsnorm::new(
                    ctx,
                    cache,
                    &w.attn_norm,
                    Some(&a.x),
                    &a.xb,
                    n_embd,
                    batch,
                    eps,
                )?,
                attention: LayerAttention::new(
                    ctx,
                    cache,
                    &attn_buffers,
                    l,
                    &w.attn_q_norm,
                    &w.attn_k_norm,
                    eps,
                    max_batch,
                )?,
                ffn_norm: Rmsnorm::new(
                    ctx,
                    cache,
                    &w.ffn_norm,
                    Some(&a.x),
                    &a.xb,
                    n_embd,
                    batch,
                    eps,
                )?,
                silu_mul: silu_mul::build(ctx, cache, &a.hb, &a.hb2, n_ff as u32 * batch)?,
                decode: DecodeLayer {
                    qkv_rope: qkv_rope::build(
                        ctx,
                        cache,
                        eps,
                        &qkv_rope::QkvRopeBindings {
                            step: &a.step,
                            x: &a.x,
                            norms: &f.attn_norms,
                            w: &f.wqkv,
                            q: &a.q,
                            kv: &kv,
                            layer: l,
                        },
                    )?,
                    wo_merge: wo_merge::build(
                        ctx,
                        cache,
                        dims,
                        &wo_merge::WoMergeBindings {
                            step: &a.step,
                            scratch: &scratch,
                            w: &w.wo,
                            x: &a.x,
                        },
                    )?,
                    gate_up: ffn_gate_up::build(
                        ctx,
                        cache,
                        eps,
                        &ffn_gate_up::FfnGateUpBindings {
                            x: &a.x,
                            norm: &w.ffn_norm,
                            w: &f.w_gate_up,
                            hb: &a.hb,
                        },
                    )?,
                    down: MatvecQ1_0::new(ctx, cache, &w.w_down, &a.hb, &a.x, acc)?,
                },
                prefill: Projections {
                    wq: mm(&f.wqkv, rows(q_dim, 0, false), &a.xb, &a.q, false)?,
                    wk: mm(&f.wqkv, rows(kv_dim, q_dim, false), &a.xb, &a.k, false)?,
                    wv: mm(
                        &f.wqkv,
                        rows(kv_dim, q_dim + kv_dim, false),
                        &a.xb,
                        &a.v,
                        false,
                    )?,
                    wo: mm(&w.wo, None, &a.xb, &a.x, true)?,
                    w_gate: mm(&f.w_gate_up, rows(n_ff, 0, true), &a.xb, &a.hb, false)?,
                    w_up: mm(&f.w_gate_up, rows(n_ff, 2, true), &a.xb, &a.hb2, false)?,
                    w_down: mm(&w.w_down, None, &a.hb, &a.x, true)?,
                },
            });
        }
        let head_for = |x| {
            head_argmax::build(
                ctx,
                cache,
                eps,
                &HeadArgmaxBindings {
                    x,
                    norm: &model.weights.output_norm,
                    w: model.weights.head(),
                    logits: &a.logits,
                    token: &a.tokens,
                },
            )
        };
        let head = Head {
            decode: head_for(&a.x)?,
            prefill: head_for(&a.x_last)?,
            topk: TopK::new(
                ctx,
                cache,
                &a.logits,
                c.n_vocab as u32,
                MAX_K.min(c.n_vocab as u32),
            )?,
        };
        let embed = EmbedQ1_0::new(
            ctx,
            cache,
            &model.weights.token_embd,
            &a.tokens,
            &a.x,
            max_batch as u32,
        )?;
        let sampler = GpuSampler::new(ctx, cache, &a.logits, &head.topk, &a.tokens)?;
        let session = Session {
            token_readback: Readback::new(ctx, "token readback", 4),
            logits_readback: Readback::new(ctx, "logits readback", c.n_vocab as u64 * 4),
            topk_readback: Readback::new(ctx, "top-k readback", MAX_K as u64 * 8),
            embed,
            layers,
            head,
            kv,
            a,
            _scratch: scratch,
            max_batch,
            stats: DecodeStats::default(),
            sampler,
            queue: queued::Queue::new(&ctx.device),
            history: Vec::new(),
            pending_refeed: false,
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

    /// Records and submits the forward pass for `tokens` (1..=max_batch) at position n_past,
    /// ending with the LM head and argmax of the last token.
    fn submit_batch(&mut self, tokens: &[u32]) -> Result<()> {
        let clock = crate::generate::Stopwatch::start();
        self.write_step(tokens);
        self.submit_step(tokens.len(), None);
        if tokens.len() == 1 {
            self.stats.host_ns += clock.elapsed().as_nanos() as u64;
        }
        Ok(())
    }

    /// Records and submits the forward pass of `t` tokens at n_past whose ids are already in
    /// `tokens` (written by the host, or for a decode step by the previous step's head) and the
    /// step uniform already written. The head leaves the argmax in `tokens[0]` and the token
    /// read-back; `fed` (a ring slot) receives the id this step consumes, copied first.
    fn submit_step(&mut self, t: usize, fed: Option<&wgpu::Buffer>) -> wgpu::SubmissionIndex {
        let ctx = &*self.model.ctx;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("forward"),
            });
        if let Some(slot) = fed {
            encoder.copy_buffer_to_buffer(&self.a.tokens, 0, slot, 0, 4);
        }
        let dispatches = if t == 1 {
            // One pass: embed, 5 dispatches per layer, head.
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("decode"),
                timestamp_writes: None,
            });
            self.embed.encode_tokens(&mut pass, 1);
            let n = self.encode_decode(&mut pass, (self.n_past + 1) as u32);
            self.head.decode.encode(&mut pass);
            let mut sample = 0;
            if fed.is_some() && self.queue.sampling {
                self.sampler.encode(&mut pass);
                sample = self.sampler.dispatches();
            }
            self.embed.kernels.len() + n + self.head.decode.dispatches() + sample
        } else {
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("layers"),
                    timestamp_writes: None,
                });
                self.embed.encode_tokens(&mut pass, t as u32);
                self.encode_prefill(&mut pass, t as u32);
            }
            // the head only needs the last token's residual row
            let row = self.model.config.n_embd as u64 * 4;
            encoder.copy_buffer_to_buffer(&self.a.x, (t as u64 - 1) * row, &self.a.x_last, 0, row);
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("head"),
                timestamp_writes: None,
            });
            self.head.prefill.encode(&mut pass);
            0
        };
        self.token_readback
            .encode_copy(&mut encoder, &self.a.tokens, 0, 4);
        let index = ctx.queue.submit([encoder.finish()]);
        if t == 1 {
            self.stats.steps += 1;
            self.stats.dispatches += dispatches as u64;
            self.stats.passes += 1;
        }
        self.n_past += t;
        self.head_valid = true;
        index
    }

    /// Writes the step uniform and token ids for `tokens` (1..=max_batch) at position n_past.
    fn write_step(&self, tokens: &[u32]) {
        let ctx = &*self.model.ctx;
        let t = tokens.len();
        let step = StepParams::new(self.n_past, t);
        ctx.queue
            .write_buffer(&self.a.step, 0, bytemuck::bytes_of(&step));
        ctx.queue
            .write_buffer(&self.a.tokens, 0, bytemuck::cast_slice(tokens));
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

    /// One token: x -> layers -> x in 5 dispatches per layer; returns the dispatches recorded.
    fn encode_decode(&self, pass: &mut wgpu::ComputePass<'_>, n_kv: u32) -> usize {
        for l in &self.layers {
            let d = &l.decode;
            d.qkv_rope.encode(pass); // q, cache[pos] <- rope(qk_norm(Wqkv rmsnorm(x)))
            l.attention.decode.encode_partial_kv(pass, n_kv); // partials over the chunks in use
            d.wo_merge.encode(pass); // x += Wo merge(partials)
            d.gate_up.encode(pass); // hb = silu(Wgate rmsnorm(x)) * (Wup rmsnorm(x))
            d.down.encode(pass); // x += Wdown hb
        }
        self.layers
            .iter()
            .map(|l| 4 + l.decode.down.kernels.len())
            .sum()
    }

    /// `t` tokens at once: the same steps with matrix-matrix products and causal attention.
    fn encode_prefill(&self, pass: &mut wgpu::ComputePass<'_>, t: u32) {
        let n_ff = self.model.config.n_ff as u32;
        for l in &self.layers {
            let w = &l.prefill;
            l.attn_norm.encode_rows(pass, t);
            w.wq.encode_tokens(pass, t);
            w.wk.encode_tokens(pass, t);
            w.wv.encode_tokens(pass, t);
            l.attention.encode_prefill(pass, t);
            w.wo.encode_tokens(pass, t);
            l.ffn_norm.encode_rows(pass, t);
            w.w_gate.encode_tokens(pass, t);
            w.w_up.encode_tokens(pass, t);
            l.silu_mul.encode_len(pass, t * n_ff);
            w.w_down.encode_tokens(pass, t);
        }
    }

    /// Feeds `tokens` at n_past (the work of [`crate::Engine::feed`]).
    fn feed_tokens(&mut self, tokens: &[u32]) -> Result<()> {
        self.check_tokens(tokens)?;
        self.history.extend_from_slice(tokens);
        for chunk in tokens.chunks(self.max_batch) {
            self.submit_batch(chunk)?;
        }
        self.model.ctx.take_error()
    }

    /// No device-resident steps are in flight (they own the token input and the logits).
    fn check_idle(&self) -> Result<()> {
        if !self.queue.is_empty() {
            return Err(Error::InvalidArgument(
                "queued steps are in flight: call end_queued first".into(),
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
