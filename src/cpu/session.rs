//! One conversation on the CPU reference: run state, KV cache and the forward pass.

use std::sync::Arc;

use crate::cpu::model::CpuModel;
use crate::cpu::ops::{rmsnorm, rmsnorm_heads, rope_neox, silu, softmax};
use crate::engine::{Engine, argmax, check_truncate, top_k_of};
use crate::error::{Error, Result};

/// Activations of the forward pass, llama2.c names.
struct RunState {
    x: Vec<f32>,      // (n_embd) residual stream
    xb: Vec<f32>,     // (max(n_embd, q_dim)) normed input / attention output
    xb2: Vec<f32>,    // (n_embd) projection output before the residual add
    q: Vec<f32>,      // (n_head * head_dim)
    k: Vec<f32>,      // (n_head_kv * head_dim)
    v: Vec<f32>,      // (n_head_kv * head_dim)
    att: Vec<f32>,    // (n_ctx) scores of one head
    hb: Vec<f32>,     // (n_ff) gate, then silu(gate) * up
    hb2: Vec<f32>,    // (n_ff) up
    logits: Vec<f32>, // (n_vocab)
}

/// A KV cache plus run state over a shared [`CpuModel`].
pub struct CpuSession {
    model: Arc<CpuModel>,
    s: RunState,
    key_cache: Vec<f32>,   // (n_layer, n_ctx, n_head_kv * head_dim)
    value_cache: Vec<f32>, // (n_layer, n_ctx, n_head_kv * head_dim)
    n_ctx: usize,
    n_past: usize,
    /// Whether `s.logits` holds the logits of position n_past - 1.
    logits_valid: bool,
    /// Whether `s.x` holds the final residual stream of position n_past - 1 (false after truncate).
    x_valid: bool,
}

