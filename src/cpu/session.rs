//! One conversation on the CPU reference: run state, KV cache and the forward pass.

use std::sync::Arc;

use crate::cache_type::CacheType;
use crate::cpu::model::CpuModel;
use crate::cpu::ops::{
    Matrix, argmax, causal_attention, for_each_parallel, qk_norm_rope, rmsnorm, silu_mul, top_k,
};
use crate::engine::{Engine, candidates, check_argmax, check_truncate};
use crate::error::{Error, Result};
use crate::model::config::Qwen3Config;
use crate::model::weights::LayerWeights;

/// Most tokens one forward pass of [`CpuSession`] runs together; longer feeds are split. Its
/// attention scores take `MAX_BATCH * n_ctx` floats (32 MiB at 32k tokens).
pub const MAX_BATCH: usize = 256;

/// One layer's weights as the CPU reference holds them.
pub type CpuLayer = LayerWeights<Matrix, Vec<f32>>;

/// Activations of one token's forward pass, llama2.c names, and the layer's steps around the
/// attention core (which needs the KV cache: [`CpuSession`] runs it between the two).
#[derive(Clone, Debug)]
pub struct RunState {
    /// (n_embd) residual stream
    pub x: Vec<f32>,
    /// (max(n_embd, q_dim)) normed input / attention output
    pub xb: Vec<f32>,
    /// (n_embd) projection output before the residual add
    pub xb2: Vec<f32>,
    /// (n_head * head_dim)
    pub q: Vec<f32>,
    /// (n_head_kv * head_dim)
    pub k: Vec<f32>,
    /// (n_head_kv * head_dim)
    pub v: Vec<f32>,
    /// (n_ff) gate, then silu(gate) * up
    pub hb: Vec<f32>,
    /// (n_ff) up
    pub hb2: Vec<f32>,
    /// Matvecs in the GPU q8 path's arithmetic ([`Matrix::matvec_q8`]) instead of f32.
    pub q8: bool,
}

impl RunState {
    /// Zeroed activations for a model shaped like `c`.
    pub fn new(c: &Qwen3Config) -> RunState {
        RunState {
            x: vec![0.0; c.n_embd],
            xb: vec![0.0; c.n_embd.max(c.q_dim())],
            xb2: vec![0.0; c.n_embd],
            q: vec![0.0; c.q_dim()],
            k: vec![0.0; c.kv_dim()],
            v: vec![0.0; c.kv_dim()],
            hb: vec![0.0; c.n_ff],
            hb2: vec![0.0; c.n_ff],
            q8: false,
        }
    }

    /// The layer's steps before the attention core: `xb = rmsnorm(x) * attn_norm`, then
    /// `q, k, v = Wq xb, Wk xb, Wv xb`.
    pub fn attention_input(&mut self, c: &Qwen3Config, w: &CpuLayer) {
        let xb = &mut self.xb[..c.n_embd];
        rmsnorm(xb, &self.x, &w.attn_norm, c.rms_eps);
        mv(self.q8, &w.wq, &mut self.q, xb);
        mv(self.q8, &w.wk, &mut self.k, xb);
        mv(self.q8, &w.wv, &mut self.v, xb);
    }

    /// The layer's steps after the attention core, whose output is in `xb[..q_dim]`:
    /// `x += Wo xb`, then the feed-forward block `x += Wdown (silu(Wgate xb) * Wup xb)` with
    /// `xb = rmsnorm(x) * ffn_norm`.
    pub fn attention_output(&mut self, c: &Qwen3Config, w: &CpuLayer) {
        mv(self.q8, &w.wo, &mut self.xb2, &self.xb[..c.q_dim()]);
        add(&mut self.x, &self.xb2);
        let xb = &mut self.xb[..c.n_embd];
        rmsnorm(xb, &self.x, &w.ffn_norm, c.rms_eps);
        mv(self.q8, &w.w_gate, &mut self.hb, xb);
        mv(self.q8, &w.w_up, &mut self.hb2, xb);
        silu_mul(&mut self.hb, &self.hb2);
        mv(self.q8, &w.w_down, &mut self.xb2, &self.hb);
        add(&mut self.x, &self.xb2);
    }

    /// The head: `logits = Wout (rmsnorm(x) * output_norm)` (the tied or separate LM head).
    pub fn logits(&mut self, model: &CpuModel, logits: &mut [f32]) {
        let c = &model.config;
        let xb = &mut self.xb[..c.n_embd];
        rmsnorm(xb, &self.x, &model.weights.output_norm, c.rms_eps);
        mv(self.q8, model.weights.head(), logits, xb);
    }
}

