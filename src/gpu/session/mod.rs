//! One conversation on the GPU: activations, KV cache, and every kernel of the forward pass,
//! built once at session creation. A decode step is one encoder, one compute pass, one submit,
//! and a 4-byte read-back of the chosen token.

use std::sync::Arc;

use crate::cache_type::CacheType;
use crate::engine::{Engine, check_truncate, top_k_of};
use crate::error::{Error, Result};
use crate::gpu::attention::{AttentionBuffers, LayerAttention};
use crate::gpu::buffers::{Readback, StepParams, storage_buffer, uniform_buffer_init};
use crate::gpu::kv_cache::KvCache;
use crate::gpu::memory_plan::{MemoryLimits, MemoryPlan};
use crate::gpu::model::GpuModel;
use crate::gpu::ops::argmax::Argmax;
use crate::gpu::ops::attention_decode::DecodeScratch;
use crate::gpu::ops::elementwise::Elementwise;
use crate::gpu::ops::embed_q1_0::EmbedQ1_0;
use crate::gpu::ops::matmul_q1_0::{self, MatmulQ1_0, MatmulQ1_0Bindings};
use crate::gpu::ops::matvec_q1_0::{MatvecOptions, MatvecQ1_0};
use crate::gpu::ops::rmsnorm::Rmsnorm;
use crate::gpu::ops::silu_mul;
use crate::gpu::ops::topk::{MAX_K, TopK};

mod profile;

pub use profile::PROFILE_CATEGORIES;

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
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: DEFAULT_N_CTX,
            max_batch: DEFAULT_MAX_BATCH,
            cache_type: CacheType::default(),
        }
    }
}