impl CpuSession {
    /// A session whose cache holds `n_ctx` tokens (at most the model's training context).
    pub fn new(model: Arc<CpuModel>, n_ctx: usize) -> Result<CpuSession> {
        let c = &model.config;
        if n_ctx == 0 || n_ctx > c.n_ctx_train {
            return Err(Error::InvalidArgument(format!(
                "n_ctx {n_ctx} must be in 1..={}",
                c.n_ctx_train
            )));
        }
        let cache_len = c.n_layer * n_ctx * c.kv_dim();
        let s = RunState {
            x: vec![0.0; c.n_embd],
            xb: vec![0.0; c.n_embd.max(c.q_dim())],
            xb2: vec![0.0; c.n_embd],
            q: vec![0.0; c.q_dim()],
            k: vec![0.0; c.kv_dim()],
            v: vec![0.0; c.kv_dim()],
            att: vec![0.0; n_ctx],
            hb: vec![0.0; c.n_ff],
            hb2: vec![0.0; c.n_ff],
            logits: vec![0.0; c.n_vocab],
        };
        Ok(CpuSession {
            s,
            key_cache: vec![0.0; cache_len],
            value_cache: vec![0.0; cache_len],
            n_ctx,
            n_past: 0,
            logits_valid: false,
            x_valid: false,
            model,
        })
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<CpuModel> {
        &self.model
    }

    /// Runs one token at position `n_past` and returns the logits for the next token.
    pub fn forward(&mut self, token: u32) -> Result<&[f32]> {
        self.step(token, true)?;
        Ok(&self.s.logits)
    }

    /// Runs one token; computes logits only when asked (prompt positions before the last skip it).
    fn step(&mut self, token: u32, want_logits: bool) -> Result<()> {
        let model = Arc::clone(&self.model);
        let c = &model.config;
        if token as usize >= c.n_vocab {
            return Err(Error::BadToken {
                id: token,
                n_vocab: c.n_vocab,
            });
        }
        if self.n_past >= self.n_ctx {
            return Err(Error::ContextOverflow {
                needed: self.n_past + 1,
                capacity: self.n_ctx,
            });
        }
        let pos = self.n_past;
        let (head_dim, kv_dim, group) = (c.head_dim, c.kv_dim(), c.gqa_group());
        let s = &mut self.s;

        // token embedding: one Q1_0 row of token_embd
        crate::quant::q1_0::dequantize_row_q1_0(
            model.weights.token_embd.row(token as usize),
            &mut s.x,
        );

        for (l, w) in model.weights.layers.iter().enumerate() {
            // attention: rmsnorm, q/k/v projections, per-head q/k norm, RoPE
            rmsnorm(&mut s.xb[..c.n_embd], &s.x, &w.attn_norm, c.rms_eps);
            w.wq.matvec(&mut s.q, &s.xb[..c.n_embd]);
            w.wk.matvec(&mut s.k, &s.xb[..c.n_embd]);
            w.wv.matvec(&mut s.v, &s.xb[..c.n_embd]);
            rmsnorm_heads(&mut s.q, &w.attn_q_norm, c.rms_eps);
            rmsnorm_heads(&mut s.k, &w.attn_k_norm, c.rms_eps);
            rope_neox(&mut s.q, head_dim, pos, &c.rope);
            rope_neox(&mut s.k, head_dim, pos, &c.rope);

            // store k, v at this position
            let layer_off = l * self.n_ctx * kv_dim;
            let row = layer_off + pos * kv_dim;
            self.key_cache[row..row + kv_dim].copy_from_slice(&s.k);
            self.value_cache[row..row + kv_dim].copy_from_slice(&s.v);

            // causal GQA attention over positions 0..=pos, one query head at a time
            let scale = 1.0 / (head_dim as f32).sqrt();
            for h in 0..c.n_head {
                let q = &s.q[h * head_dim..(h + 1) * head_dim];
                let kv_off = (h / group) * head_dim;
                let att = &mut s.att[..=pos];
                for (t, a) in att.iter_mut().enumerate() {
                    let k = &self.key_cache[layer_off + t * kv_dim + kv_off..][..head_dim];
                    *a = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                }
                softmax(att);
                let out = &mut s.xb[h * head_dim..(h + 1) * head_dim];
                out.fill(0.0);
                for (t, &a) in att.iter().enumerate() {
                    let v = &self.value_cache[layer_off + t * kv_dim + kv_off..][..head_dim];
                    for (o, &vi) in out.iter_mut().zip(v) {
                        *o += a * vi;
                    }
                }
            }
            w.wo.matvec(&mut s.xb2, &s.xb[..c.q_dim()]);
            for (x, d) in s.x.iter_mut().zip(&s.xb2) {
                *x += d;
            }

            // feed-forward: rmsnorm, silu(gate) * up, down
            rmsnorm(&mut s.xb[..c.n_embd], &s.x, &w.ffn_norm, c.rms_eps);
            w.w_gate.matvec(&mut s.hb, &s.xb[..c.n_embd]);
            w.w_up.matvec(&mut s.hb2, &s.xb[..c.n_embd]);
            for (g, &u) in s.hb.iter_mut().zip(&s.hb2) {
                *g = silu(*g) * u;
            }
            w.w_down.matvec(&mut s.xb2, &s.hb);
            for (x, d) in s.x.iter_mut().zip(&s.xb2) {
                *x += d;
            }
        }

        self.n_past += 1;
        self.x_valid = true;
        self.logits_valid = want_logits;
        if want_logits {
            // final norm, then the (possibly tied) LM head
            rmsnorm(
                &mut s.xb[..c.n_embd],
                &s.x,
                &model.weights.output_norm,
                c.rms_eps,
            );
            model
                .weights
                .head()
                .matvec(&mut s.logits, &s.xb[..c.n_embd]);
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
            let c = &self.model.config;
            rmsnorm(
                &mut self.s.xb[..c.n_embd],
                &self.s.x,
                &self.model.weights.output_norm,
                c.rms_eps,
            );
            self.model
                .weights
                .head()
                .matvec(&mut self.s.logits, &self.s.xb[..c.n_embd]);
            self.logits_valid = true;
        }
        Ok(&self.s.logits)
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
        for (i, &t) in tokens.iter().enumerate() {
            self.step(t, i + 1 == tokens.len())?;
        }
        Ok(())
    }

    async fn logits(&mut self) -> Result<Vec<f32>> {
        Ok(self.last_logits()?.to_vec())
    }

    async fn greedy(&mut self) -> Result<u32> {
        Ok(argmax(self.last_logits()?))
    }

    async fn top_k(&mut self, k: usize) -> Result<Vec<(u32, f32)>> {
        Ok(top_k_of(self.last_logits()?, k))
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
