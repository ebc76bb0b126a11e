//! The forward pass on the GPU, written once: the run state (llama2.c names) and every step in
//! order, each built with the buffers it reads and writes. Decode (one token), prefill (a batch
//! of up to `max_batch`) and the profile encode this same list; a step picks its single-token or
//! batched kernels from the step's token count ([`DecodeOrPrefill`]).
//!
//! [`FusedDecode`] is the decode step of the fused plan (ARCHITECTURE.md, "A decode step"): 5
//! kernels per layer and 3 outside them, over the joined weights of [`GpuModel::fused`]. The
//! session uses it for one-token steps when the model and options allow, and the unfused list
//! otherwise (prefill, mixed-type files, `DecodePlan::Unfused`).

use crate::Result;
use crate::gpu::attention::{AttentionBindings, LayerAttention};
use crate::gpu::buffers::{StepParams, storage_buffer, uniform_buffer_init};
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{DecodeOrPrefill, Op, PipelineCache};
use crate::gpu::kv_cache::KvCache;
use crate::gpu::model::GpuModel;
use crate::gpu::ops::argmax::{Argmax, ArgmaxBindings};
use crate::gpu::ops::attention_decode::{
    AttentionDecode, AttentionDecodeBindings, DecodeScratch, RopeInput,
};
use crate::gpu::ops::embed_q1_0::{EmbedQ1_0, EmbedQ1_0Bindings};
use crate::gpu::ops::matmul_q1_0::{MatmulQ1_0, MatmulQ1_0Bindings};
use crate::gpu::ops::matvec_q1_0::{
    Fusion, MatvecOptions, MatvecQ1_0, MatvecQ1_0Bindings, MergeInput, NormOut,
};
use crate::gpu::ops::rmsnorm::{Rmsnorm, RmsnormBindings};
use crate::gpu::ops::sampler::{GpuSampler, GpuSamplerBindings};
use crate::gpu::ops::silu_mul::{SiluMul, SiluMulBindings};
use crate::gpu::ops::topk::{MAX_K, TopK, TopKBindings};
use crate::gpu::q1_0::Q1_0Weight;

/// Activation buffers, llama2.c names; batched ones hold `max_batch` rows.
pub(super) struct Activations {
    pub step: wgpu::Buffer,    // StepParams uniform: n_tokens, pos, n_kv
    pub tokens: wgpu::Buffer, // (max_batch) u32; the head's choice lands in [0] (next step's input)
    pub x: wgpu::Buffer,      // (max_batch, n_embd) residual stream
    pub xb: wgpu::Buffer,     // (max_batch, max(n_embd, q_dim)) normed input / attention output
    pub x_last: wgpu::Buffer, // (n_embd) residual of the last prefill token
    pub q: wgpu::Buffer,      // (max_batch, n_head * head_dim)
    pub k: wgpu::Buffer,      // (max_batch, n_head_kv * head_dim)
    pub v: wgpu::Buffer,      // (max_batch, n_head_kv * head_dim)
    pub hb: wgpu::Buffer,     // (max_batch, n_ff) gate, then silu(gate) * up
    pub hb2: wgpu::Buffer,    // (max_batch, n_ff) up
    pub logits: wgpu::Buffer, // (n_vocab)
    pub qkv: wgpu::Buffer,    // (q_dim + 2 kv_dim) fused decode: q|k|v of the token
    pub x_sumsq: wgpu::Buffer, // (n_embd / 4) fused decode: x's sums of squares, 4 values each
}

