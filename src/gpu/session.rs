//! One conversation on the GPU: activations, KV cache, and every kernel of the forward pass,
//! built once at session creation. A decode step is one encoder, one compute pass, one submit,
//! and a 4-byte read-back of the chosen token.

use std::sync::Arc;

use crate::engine::{Engine, top_k_of};
use crate::error::{Error, Result};
use crate::gpu::kv_cache::KvCache;
use crate::gpu::model::GpuModel;
use crate::gpu::op::split_workgroups;
use crate::gpu::op::{Kernel, Readback, StepParams, storage_buffer, uniform_buffer_init};
use crate::gpu::ops::argmax::Argmax;
use crate::gpu::ops::attention_decode::{
    self, AttentionDecode, AttentionDecodeBindings, DecodeScratch,
};
use crate::gpu::ops::attention_prefill::{self, AttentionPrefillBindings};
use crate::gpu::ops::elementwise::workgroups_for;
use crate::gpu::ops::embed_q1_0::EmbedQ1_0;
use crate::gpu::ops::matmul_q1_0::{self, MatmulQ1_0, MatmulQ1_0Bindings};
use crate::gpu::ops::matvec_q1_0::{MatvecOptions, MatvecQ1_0};
use crate::gpu::ops::qk_norm_rope::{self, QkNormRopeBindings};
use crate::gpu::ops::rmsnorm::Rmsnorm;
use crate::gpu::ops::silu_mul::SiluMul;

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

/// Kernels of one layer for a single token (matrix-vector products).
struct DecodeLayer {
    attn_norm: Rmsnorm,
    wq: MatvecQ1_0,
    wk: MatvecQ1_0,
    wv: MatvecQ1_0,
    qk_norm_rope: Kernel,
    attention: AttentionDecode,
    wo: MatvecQ1_0,
    ffn_norm: Rmsnorm,
    w_gate: MatvecQ1_0,
    w_up: MatvecQ1_0,
    silu_mul: SiluMul,
    w_down: MatvecQ1_0,
}

/// Kernels of one layer for a batch of tokens (weights read once per tile of tokens).
struct PrefillLayer {
    attn_norm: Rmsnorm,
    wq: MatmulQ1_0,
    wk: MatmulQ1_0,
    wv: MatmulQ1_0,
    qk_norm_rope: Kernel,
    attention: Kernel,
    wo: MatmulQ1_0,
    ffn_norm: Rmsnorm,
    w_gate: MatmulQ1_0,
    w_up: MatmulQ1_0,
    silu_mul: SiluMul,
    w_down: MatmulQ1_0,
}

/// Final norm, LM head and argmax.
struct Head {
    norm_decode: Rmsnorm,  // x (row 0) -> xb
    norm_prefill: Rmsnorm, // x_last -> xb
    output: MatvecQ1_0,    // xb -> logits
    argmax: Argmax,        // logits -> token id
}

/// A KV cache and the forward pass over a shared [`GpuModel`]; implements [`Engine`].
pub struct Session {
    model: Arc<GpuModel>,
    kv: KvCache,
    a: Activations,
    _scratch: DecodeScratch,
    embed: EmbedQ1_0,
    decode: Vec<DecodeLayer>,
    prefill: Vec<PrefillLayer>,
    head: Head,
    token_readback: Readback,
    logits_readback: Readback,
    max_batch: usize,
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
        let (n_embd, n_ff, eps) = (c.n_embd as u32, c.n_ff as u32, c.rms_eps);
        let set = MatvecOptions::default();
        let acc = MatvecOptions {
            accumulate: true,
            ..MatvecOptions::default()
        };

