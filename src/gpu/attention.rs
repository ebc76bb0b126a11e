//! One layer's attention core on the GPU, between the q/k/v projections and attn_output:
//! per-head q/k RMSNorm + RoPE + KV cache write, then attention over the cache. Decode and
//! prefill share every buffer; only the kernels (and their dispatch sizes) differ:
//!
//! - decode (one token at `step.pos`): `qk_norm_rope` for 1 token, then flash-decoding
//!   (`attention_decode` partial + merge over `step.n_kv` positions);
//! - prefill (up to `max_batch` tokens at `step.pos..`): `qk_norm_rope` for the batch, then causal
//!   flash attention (`attention_prefill`).
//!
//! Separate decode kernels keep the per-token path free of workgroups sized for a batch.

use super::context::GpuContext;
use super::kernel::{Kernel, PipelineCache};
use super::kv_cache::KvCache;
use super::ops::attention_decode::{self, AttentionDecode, DecodeScratch};
use super::ops::{attention_prefill, qk_norm_rope};
use crate::Result;

/// Buffers the attention core of every layer binds (the session's run state).
pub struct AttentionBuffers<'a> {
    /// `StepParams` uniform (`pos`, `n_tokens`, `n_kv` of the current step).
    pub step: &'a wgpu::Buffer,
    /// Queries, the wq output, normalised and rotated in place: (max_batch, n_head, head_dim) f32.
    pub q: &'a wgpu::Buffer,
    /// Keys, the wk output: (max_batch, n_head_kv, head_dim) f32.
    pub k: &'a wgpu::Buffer,
    /// Values, the wv output: (max_batch, n_head_kv, head_dim) f32.
    pub v: &'a wgpu::Buffer,
    /// Attention output, the input of attn_output: (max_batch, n_head, head_dim) f32.
    pub out: &'a wgpu::Buffer,
    /// Per-chunk partial results of decode attention, shared by all layers.
    pub scratch: &'a DecodeScratch,
    /// The KV cache and RoPE table.
    pub kv: &'a KvCache,
}

/// The attention core of one layer, built once at load time.
#[derive(Clone, Debug)]
pub struct LayerAttention {
    /// QK-norm + RoPE + cache write for one token.
    pub rope_decode: Kernel,
    /// Flash-decoding attention of one token (partial + merge).
    pub decode: AttentionDecode,
    /// QK-norm + RoPE + cache write for a batch of up to `max_batch` tokens.
    pub rope_prefill: Kernel,
    /// Causal attention of the batch over the cache.
    pub prefill: Kernel,
    /// Query tokens per `attention_prefill` workgroup (the y dimension of its dispatch).
    pub prefill_tokens_per_workgroup: u32,
}

impl LayerAttention {
    /// Builds layer `layer`'s kernels; `q_norm`, `k_norm` are its attn_q_norm / attn_k_norm
    /// weights, (head_dim) f32 each.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        b: &AttentionBuffers<'_>,
        layer: usize,
        q_norm: &wgpu::Buffer,
        k_norm: &wgpu::Buffer,
        eps: f32,
        max_batch: usize,
    ) -> Result<LayerAttention> {
        let rope = |max_tokens| {
            qk_norm_rope::build(
                ctx,
                cache,
                eps,
                max_tokens,
                &qk_norm_rope::QkNormRopeBindings {
                    step: b.step,
                    q: b.q,
                    k: b.k,
                    v: b.v,
                    q_norm,
                    k_norm,
                    kv: b.kv,
                    layer,
                },
            )
        };
        Ok(LayerAttention {
            rope_decode: rope(1)?,
            decode: attention_decode::build(
                ctx,
                cache,
                &attention_decode::AttentionDecodeBindings {
                    step: b.step,
                    q: b.q,
                    kv: b.kv,
                    layer,
                    scratch: b.scratch,
                    out: b.out,
                },
            )?,
            rope_prefill: rope(max_batch)?,
            prefill_tokens_per_workgroup: attention_prefill::tokens_per_workgroup(b.kv.dims) as u32,
            prefill: attention_prefill::build(
                ctx,
                cache,
                max_batch,
                &attention_prefill::AttentionPrefillBindings {
                    step: b.step,
                    q: b.q,
                    kv: b.kv,
                    layer,
                    out: b.out,
                },
            )?,
        })
    }

    /// Records the decode path: `q`, `k`, `v` hold one token; `out` gets its attention output.
    /// Dispatches only the cache chunks that hold keys: `n_kv` must
    /// be the step's `step.n_kv` (the token's position + 1).
    pub fn encode_decode_kv(&self, pass: &mut wgpu::ComputePass<'_>, n_kv: u32) {
        self.rope_decode.encode(pass);
        self.decode.encode_kv(pass, n_kv);
    }

    /// Records the prefill path for `n_tokens` (= `step.n_tokens`, <= max_batch) tokens,
    /// dispatching only the workgroups those tokens need.
    pub fn encode_prefill(&self, pass: &mut wgpu::ComputePass<'_>, n_tokens: u32) {
        let [heads, max_tokens, _] = self.rope_prefill.workgroups;
        self.rope_prefill
            .encode_groups(pass, [heads, n_tokens.min(max_tokens), 1]);
        let [kv_heads, max_tiles, _] = self.prefill.workgroups;
        let tiles = n_tokens.div_ceil(self.prefill_tokens_per_workgroup);
        self.prefill
            .encode_groups(pass, [kv_heads, tiles.min(max_tiles), 1]);
    }
}