/// `out = w x`, in the q8 path's arithmetic when `q8`.
fn mv(q8: bool, w: &Matrix, out: &mut [f32], x: &[f32]) {
    match q8 {
        true => w.matvec_q8(out, x),
        false => w.matvec(out, x),
    }
}

/// The residual add: `x += d`.
fn add(x: &mut [f32], d: &[f32]) {
    for (x, d) in x.iter_mut().zip(d) {
        *x += d;
    }
}

/// A KV cache plus run state over a shared [`CpuModel`].
pub struct CpuSession {
    model: Arc<CpuModel>,
    s: RunState,
    logits: Vec<f32>,      // (n_vocab)
    key_cache: Vec<f32>,   // (n_layer, n_ctx, n_head_kv * head_dim)
    value_cache: Vec<f32>, // (n_layer, n_ctx, n_head_kv * head_dim)
    /// When set, stored K/V rows are rounded through this type (the GPU cache's arithmetic).
    cache_type: Option<CacheType>,
    n_ctx: usize,
    n_past: usize,
    /// Whether `logits` holds the logits of position n_past - 1.
    logits_valid: bool,
    /// Whether `s.x` holds the final residual stream of position n_past - 1 (false after truncate).
    x_valid: bool,
}

impl CpuSession {
    /// A session whose cache holds `n_ctx` tokens (at most the model's training context), in
    /// exact f32.
    pub fn new(model: Arc<CpuModel>, n_ctx: usize) -> Result<CpuSession> {
        Self::with_cache_type(model, n_ctx, None)
    }

    /// As [`Self::new`], rounding every stored K and V row through `cache_type` when given
    /// ([`CacheType::round_trip`]): the reference for a GPU session with that cache type.
    pub fn with_cache_type(
        model: Arc<CpuModel>,
        n_ctx: usize,
        cache_type: Option<CacheType>,
    ) -> Result<CpuSession> {
        let c = &model.config;
        if let Some(t) = cache_type
            && !c.head_dim.is_multiple_of(t.block())
        {
            return Err(Error::InvalidArgument(format!(
                "a {t} cache needs head_dim {} to be a multiple of {}",
                c.head_dim,
                t.block()
            )));
        }
        if n_ctx == 0 || n_ctx > c.n_ctx_train {
            return Err(Error::InvalidArgument(format!(
                "n_ctx {n_ctx} must be in 1..={}",
                c.n_ctx_train
            )));
        }
        let cache_len = c.n_layer * n_ctx * c.kv_dim();
        Ok(CpuSession {
            s: RunState::new(c),
            logits: vec![0.0; c.n_vocab],
            key_cache: vec![0.0; cache_len],
            value_cache: vec![0.0; cache_len],
            cache_type,
            n_ctx,
            n_past: 0,
            logits_valid: false,
            x_valid: false,
            model,
        })
    }

