//! One layer's attention core on the GPU, between the q/k/v projections and attn_output, as the
//! forward pass builds it: per-head q/k RMSNorm + RoPE + KV cache write ([`QkNormRope`]), then
//! attention over the cache: flash-decoding for one token ([`AttentionDecode`], `step.n_kv`
//! positions), causal flash attention for a batch ([`AttentionPrefill`]). Both read and write
//! the same buffers.

use super::buffers::StepParams;
use super::context::GpuContext;
use super::kernel::{DecodeOrPrefill, Op, PipelineCache};
use super::kv_cache::KvCache;
use super::ops::attention_decode::{AttentionDecode, AttentionDecodeBindings, DecodeScratch};
use super::ops::attention_prefill::{AttentionPrefill, AttentionPrefillBindings};
use super::ops::qk_norm_rope::{QkNormRope, QkNormRopeBindings};
use crate::Result;

/// What the attention core of one layer reads and writes.
pub struct AttentionBindings<'a> {
    /// `StepParams` uniform (`pos`, `n_tokens`, `n_kv` of the current step).
    pub step: &'a wgpu::Buffer,
    /// Queries, the wq output, normalised and rotated in place: (max_tokens, n_head, head_dim) f32.
    pub q: &'a wgpu::Buffer,
    /// Keys, the wk output: (max_tokens, n_head_kv, head_dim) f32.
    pub k: &'a wgpu::Buffer,
    /// Values, the wv output: (max_tokens, n_head_kv, head_dim) f32.
    pub v: &'a wgpu::Buffer,
    /// The layer's attn_q_norm weight: (head_dim) f32.
    pub q_norm: &'a wgpu::Buffer,
    /// The layer's attn_k_norm weight: (head_dim) f32.
    pub k_norm: &'a wgpu::Buffer,
    /// The KV cache and RoPE table.
    pub kv: &'a KvCache,
    /// Layer index into `kv.layers`.
    pub layer: usize,
    /// Per-chunk partial results of decode attention, shared by all layers.
    pub scratch: &'a DecodeScratch,
    /// Attention output, the input of attn_output: (max_tokens, n_head, head_dim) f32.
    pub out: &'a wgpu::Buffer,
    /// RMSNorm epsilon of the q/k norms.
    pub eps: f32,
    /// Most tokens of a step.
    pub max_tokens: usize,
}

/// The attention core of one layer, built once at load time.
#[derive(Clone, Debug)]
pub struct LayerAttention {
    /// `q, k = rope(rmsnorm(q), rmsnorm(k))`; `cache[pos..] = k, v`.
    pub rope: QkNormRope,
    /// `out = attention(q, cache[..n_kv])`: decode or prefill kernels by the step's tokens.
    pub attend: DecodeOrPrefill<AttentionDecode, AttentionPrefill>,
}

impl LayerAttention {
    /// Builds layer `b.layer`'s kernels.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        b: &AttentionBindings<'_>,
    ) -> Result<LayerAttention> {
        let rope = QkNormRope::new(
            ctx,
            cache,
            &QkNormRopeBindings {
                step: b.step,
                q: b.q,
                k: b.k,
                v: b.v,
                q_norm: b.q_norm,
                k_norm: b.k_norm,
                kv: b.kv,
                layer: b.layer,
                eps: b.eps,
                max_tokens: b.max_tokens,
            },
        )?;
        let decode = AttentionDecode::new(
            ctx,
            cache,
            &AttentionDecodeBindings {
                step: b.step,
                q: b.q,
                kv: b.kv,
                layer: b.layer,
                scratch: b.scratch,
                out: b.out,
            },
        )?;
        let prefill = AttentionPrefill::new(
            ctx,
            cache,
            &AttentionPrefillBindings {
                step: b.step,
                q: b.q,
                kv: b.kv,
                layer: b.layer,
                out: b.out,
                max_tokens: b.max_tokens,
            },
        )?;
        Ok(LayerAttention {
            rope,
            attend: DecodeOrPrefill { decode, prefill },
        })
    }
}

/// RoPE and cache write, then attention, for the step's tokens.
impl Op for LayerAttention {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        self.rope.encode(pass, step);
        self.attend.encode(pass, step);
    }
}