        let mut decode = Vec::with_capacity(c.n_layer);
        let mut prefill = Vec::with_capacity(c.n_layer);
        for (l, w) in model.layers.iter().enumerate() {
            let qk = QkNormRopeBindings {
                step: &a.step,
                q: &a.q,
                k: &a.k,
                v: &a.v,
                q_norm: &w.attn_q_norm,
                k_norm: &w.attn_k_norm,
                kv: &kv,
                layer: l,
            };
            let qk_norm_rope = qk_norm_rope::build(ctx, cache, eps, max_batch, &qk)?;
            let mv = |w, x, y, o| MatvecQ1_0::new(ctx, cache, w, x, y, o);
            decode.push(DecodeLayer {
                attn_norm: Rmsnorm::new(
                    ctx,
                    cache,
                    &w.attn_norm,
                    Some(&a.x),
                    &a.xb,
                    n_embd,
                    1,
                    eps,
                )?,
                wq: mv(&w.wq, &a.xb, &a.q, set)?,
                wk: mv(&w.wk, &a.xb, &a.k, set)?,
                wv: mv(&w.wv, &a.xb, &a.v, set)?,
                qk_norm_rope: qk_norm_rope.clone(),
                attention: attention_decode::build(
                    ctx,
                    cache,
                    &AttentionDecodeBindings {
                        step: &a.step,
                        q: &a.q,
                        kv: &kv,
                        layer: l,
                        scratch: &scratch,
                        out: &a.xb,
                    },
                )?,
                wo: mv(&w.wo, &a.xb, &a.x, acc)?,
                ffn_norm: Rmsnorm::new(ctx, cache, &w.ffn_norm, Some(&a.x), &a.xb, n_embd, 1, eps)?,
                w_gate: mv(&w.w_gate, &a.xb, &a.hb, set)?,
                w_up: mv(&w.w_up, &a.xb, &a.hb2, set)?,
                silu_mul: SiluMul::new(ctx, cache, &a.hb, &a.hb2, n_ff)?,
                w_down: mv(&w.w_down, &a.hb, &a.x, acc)?,
            });
            let mm = |w, x, y, accumulate| {
                let b = MatmulQ1_0Bindings {
                    step: &a.step,
                    x,
                    w,
                    y,
                };
                matmul_q1_0::build(ctx, cache, max_batch, accumulate, &b)
            };
            let batch = max_batch as u32;
            prefill.push(PrefillLayer {
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
                wq: mm(&w.wq, &a.xb, &a.q, false)?,
                wk: mm(&w.wk, &a.xb, &a.k, false)?,
                wv: mm(&w.wv, &a.xb, &a.v, false)?,
                qk_norm_rope,
                attention: attention_prefill::build(
                    ctx,
                    cache,
                    max_batch,
                    &AttentionPrefillBindings {
                        step: &a.step,
                        q: &a.q,
                        kv: &kv,
                        layer: l,
                        out: &a.xb,
                    },
                )?,
                wo: mm(&w.wo, &a.xb, &a.x, true)?,
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
                w_gate: mm(&w.w_gate, &a.xb, &a.hb, false)?,
                w_up: mm(&w.w_up, &a.xb, &a.hb2, false)?,
                silu_mul: SiluMul::new(ctx, cache, &a.hb, &a.hb2, n_ff * batch)?,
                w_down: mm(&w.w_down, &a.hb, &a.x, true)?,
            });
        }
        let head = Head {
            norm_decode: Rmsnorm::new(
                ctx,
                cache,
                &model.output_norm,
                Some(&a.x),
                &a.xb,
                n_embd,
                1,
                eps,
            )?,
            norm_prefill: Rmsnorm::new(
                ctx,
                cache,
                &model.output_norm,
                Some(&a.x_last),
                &a.xb,
                n_embd,
                1,
                eps,
            )?,
            output: MatvecQ1_0::new(ctx, cache, model.head(), &a.xb, &a.logits, set)?,
            argmax: Argmax::new(ctx, cache, &a.logits, c.n_vocab as u32)?,
        };
        let embed = EmbedQ1_0::new(
            ctx,
            cache,
            &model.token_embd,
            &a.tokens,
            &a.x,
            max_batch as u32,
        )?;
        let session = Session {
            token_readback: Readback::new(ctx, "token readback", 4),
            logits_readback: Readback::new(ctx, "logits readback", c.n_vocab as u64 * 4),
            embed,
            decode,
            prefill,
            head,
            kv,
            a,
            _scratch: scratch,
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

    /// Records and submits the forward pass for `tokens` (1..=max_batch) at position n_past,
    /// ending with the LM head and argmax of the last token.
    fn submit_batch(&mut self, tokens: &[u32]) -> Result<()> {
        let ctx = &*self.model.ctx;
        let t = tokens.len();
        let step = StepParams {
            n_tokens: t as u32,
            pos: self.n_past as u32,
            n_kv: (self.n_past + t) as u32,
            _pad: 0,
        };
        ctx.queue
            .write_buffer(&self.a.step, 0, bytemuck::bytes_of(&step));
        ctx.queue
            .write_buffer(&self.a.tokens, 0, bytemuck::cast_slice(tokens));

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
            let words = (self.model.config.n_embd / 32) as u32;
            for k in &self.embed.kernels {
                dispatch(&mut pass, k, [words.div_ceil(64), t as u32, 1]);
            }
            if t == 1 {
                self.encode_decode(&mut pass);
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

    /// One token: x -> layers -> x, matrix-vector products throughout.
    fn encode_decode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for l in &self.decode {
            l.attn_norm.encode(pass); // xb = rmsnorm(x)
            l.wq.encode(pass); // q = Wq xb
            l.wk.encode(pass); // k = Wk xb
            l.wv.encode(pass); // v = Wv xb
            l.qk_norm_rope.encode(pass); // q, k = rope(norm(q)), rope(norm(k)); cache <- k, v
            l.attention.encode(pass); // xb = softmax(q K^T / sqrt(d)) V
            l.wo.encode(pass); // x += Wo xb
            l.ffn_norm.encode(pass); // xb = rmsnorm(x)
            l.w_gate.encode(pass); // hb = Wg xb
            l.w_up.encode(pass); // hb2 = Wu xb
            l.silu_mul.encode(pass); // hb = silu(hb) * hb2
            l.w_down.encode(pass); // x += Wd hb
        }
    }

    /// `t` tokens at once: the same steps with matrix-matrix products and causal attention.
    fn encode_prefill(&self, pass: &mut wgpu::ComputePass<'_>, t: u32) {
        let ctx = &*self.model.ctx;
        let max = ctx.limits.max_compute_workgroups_per_dimension;
        let rows = split_workgroups(t, max);
        let ffn_elems = workgroups_for(ctx, t * self.model.config.n_ff as u32);
        for l in &self.prefill {
            dispatch(pass, &l.attn_norm.kernel, rows);
            l.wq.encode(pass);
            l.wk.encode(pass);
            l.wv.encode(pass);
            l.qk_norm_rope.encode(pass);
            l.attention.encode(pass);
            l.wo.encode(pass);
            dispatch(pass, &l.ffn_norm.kernel, rows);
            l.w_gate.encode(pass);
            l.w_up.encode(pass);
            dispatch(pass, &l.silu_mul.kernel, ffn_elems);
            l.w_down.encode(pass);
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

/// Encodes `kernel` with a dispatch size other than the one it was built with (smaller batches).
fn dispatch(pass: &mut wgpu::ComputePass<'_>, kernel: &Kernel, workgroups: [u32; 3]) {
    pass.set_pipeline(&kernel.pipeline);
    pass.set_bind_group(0, &kernel.bind_group, &[]);
    pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
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

    async fn top_k(&mut self, k: usize) -> Result<Vec<(u32, f32)>> {
        let logits = self.logits().await?;
        Ok(top_k_of(&logits, k))
    }

    fn truncate(&mut self, n_past: usize) -> Result<()> {
        if n_past > self.n_past {
            return Err(Error::InvalidArgument(format!(
                "cannot truncate to {n_past}: only {} tokens are cached",
                self.n_past
            )));
        }
        if n_past < self.n_past {
            self.head_valid = false;
        }
        self.n_past = n_past;
        Ok(())
    }
}