    /// Runs the matvecs in the GPU q8 path's arithmetic ([`Matrix::matvec_q8`]) when `on`: the
    /// tight reference of a GPU session on [`crate::gpu::KernelPath::Q8`].
    pub fn with_q8_activations(mut self, on: bool) -> CpuSession {
        self.s.q8 = on;
        self
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<CpuModel> {
        &self.model
    }

    /// Runs one token at position `n_past` and returns the logits for the next token.
    pub fn forward(&mut self, token: u32) -> Result<&[f32]> {
        self.forward_batch(&[token], true)?;
        Ok(&self.logits)
    }

    /// Runs `tokens` (at most [`MAX_BATCH`]) at positions `n_past..`; computes the logits of the
    /// last one only when asked (a prompt's earlier batches skip it).
    ///
    /// Each layer runs its per-token steps for every token (natively split across threads),
    /// writes their K and V rows to the cache, then attends for all of them at once (query `i`
    /// sees positions `0..=n_past + i`, [`causal_attention`]). Every token's arithmetic is what
    /// it would be fed alone: batching only changes how often the weights and the cache are read.
    fn forward_batch(&mut self, tokens: &[u32], want_logits: bool) -> Result<()> {
        let model = Arc::clone(&self.model);
        let c = &model.config;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(Error::BadToken {
                id,
                n_vocab: c.n_vocab,
            });
        }
        let pos0 = self.n_past;
        if pos0 + tokens.len() > self.n_ctx {
            return Err(Error::ContextOverflow {
                needed: pos0 + tokens.len(),
                capacity: self.n_ctx,
            });
        }
        let Some(last) = tokens.len().checked_sub(1) else {
            return Ok(());
        };
        let (kv_dim, q_dim) = (c.kv_dim(), c.q_dim());
        let cache_type = self.cache_type;
        let q8 = self.s.q8;

        // token embeddings: one row of token_embd each, (n_tokens) run states
        let mut states: Vec<RunState> = tokens
            .iter()
            .map(|&token| {
                let mut s = RunState::new(c);
                s.q8 = q8;
                model.weights.token_embd.embed(token as usize, &mut s.x);
                s
            })
            .collect();
        let mut q = vec![0.0; tokens.len() * q_dim]; // (n_tokens, n_head * head_dim)
        let mut att = vec![0.0; tokens.len() * q_dim]; // (n_tokens, n_head * head_dim)

        for (l, w) in model.weights.layers.iter().enumerate() {
            // per token: q, k, v, then per-head q/k norm and RoPE at its position, and k and v
            // rounded as the GPU cache stores them, if asked
            let (q_norm, k_norm, eps) = (&w.attn_q_norm, &w.attn_k_norm, c.rms_eps);
            for_each_parallel(&mut states, |i, s| {
                s.attention_input(c, w);
                qk_norm_rope(&mut s.q, &mut s.k, q_norm, k_norm, eps, pos0 + i, &c.rope);
                if let Some(t) = cache_type {
                    t.round_trip(&mut s.k);
                    t.round_trip(&mut s.v);
                }
            });

            // the attention core: k and v into the cache at their positions, then causal GQA
            // attention of every token over positions 0..=its own into xb
            let layer = l * self.n_ctx * kv_dim..(l + 1) * self.n_ctx * kv_dim;
            let (k_cache, v_cache) = (
                &mut self.key_cache[layer.clone()],
                &mut self.value_cache[layer],
            );
            for (i, s) in states.iter().enumerate() {
                let row = (pos0 + i) * kv_dim..(pos0 + i + 1) * kv_dim;
                k_cache[row.clone()].copy_from_slice(&s.k);
                v_cache[row].copy_from_slice(&s.v);
                q[i * q_dim..(i + 1) * q_dim].copy_from_slice(&s.q);
            }
            let (positions, n_head_kv) = (pos0..pos0 + tokens.len(), c.n_head_kv);
            causal_attention(
                &mut att, &q, k_cache, v_cache, positions, n_head_kv, c.head_dim,
            );

            for_each_parallel(&mut states, |i, s| {
                s.xb[..q_dim].copy_from_slice(&att[i * q_dim..(i + 1) * q_dim]);
                s.attention_output(c, w);
            });
        }

        self.s = states.swap_remove(last);
        self.n_past += tokens.len();
        self.x_valid = true;
        self.logits_valid = want_logits;
        if want_logits {
            self.s.logits(&model, &mut self.logits);
        }
        Ok(())
    }

    fn last_logits(&mut self) -> Result<&[f32]> {
        if self.n_past == 0 || !self.x_valid {
            return Err(Error::InvalidArgument(
                "no logits: feed a token first (after a reset or truncate)".into(),
            ));
        }
        if !self.logits_valid {
            self.s.logits(&self.model, &mut self.logits);
            self.logits_valid = true;
        }
        Ok(&self.logits)
    }
}

impl Engine for CpuSession {
    fn n_vocab(&self) -> usize {
        self.model.config.n_vocab
    }

    fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    fn n_past(&self) -> usize {
        self.n_past
    }

    async fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        if self.n_past + tokens.len() > self.n_ctx {
            return Err(Error::ContextOverflow {
                needed: self.n_past + tokens.len(),
                capacity: self.n_ctx,
            });
        }
        let n_batches = tokens.len().div_ceil(MAX_BATCH);
        for (b, batch) in tokens.chunks(MAX_BATCH).enumerate() {
            self.forward_batch(batch, b + 1 == n_batches)?;
        }
        Ok(())
    }

    async fn logits(&mut self) -> Result<Vec<f32>> {
        Ok(self.last_logits()?.to_vec())
    }

    async fn greedy(&mut self) -> Result<u32> {
        let n_vocab = self.model.config.n_vocab;
        check_argmax(argmax(self.last_logits()?), n_vocab)
    }

    async fn top_k(&mut self, k: usize) -> Result<Vec<(u32, f32)>> {
        let n_vocab = self.model.config.n_vocab;
        Ok(candidates(&top_k(self.last_logits()?, k), n_vocab))
    }

    fn truncate(&mut self, n_past: usize) -> Result<()> {
        check_truncate(n_past, self.n_past)?;
        if n_past < self.n_past {
            // x and logits belong to a dropped position: only a new feed makes them valid again
            self.logits_valid = false;
            self.x_valid = false;
        }
        self.n_past = n_past;
        Ok(())
    }
}
