//! The KV cache and the RoPE table on the GPU.
//!
//! # Layout (recorded in ARCHITECTURE.md)
//! - One K and one V buffer per layer, each `(n_ctx, n_head_kv, head_dim)` values stored as **f16
//!   packed two per u32** (`pack2x16float` / `unpack2x16float`, low half = even dim). This needs
//!   no `shader-f16` feature, halves the memory of an f32 cache and matches llama.cpp's default
//!   f16 cache type. Position `p`, kv head `h`, dims `2w, 2w+1` live in word
//!   `(p * n_head_kv + h) * head_dim / 2 + w`. A position's heads are contiguous, so one token's
//!   write is one contiguous run and a decode chunk of positions is one contiguous range.
//! - Per layer and per K/V: `n_ctx * n_head_kv * head_dim * 2` bytes (1.7B at 32k: 64 MiB), which
//!   must fit one storage binding; [`KvCache::new`] refuses with [`Error::Limit`] otherwise.
//! - Entries at positions `>= n_past` are garbage and never read (attention reads `0..n_kv`), so
//!   truncating the cache is free.
//! - The RoPE table holds `(cos, sin)` for every position and rotated pair:
//!   `(n_ctx, n_rot / 2)` `vec2<f32>`, computed on the CPU once with the CPU reference's own
//!   [`RopeParams::cos_sin`] (YaRN ramp and mscale included). The shader then rotates with exactly
//!   the reference's angles; WGSL only bounds `sin`/`cos` error inside `[-pi, pi]`, and positions
//!   up to 32k give angles up to 32k radians. Cost: `n_ctx * n_rot * 4` bytes (16 MiB at 32k).

use super::buffers::{storage_buffer, storage_buffer_init};
use super::context::GpuContext;
use crate::model::config::Qwen3Config;
use crate::model::rope::RopeParams;
use crate::{Error, Result};

/// Attention shape shared by the attention ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (fewer than `n_head` under GQA).
    pub n_head_kv: usize,
    /// Dimension of one head.
    pub head_dim: usize,
}

impl AttnDims {
    /// The attention shape of the model described by `cfg`.
    pub fn from_config(cfg: &Qwen3Config) -> Self {
        AttnDims {
            n_head: cfg.n_head,
            n_head_kv: cfg.n_head_kv,
            head_dim: cfg.head_dim,
        }
    }

    /// Query heads per kv head (GQA group size).
    pub fn group(&self) -> usize {
        self.n_head / self.n_head_kv
    }

    /// Length of one token's query vector, `n_head * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Length of one token's key (or value) vector, `n_head_kv * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// 1 / sqrt(head_dim), the attention score scale.
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    /// Rejects shapes the attention shaders cannot run (each shader documents its bounds).
    pub fn check(&self) -> Result<()> {
        let bad = |why: String| {
            Err(Error::InvalidArgument(format!(
                "attention shape {self:?}: {why}"
            )))
        };
        if self.n_head == 0 || self.n_head_kv == 0 || self.head_dim == 0 {
            return bad("zero dimension".into());
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad("n_head is not a multiple of n_head_kv".into());
        }
        if !self.head_dim.is_multiple_of(8) || self.head_dim > 128 {
            return bad("head_dim must be a multiple of 8 and at most 128".into());
        }
        if self.group() > 8 {
            return bad("more than 8 query heads per kv head".into());
        }
        Ok(())
    }
}

/// K and V of one layer: `(n_ctx, n_head_kv, head_dim)` f16, two per u32.
#[derive(Debug)]
pub struct LayerKv {
    /// Keys: (n_ctx, n_head_kv, head_dim / 2) u32 = f16 pairs.
    pub k: wgpu::Buffer,
    /// Values: (n_ctx, n_head_kv, head_dim / 2) u32 = f16 pairs.
    pub v: wgpu::Buffer,
}

/// The whole KV cache plus the RoPE table sized for it.
#[derive(Debug)]
pub struct KvCache {
    /// Positions the cache holds (the context length).
    pub n_ctx: usize,
    /// Attention shape the buffers are sized for.
    pub dims: AttnDims,
    /// Rotated dimensions per head (RoPE acts on the first `n_rot` of `head_dim`).
    pub n_rot: usize,
    /// One K/V pair per layer: (n_layer).
    pub layers: Vec<LayerKv>,
    /// RoPE table: (n_ctx, n_rot / 2) `vec2<f32>` = (cos, sin).
    pub rope: wgpu::Buffer,
}