impl Activations {
    pub fn new(ctx: &GpuContext, model: &GpuModel, max_batch: usize) -> Result<Activations> {
        let c = &model.config;
        let f32s = |n: usize| max_batch as u64 * n as u64 * 4;
        Ok(Activations {
            step: uniform_buffer_init(ctx, "step params", &StepParams::default()),
            tokens: storage_buffer(ctx, "tokens", max_batch as u64 * 4)?,
            x: storage_buffer(ctx, "x", f32s(c.n_embd))?,
            xb: storage_buffer(ctx, "xb", f32s(c.n_embd.max(c.q_dim())))?,
            x_last: storage_buffer(ctx, "x_last", c.n_embd as u64 * 4)?,
            q: storage_buffer(ctx, "q", f32s(c.q_dim()))?,
            k: storage_buffer(ctx, "k", f32s(c.kv_dim()))?,
            v: storage_buffer(ctx, "v", f32s(c.kv_dim()))?,
            hb: storage_buffer(ctx, "hb", f32s(c.n_ff))?,
            hb2: storage_buffer(ctx, "hb2", f32s(c.n_ff))?,
            logits: storage_buffer(ctx, "logits", c.n_vocab as u64 * 4)?,
            qkv: storage_buffer(ctx, "qkv", (c.q_dim() + 2 * c.kv_dim()) as u64 * 4)?,
            x_sumsq: storage_buffer(ctx, "x_sumsq", c.n_embd.div_ceil(4) as u64 * 4)?,
        })
    }
}

/// One step of the forward pass: an op and the profile category it is timed under.
pub(super) struct Step {
    pub category: &'static str,
    pub op: Box<dyn Op>,
}

/// Every step of a forward pass, built once per session.
pub(super) struct Forward {
    /// Embedding and every layer's steps: the residual stream `x` of the step's tokens.
    pub layers: Vec<Step>,
    /// Final norm, LM head and argmax of the last token.
    pub head: Vec<Step>,
    /// The chosen token: `tokens[0]`, where the argmax (or the sampler) leaves it.
    pub token: wgpu::Buffer,
    /// logits -> the MAX_K largest (value, id): the sampler's candidates, and `Engine::top_k`.
    pub topk: TopK,
    /// Sampled decoding: penalties, top-k and the draw into `tokens[0]`, encoded after the
    /// head (GPU-resident sampled generation); the draw replaces the argmax's choice.
    pub sample: GpuSampler,
}

/// What a linear layer does with its result.
#[derive(Clone, Copy)]
enum Out {
    /// `y = W x`
    Set,
    /// `y += W x` (the fused residual add)
    Add,
}

/// Builds steps over one session's buffers.
struct Builder<'a> {
    ctx: &'a GpuContext,
    cache: &'a PipelineCache,
    a: &'a Activations,
    max_batch: usize,
    eps: f32,
    steps: Vec<Step>,
}

impl Builder<'_> {
    fn push(&mut self, category: &'static str, op: impl Op + 'static) {
        self.steps.push(Step {
            category,
            op: Box::new(op),
        });
    }

    /// `y[t] = rmsnorm(x[t]) * w` for the step's tokens.
    fn rmsnorm(
        &self,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        y: &wgpu::Buffer,
        n: usize,
    ) -> Result<Rmsnorm> {
        let b = RmsnormBindings {
            w,
            x: Some(x),
            y,
            n: n as u32,
            n_rows: self.max_batch as u32,
            eps: self.eps,
        };
        Rmsnorm::new(self.ctx, self.cache, &b)
    }

    /// `y[t] (+)= W x[t]`: a matvec for one token, a matmul for a batch.
    fn linear(
        &self,
        w: &Q1_0Weight,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        out: Out,
    ) -> Result<DecodeOrPrefill<MatvecQ1_0, MatmulQ1_0>> {
        let accumulate = matches!(out, Out::Add);
        let decode = MatvecQ1_0::new(
            self.ctx,
            self.cache,
            &MatvecQ1_0Bindings {
                w,
                x,
                y,
                opts: MatvecOptions {
                    accumulate,
                    ..MatvecOptions::default()
                },
            },
        )?;
        let prefill = MatmulQ1_0::new(
            self.ctx,
            self.cache,
            &MatmulQ1_0Bindings {
                step: &self.a.step,
                x,
                w,
                y,
                max_tokens: self.max_batch,
                accumulate,
                small_tiles: false,
            },
        )?;
        Ok(DecodeOrPrefill { decode, prefill })
    }
}