impl SessionOptions {
    /// The memory plan of a session of `model` with these options on its device.
    pub fn memory_plan(&self, model: &GpuModel) -> MemoryPlan {
        MemoryPlan::for_device(&model.ctx, &model.config, model.weight_bytes(), self)
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

/// The seven Q1_0 projections of one layer, as matvecs (decode) or matmuls (prefill).
struct Projections<P> {
    wq: P,
    wk: P,
    wv: P,
    wo: P, // accumulates into x
    w_gate: P,
    w_up: P,
    w_down: P, // accumulates into x
}

/// Every kernel of one layer. Norms and SiLU are built for `max_batch` rows and dispatched for
/// the rows in use; attention has separate decode and prefill kernels.
struct Layer {
    attn_norm: Rmsnorm,
    attention: LayerAttention,
    ffn_norm: Rmsnorm,
    silu_mul: Elementwise,
    decode: Projections<MatvecQ1_0>,
    prefill: Projections<MatmulQ1_0>,
}

/// Final norm, LM head and argmax.
struct Head {
    norm_decode: Rmsnorm,  // x (row 0) -> xb
    norm_prefill: Rmsnorm, // x_last -> xb
    output: MatvecQ1_0,    // xb -> logits
    argmax: Argmax,        // logits -> token id
    topk: TopK,            // logits -> the MAX_K largest (value, id), on demand
}

/// A KV cache and the forward pass over a shared [`GpuModel`]; implements [`Engine`].
pub struct Session {
    model: Arc<GpuModel>,
    kv: KvCache,
    a: Activations,
    _scratch: DecodeScratch,
    plan: MemoryPlan,
    embed: EmbedQ1_0,
    layers: Vec<Layer>,
    head: Head,
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
        let kv = KvCache::new(ctx, c, opts.n_ctx, opts.cache_type)?;
        let scratch = DecodeScratch::new(ctx, kv.dims, opts.n_ctx)?;
        let (n_embd, n_ff, eps) = (c.n_embd as u32, c.n_ff as u32, c.rms_eps);
        let set = MatvecOptions::default();
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
        for (l, w) in model.weights.layers.iter().enumerate() {
            let mv = |w, x, y, o| MatvecQ1_0::new(ctx, cache, w, x, y, o);
            let mm = |w, x, y, accumulate| {
                let b = MatmulQ1_0Bindings {
                    step: &a.step,
                    x,
                    w,
                    y,
                };
                matmul_q1_0::build(ctx, cache, max_batch, accumulate, &b)
            };
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
                silu_mul: silu_mul::build(ctx, cache, &a.hb, &a.hb2, n_ff * batch)?,
                decode: Projections {
                    wq: mv(&w.wq, &a.xb, &a.q, set)?,
                    wk: mv(&w.wk, &a.xb, &a.k, set)?,
                    wv: mv(&w.wv, &a.xb, &a.v, set)?,
                    wo: mv(&w.wo, &a.xb, &a.x, acc)?,
                    w_gate: mv(&w.w_gate, &a.xb, &a.hb, set)?,
                    w_up: mv(&w.w_up, &a.xb, &a.hb2, set)?,
                    w_down: mv(&w.w_down, &a.hb, &a.x, acc)?,
                },
                prefill: Projections {
                    wq: mm(&w.wq, &a.xb, &a.q, false)?,
                    wk: mm(&w.wk, &a.xb, &a.k, false)?,
                    wv: mm(&w.wv, &a.xb, &a.v, false)?,
                    wo: mm(&w.wo, &a.xb, &a.x, true)?,
                    w_gate: mm(&w.w_gate, &a.xb, &a.hb, false)?,
                    w_up: mm(&w.w_up, &a.xb, &a.hb2, false)?,
                    w_down: mm(&w.w_down, &a.hb, &a.x, true)?,
                },
            });
        }
        let head = Head {
            norm_decode: Rmsnorm::new(
                ctx,
                cache,
                &model.weights.output_norm,
                Some(&a.x),
                &a.xb,
                n_embd,
                1,
                eps,
            )?,
            norm_prefill: Rmsnorm::new(
                ctx,
                cache,
                &model.weights.output_norm,
                Some(&a.x_last),
                &a.xb,
                n_embd,
                1,
                eps,
            )?,
            output: MatvecQ1_0::new(ctx, cache, model.weights.head(), &a.xb, &a.logits, set)?,
            argmax: Argmax::new(ctx, cache, &a.logits, c.n_vocab as u32)?,
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

    /// Records and submits the forward pass for `tokens` (1..=max_batch) at position n_past,
    /// ending with the LM head and argmax of the last token.
    fn submit_batch(&mut self, tokens: &[u32]) -> Result<()> {
        let ctx = &*self.model.ctx;
        let t = tokens.len();
        self.write_step(tokens);

        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("forward"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("layers"),
                timestamp_writes: None,
            });
            self.embed.encode_tokens(&mut pass, t as u32);
            if t == 1 {
                self.encode_decode(&mut pass, (self.n_past + 1) as u32);
            } else {
                self.encode_prefill(&mut pass, t as u32);
            }
        }
        if t > 1 {
            // the head only needs the last token's residual row
            let row = self.model.config.n_embd as u64 * 4;
            encoder.copy_buffer_to_buffer(&self.a.x, (t as u64 - 1) * row, &self.a.x_last, 0, row);
        }
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("head"),
                timestamp_writes: None,
            });
            let norm = if t == 1 {
                &self.head.norm_decode
            } else {
                &self.head.norm_prefill
            };
            norm.encode(&mut pass);
            self.head.output.encode(&mut pass);
            self.head.argmax.encode(&mut pass);
        }
        self.token_readback
            .encode_copy(&mut encoder, &self.head.argmax.result, 0, 4);
        ctx.queue.submit([encoder.finish()]);
        self.n_past += t;
        self.head_valid = true;
        Ok(())
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

    /// One token: x -> layers -> x, matrix-vector products throughout.
    fn encode_decode(&self, pass: &mut wgpu::ComputePass<'_>, n_kv: u32) {
        let n_ff = self.model.config.n_ff as u32;
        for l in &self.layers {
            let w = &l.decode;
            l.attn_norm.encode_rows(pass, 1); // xb = rmsnorm(x) * attn_norm
            w.wq.encode(pass); // q = Wq xb
            w.wk.encode(pass); // k = Wk xb
            w.wv.encode(pass); // v = Wv xb
            l.attention.encode_decode_kv(pass, n_kv); // q, k = rope(norm(q, k)); cache <- k, v; xb = attn
            w.wo.encode(pass); // x += Wo xb
            l.ffn_norm.encode_rows(pass, 1); // xb = rmsnorm(x) * ffn_norm
            w.w_gate.encode(pass); // hb = Wgate xb
            w.w_up.encode(pass); // hb2 = Wup xb
            l.silu_mul.encode_len(pass, n_ff); // hb = silu(hb) * hb2
            w.w_down.encode(pass); // x += Wdown hb
        }
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
        self.check_tokens(tokens)?;
        for chunk in tokens.chunks(self.max_batch) {
            self.submit_batch(chunk)?;
        }
        self.model.ctx.take_error()
    }

    async fn logits(&mut self) -> Result<Vec<f32>> {
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
        self.logits_readback.read(ctx, n).await
    }

    async fn greedy(&mut self) -> Result<u32> {
        self.check_head()?;
        let id = self.token_readback.read::<u32>(&self.model.ctx, 1).await?[0];
        if id as usize >= self.model.config.n_vocab {
            return Err(Error::Gpu(format!(
                "argmax returned {id}: logits are not finite"
            )));
        }
        Ok(id)
    }

    /// Up to [`MAX_K`] candidates are selected on the GPU and 512 bytes read back; a larger `k`
    /// reads back all logits.
    async fn top_k(&mut self, k: usize) -> Result<Vec<(u32, f32)>> {
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
        check_truncate(n_past, self.n_past)?;
        if n_past < self.n_past {
            self.head_valid = false;
        }
        self.n_past = n_past;
        Ok(())
    }
}