impl KvCache {
    /// Layer `i`'s keys and values; an error when the cache has fewer layers.
    pub fn layer(&self, i: usize) -> Result<&LayerKv> {
        self.layers
            .get(i)
            .ok_or_else(|| Error::InvalidArgument(format!("KV cache has no layer {i}")))
    }

    /// Allocates the cache for `n_ctx` positions of the model described by `cfg`.
    pub fn new(ctx: &GpuContext, cfg: &Qwen3Config, n_ctx: usize) -> Result<KvCache> {
        Self::with_dims(
            ctx,
            cfg.n_layer,
            AttnDims::from_config(cfg),
            &cfg.rope,
            n_ctx,
        )
    }

    /// As [`Self::new`] from the raw shape (tests use small shapes without a model).
    pub fn with_dims(
        ctx: &GpuContext,
        n_layer: usize,
        dims: AttnDims,
        rope: &RopeParams,
        n_ctx: usize,
    ) -> Result<KvCache> {
        dims.check()?;
        if n_ctx == 0 {
            return Err(Error::InvalidArgument("KV cache of 0 positions".into()));
        }
        if rope.n_rot == 0 || !rope.n_rot.is_multiple_of(2) || rope.n_rot > dims.head_dim {
            return Err(Error::InvalidArgument(format!(
                "rope n_rot {} must be even and at most head_dim {}",
                rope.n_rot, dims.head_dim
            )));
        }
        let layer_bytes = Self::layer_bytes(dims, n_ctx);
        let allowed = ctx.max_binding_bytes().min(ctx.limits.max_buffer_size);
        if layer_bytes > allowed {
            return Err(Error::Limit {
                limit: "max_storage_buffer_binding_size (KV cache per layer)",
                needed: layer_bytes,
                allowed,
            });
        }
        let layers = (0..n_layer)
            .map(|l| {
                Ok(LayerKv {
                    k: storage_buffer(ctx, &format!("kv.k[{l}]"), layer_bytes)?,
                    v: storage_buffer(ctx, &format!("kv.v[{l}]"), layer_bytes)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let table = rope_table(rope, n_ctx);
        Ok(KvCache {
            n_ctx,
            dims,
            n_rot: rope.n_rot,
            layers,
            rope: storage_buffer_init(ctx, "rope table", &table)?,
        })
    }

    /// Bytes of one layer's K (or V) buffer.
    pub fn layer_bytes(dims: AttnDims, n_ctx: usize) -> u64 {
        n_ctx as u64 * dims.kv_dim() as u64 * 2
    }

    /// Total bytes of K and V over all layers (excluding the RoPE table).
    pub fn total_bytes(&self) -> u64 {
        2 * self.layers.len() as u64 * Self::layer_bytes(self.dims, self.n_ctx)
    }
}

/// `(cos, sin)` for every position `0..n_ctx` and pair `i0 / 2` (`i0` even, `< n_rot`), as the
/// CPU reference computes them: `(n_ctx, n_rot / 2)`.
pub fn rope_table(p: &RopeParams, n_ctx: usize) -> Vec<[f32; 2]> {
    let half = p.n_rot / 2;
    let mut table = Vec::with_capacity(n_ctx * half);
    for pos in 0..n_ctx {
        for i in 0..half {
            let (c, s) = p.cos_sin(pos, 2 * i);
            table.push([c, s]);
        }
    }
    table
}

/// Packs f32 values to the cache's f16 pairs (round to nearest even), for tests and uploads.
pub fn pack_f16(values: &[f32]) -> Vec<u32> {
    values
        .chunks(2)
        .map(|c| {
            let lo = half::f16::from_f32(c[0]).to_bits() as u32;
            let hi = half::f16::from_f32(c.get(1).copied().unwrap_or(0.0)).to_bits() as u32;
            lo | (hi << 16)
        })
        .collect()
}

/// Unpacks the cache's f16 pairs to f32.
pub fn unpack_f16(words: &[u32]) -> Vec<f32> {
    words
        .iter()
        .flat_map(|&w| {
            [
                half::f16::from_bits(w as u16).to_f32(),
                half::f16::from_bits((w >> 16) as u16).to_f32(),
            ]
        })
        .collect()
}