impl Forward {
    /// Builds every step of `model`'s forward pass over the buffers `a`, the cache `kv` and the
    /// decode scratch, for steps of up to `max_batch` tokens.
    pub fn new(
        model: &GpuModel,
        a: &Activations,
        kv: &KvCache,
        scratch: &DecodeScratch,
        max_batch: usize,
    ) -> Result<Forward> {
        let (ctx, c, weights) = (&*model.ctx, &model.config, &model.weights);
        let mut f = Builder {
            ctx,
            cache: &model.pipelines,
            a,
            max_batch,
            eps: c.rms_eps,
            steps: Vec::new(),
        };
        let (n_embd, n_ff) = (c.n_embd, c.n_ff);
        use Out::{Add, Set};

        // x = token_embd[tokens]
        let embed = EmbedQ1_0Bindings {
            table: &weights.token_embd,
            tokens: &a.tokens,
            x: &a.x,
            max_tokens: max_batch as u32,
        };
        f.push("embed", EmbedQ1_0::new(ctx, f.cache, &embed)?);
        for (l, w) in weights.layers.iter().enumerate() {
            f.push("attn_norm", f.rmsnorm(&a.x, &w.attn_norm, &a.xb, n_embd)?); // xb = rmsnorm(x) * attn_norm
            f.push("qkv matvec", f.linear(&w.wq, &a.xb, &a.q, Set)?); // q = Wq xb
            f.push("qkv matvec", f.linear(&w.wk, &a.xb, &a.k, Set)?); // k = Wk xb
            f.push("qkv matvec", f.linear(&w.wv, &a.xb, &a.v, Set)?); // v = Wv xb
            let attention = LayerAttention::new(
                ctx,
                f.cache,
                &AttentionBindings {
                    step: &a.step,
                    q: &a.q,
                    k: &a.k,
                    v: &a.v,
                    q_norm: &w.attn_q_norm,
                    k_norm: &w.attn_k_norm,
                    kv,
                    layer: l,
                    scratch,
                    out: &a.xb,
                    eps: c.rms_eps,
                    max_tokens: max_batch,
                },
            )?;
            f.push("rope+kv", attention.rope); // q, k = rope(rmsnorm(q), rmsnorm(k)); cache <- k, v
            f.push("attention", attention.attend); // xb = attention(q, cache)
            f.push("wo matvec", f.linear(&w.wo, &a.xb, &a.x, Add)?); // x += Wo xb
            f.push("ffn_norm", f.rmsnorm(&a.x, &w.ffn_norm, &a.xb, n_embd)?); // xb = rmsnorm(x) * ffn_norm
            f.push("gate/up matvec", f.linear(&w.w_gate, &a.xb, &a.hb, Set)?); // hb = Wgate xb
            f.push("gate/up matvec", f.linear(&w.w_up, &a.xb, &a.hb2, Set)?); // hb2 = Wup xb
            let silu = SiluMulBindings {
                hb: &a.hb,
                hb2: &a.hb2,
                n: n_ff as u32,
                max_tokens: max_batch as u32,
            };
            f.push("silu_mul", SiluMul::new(ctx, f.cache, &silu)?); // hb = silu(hb) * hb2
            f.push("down matvec", f.linear(&w.w_down, &a.hb, &a.x, Add)?); // x += Wdown hb
        }
        let layers = std::mem::take(&mut f.steps);

        // The head runs for the last token only: decode reads x, prefill the copy x_last of its
        // last row (made by the session between the passes).
        let head_norm = |x| {
            let b = RmsnormBindings {
                w: &weights.output_norm,
                x: Some(x),
                y: &a.xb,
                n: n_embd as u32,
                n_rows: 1,
                eps: c.rms_eps,
            };
            Rmsnorm::new(ctx, f.cache, &b)
        };
        let norm = DecodeOrPrefill {
            decode: head_norm(&a.x)?,
            prefill: head_norm(&a.x_last)?,
        };
        f.push("head norm", norm); // xb = rmsnorm(x[last]) * output_norm
        let head = MatvecQ1_0Bindings {
            w: weights.head(),
            x: &a.xb,
            y: &a.logits,
            opts: MatvecOptions::default(),
        };
        f.push("head matvec", MatvecQ1_0::new(ctx, f.cache, &head)?); // logits = Wout xb
        let argmax = Argmax::new(
            ctx,
            f.cache,
            &ArgmaxBindings {
                logits: &a.logits,
                n: c.n_vocab as u32,
                out: Some(&a.tokens),
            },
        )?;
        f.push("argmax", argmax); // tokens[0] = argmax(logits): the next step's input
        let topk = TopK::new(
            ctx,
            f.cache,
            &TopKBindings {
                logits: &a.logits,
                n: c.n_vocab as u32,
                k: MAX_K.min(c.n_vocab as u32),
            },
        )?;
        let sample = GpuSampler::new(
            ctx,
            f.cache,
            &GpuSamplerBindings {
                logits: &a.logits,
                n_vocab: c.n_vocab as u32,
                topk: &topk,
                tokens: &a.tokens,
            },
        )?; // tokens[0] = draw(top_k(penalise(logits)))
        Ok(Forward {
            layers,
            head: f.steps,
            token: a.tokens.clone(),
            topk,
            sample,
        })
    }
}

/// The fused plan's decode step (one token): what [`Forward`] computes for `n_tokens == 1`, in
/// 5 kernels per layer plus embed, LM head and argmax.
pub(super) struct FusedDecode {
    /// Embedding and every layer's 5 kernels.
    pub layers: Vec<Step>,
    /// LM head (final norm folded in, argmax stage 1 in its epilogue) and argmax stage 2,
    /// which writes the chosen id to `tokens[0]` like the unfused head.
    pub head: Vec<Step>,
}

impl FusedDecode {
    /// Builds the fused decode step, or `None` when the model has no joined weights or its LM
    /// head is a dense matrix (then the unfused list decodes).
    pub fn new(
        model: &GpuModel,
        a: &Activations,
        kv: &KvCache,
        scratch: &DecodeScratch,
    ) -> Result<Option<FusedDecode>> {
        let (ctx, c, weights) = (&*model.ctx, &model.config, &model.weights);
        let Some(fused) = &model.fused else {
            return Ok(None);
        };
        let head_w = weights.head();
        if !head_w.format.has_scales() {
            return Ok(None);
        }
        let cache = &model.pipelines;
        let eps = c.rms_eps;
        let mut f = Builder {
            ctx,
            cache,
            a,
            max_batch: 1,
            eps,
            steps: Vec::new(),
        };
        let embed = EmbedQ1_0Bindings {
            table: &weights.token_embd,
            tokens: &a.tokens,
            x: &a.x,
            max_tokens: 1,
        };
        f.push("embed", EmbedQ1_0::new(ctx, cache, &embed)?);
        let plain = MatvecOptions::default();
        let residual = MatvecOptions {
            accumulate: true,
            ..MatvecOptions::default()
        };
        // The residual-adding kernels (D3, D5) also write xb = x * (the next norm's weight) and
        // x's sums of squares in groups of 4, so a norm-folded matvec reads x * g and only
        // scales its outputs by 1/rms(x), summing n_embd / 4 values for it: D4 and the head do;
        // D1's is taken by the attention prologue (D2), so D1 is a plain matvec (the first
        // layer's multiplies its loads by attn_norm: no kernel before it wrote x * g).
        for (l, (w, j)) in weights.layers.iter().zip(fused).enumerate() {
            // D1: qkv = Wqkv (x * attn_norm)
            let (d1_x, d1_gain) = match l {
                0 => (&a.x, Some(&w.attn_norm)),
                _ => (&a.xb, None),
            };
            let qkv = MatvecQ1_0Bindings {
                w: &j.wqkv,
                x: d1_x,
                y: &a.qkv,
                opts: plain,
            };
            let gain = Fusion {
                gain: d1_gain,
                ..Fusion::default()
            };
            f.push("qkv", MatvecQ1_0::fused(ctx, cache, &qkv, &gain)?);
            // D2: q, k, v = qkv / rms(x); q, k = rope(qk_norm(q, k)); cache[pos] <- k, v;
            // per-chunk attention partials
            let attention = AttentionDecodeBindings {
                step: &a.step,
                q: &a.qkv,
                kv,
                layer: l,
                scratch,
                out: &a.xb,
            };
            let rope = RopeInput {
                qk_norm: &j.qk_norm,
                x_res: &a.x,
                n_embd: c.n_embd,
                eps,
            };
            f.push(
                "attention",
                AttentionDecode::fused(ctx, cache, &attention, &rope)?,
            );
            // D3: x += Wo merge(partials); xb = x * ffn_norm
            let wo = MatvecQ1_0Bindings {
                w: &w.wo,
                x: &scratch.part_o,
                y: &a.x,
                opts: residual,
            };
            let merge = Fusion {
                merge: Some(MergeInput {
                    step: &a.step,
                    part_ml: &scratch.part_ml,
                    head_dim: kv.dims.head_dim,
                    chunk: scratch.chunk,
                    max_chunks: scratch.max_chunks,
                }),
                norm_out: Some(NormOut {
                    g_next: &w.ffn_norm,
                    out: &a.xb,
                    sumsq: &a.x_sumsq,
                }),
                ..Fusion::default()
            };
            f.push("wo", MatvecQ1_0::fused(ctx, cache, &wo, &merge)?);
            // D4: hb = silu(Wgate xn) * (Wup xn), xn = (x * ffn_norm) / rms(x)
            let gate_up = MatvecQ1_0Bindings {
                w: &j.w_gate_up,
                x: &a.xb,
                y: &a.hb,
                opts: plain,
            };
            let glu = Fusion {
                rms: Some((&a.x_sumsq, eps)),
                glu: true,
                ..Fusion::default()
            };
            f.push("gate/up", MatvecQ1_0::fused(ctx, cache, &gate_up, &glu)?);
            // D5: x += Wdown hb; xb = x * (next layer's attn_norm, or output_norm)
            let down = MatvecQ1_0Bindings {
                w: &w.w_down,
                x: &a.hb,
                y: &a.x,
                opts: residual,
            };
            let next_norm = match weights.layers.get(l + 1) {
                Some(next) => &next.attn_norm,
                None => &weights.output_norm,
            };
            let down_fusion = Fusion {
                norm_out: Some(NormOut {
                    g_next: next_norm,
                    out: &a.xb,
                    sumsq: &a.x_sumsq,
                }),
                ..Fusion::default()
            };
            f.push("down", MatvecQ1_0::fused(ctx, cache, &down, &down_fusion)?);
        }
        let layers = std::mem::take(&mut f.steps);

        // logits = Wout (rmsnorm(x) * output_norm), argmax stage 1 per row group; stage 2.
        let n_partials = MatvecQ1_0::argmax_partials(head_w);
        // The chosen id goes to tokens[0], the next step's input, as the unfused head's does.
        let argmax = Argmax::over_partials(ctx, cache, n_partials, Some(&a.tokens))?;
        let head = MatvecQ1_0Bindings {
            w: head_w,
            x: &a.xb,
            y: &a.logits,
            opts: plain,
        };
        let head_fusion = Fusion {
            rms: Some((&a.x_sumsq, eps)),
            argmax: Some((&argmax.partial_val, &argmax.partial_idx)),
            ..Fusion::default()
        };
        f.push("head", MatvecQ1_0::fused(ctx, cache, &head, &head_fusion)?);
        f.push("argmax", argmax);
        Ok(Some(FusedDecode {
            layers,
            head: f.steps,
        }))
    }
}

/// Records `steps` for `step` into one pass.
pub(super) fn encode(steps: &[Step], pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
    for s in steps {
        s.op.encode(pass, step);
    }
}

/// One decode step of several sequences ([`super::GpuBatch`]): every weight is read once per
/// step for all of them. Row `i` of the batch activations is one sequence's token; the layers'
/// linear parts run as matmuls over the rows (the prefill kernels, the same arithmetic for a
/// row whatever the other rows are), and each sequence's attention runs between them on its
/// own session's cache.
pub(super) struct BatchForward {
    /// Embedding of the rows' tokens.
    pub embed: Vec<Step>,
    /// Per layer, before attention: `xb = rmsnorm(x) * attn_norm; q, k, v = W xb`.
    pub pre: Vec<Vec<Step>>,
    /// Per layer, after attention: `x += Wo xb`, then the feed-forward block.
    pub post: Vec<Vec<Step>>,
    /// Final norm of every row and the LM head into `logits` (rows, n_vocab).
    pub head: Vec<Step>,
}

impl BatchForward {
    /// Builds the steps over the batch activations `a` (`n_rows` rows) and the (n_rows,
    /// n_vocab) `logits`.
    pub fn new(
        model: &GpuModel,
        a: &Activations,
        logits: &wgpu::Buffer,
        n_rows: usize,
    ) -> Result<BatchForward> {
        let (ctx, c, weights) = (&*model.ctx, &model.config, &model.weights);
        let mut f = Builder {
            ctx,
            cache: &model.pipelines,
            a,
            max_batch: n_rows,
            eps: c.rms_eps,
            steps: Vec::new(),
        };
        let matmul = |w: &Q1_0Weight, x: &wgpu::Buffer, y: &wgpu::Buffer, out: Out| {
            MatmulQ1_0::new(
                ctx,
                &model.pipelines,
                &MatmulQ1_0Bindings {
                    step: &a.step,
                    x,
                    w,
                    y,
                    max_tokens: n_rows,
                    accumulate: matches!(out, Out::Add),
                    small_tiles: true,
                },
            )
        };
        use Out::{Add, Set};
        let embed = EmbedQ1_0Bindings {
            table: &weights.token_embd,
            tokens: &a.tokens,
            x: &a.x,
            max_tokens: n_rows as u32,
        };
        f.push("embed", EmbedQ1_0::new(ctx, f.cache, &embed)?);
        let embed = std::mem::take(&mut f.steps);
        let (mut pre, mut post) = (Vec::new(), Vec::new());
        for w in &weights.layers {
            f.push("attn_norm", f.rmsnorm(&a.x, &w.attn_norm, &a.xb, c.n_embd)?);
            f.push("qkv matvec", matmul(&w.wq, &a.xb, &a.q, Set)?);
            f.push("qkv matvec", matmul(&w.wk, &a.xb, &a.k, Set)?);
            f.push("qkv matvec", matmul(&w.wv, &a.xb, &a.v, Set)?);
            pre.push(std::mem::take(&mut f.steps));
            // xb holds the rows' attention outputs here, copied in from the sessions.
            f.push("wo matvec", matmul(&w.wo, &a.xb, &a.x, Add)?);
            f.push("ffn_norm", f.rmsnorm(&a.x, &w.ffn_norm, &a.xb, c.n_embd)?);
            f.push("gate/up matvec", matmul(&w.w_gate, &a.xb, &a.hb, Set)?);
            f.push("gate/up matvec", matmul(&w.w_up, &a.xb, &a.hb2, Set)?);
            let silu = SiluMulBindings {
                hb: &a.hb,
                hb2: &a.hb2,
                n: c.n_ff as u32,
                max_tokens: n_rows as u32,
            };
            f.push("silu_mul", SiluMul::new(ctx, f.cache, &silu)?);
            f.push("down matvec", matmul(&w.w_down, &a.hb, &a.x, Add)?);
            post.push(std::mem::take(&mut f.steps));
        }
        f.push(
            "head norm",
            f.rmsnorm(&a.x, &weights.output_norm, &a.xb, c.n_embd)?,
        );
        f.push("head matvec", matmul(weights.head(), &a.xb, logits, Set)?);
        Ok(BatchForward {
            embed,
            pre,
            post,
            head: f.steps,
        })
    }
}
