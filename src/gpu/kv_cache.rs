//! The KV cache and the RoPE table on the GPU.
//!
//! # Layout (recorded in ARCHITECTURE.md)
//! One K and one V buffer per layer, each holding `(n_ctx, n_head_kv, head_dim)` values in the
//! session's [`CacheType`]. A row is one position's one kv head; row `r = p * n_head_kv + h`.
//! A position's heads are contiguous, so one token's write is one contiguous run and a decode
//! chunk of positions is one contiguous range.
//! - **f16**: values packed two per u32 (`pack2x16float` / `unpack2x16float`, low half = even
//!   dim). No `shader-f16` needed; half the memory of f32; llama.cpp's default cache type. Dims
//!   `2w, 2w+1` of row `r` are word `r * head_dim / 2 + w`.
//! - **q8_0**: llama.cpp's Q8_0 blocks (32 values, f16 scale `d = max|x| / 127`, i8
//!   `round(x / d)`, see [`crate::quant::quantize_block_q8_0`]), stored as two regions of one
//!   buffer because 34-byte blocks are not word aligned: first the quants, `(rows, head_dim / 4)`
//!   u32 words of four i8 (value `4w + i` in byte `i`), then from word [`KvCache::scale_base`]
//!   the scales, `(rows, ceil(head_dim / 64))` words of two f16 (block `b` of a row in half
//!   `b % 2` of word `b / 2`). For head_dim 128 a row is 136 bytes, exactly llama.cpp's 4 x 34.
//!   Shaders take `KV_Q8` and `SCALE_BASE` as override constants ([`KvCache::overrides`]); the
//!   cache is read block by block and never expanded.
//! - Per layer and per K/V: [`KvCache::layer_bytes`] (1.7B at 32k: 64 MiB f16, 34 MiB q8_0),
//!   which must fit one storage binding; [`KvCache::new`] refuses with [`Error::Limit`] otherwise
//!   (the session's memory plan refuses earlier, naming the largest context that fits).
//! - Entries at positions `>= n_past` are garbage and never read (attention reads `0..n_kv`), so
//!   truncating the cache is free.
//! - The RoPE table holds `(cos, sin)` for every position and rotated pair:
//!   `(n_ctx, n_rot / 2)` `vec2<f32>`, computed on the CPU once with the model's
//!   [`RopeParams::cos_sin`] (YaRN ramp and mscale included), the angles the CPU reference
//!   rotates with. The shader then rotates with exactly the reference's angles; WGSL only bounds `sin`/`cos` error inside `[-pi, pi]`, and positions
//!   up to 32k give angles up to 32k radians. Cost: `n_ctx * n_rot * 4` bytes (16 MiB at 32k).

use super::buffers::{storage_buffer, storage_buffer_init};
use super::context::GpuContext;
use crate::cache_type::CacheType;
use crate::model::config::Qwen3Config;
use crate::model::rope::RopeParams;
use crate::quant::{QK8_0, quantize_block_q8_0};
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
        if !self.head_dim.is_multiple_of(16) || self.head_dim > 128 {
            return bad("head_dim must be a multiple of 16 and at most 128".into());
        }
        if self.group() > 8 {
            return bad("more than 8 query heads per kv head".into());
        }
        Ok(())
    }
}

/// K and V of one layer: `(n_ctx, n_head_kv, head_dim)` values in the cache type's layout.
#[derive(Debug)]
pub struct LayerKv {
    /// Keys: f16 (n_ctx, n_head_kv, head_dim / 2) u32 pairs, or q8_0 quants + scales.
    pub k: wgpu::Buffer,
    /// Values: same layout as `k`.
    pub v: wgpu::Buffer,
}

/// The whole KV cache plus the RoPE table sized for it.
#[derive(Debug)]
pub struct KvCache {
    /// Positions the cache holds (the context length).
    pub n_ctx: usize,
    /// How K and V values are stored.
    pub cache_type: CacheType,
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
    pub fn new(
        ctx: &GpuContext,
        cfg: &Qwen3Config,
        n_ctx: usize,
        cache_type: CacheType,
    ) -> Result<KvCache> {
        Self::with_type(
            ctx,
            cfg.n_layer,
            AttnDims::from_config(cfg),
            &cfg.rope,
            n_ctx,
            cache_type,
        )
    }

    /// An f16 cache from the raw shape (tests use small shapes without a model).
    pub fn with_dims(
        ctx: &GpuContext,
        n_layer: usize,
        dims: AttnDims,
        rope: &RopeParams,
        n_ctx: usize,
    ) -> Result<KvCache> {
        Self::with_type(ctx, n_layer, dims, rope, n_ctx, CacheType::F16)
    }

    /// As [`Self::with_dims`] with a cache type.
    pub fn with_type(
        ctx: &GpuContext,
        n_layer: usize,
        dims: AttnDims,
        rope: &RopeParams,
        n_ctx: usize,
        cache_type: CacheType,
    ) -> Result<KvCache> {
        dims.check()?;
        if !dims.head_dim.is_multiple_of(cache_type.block()) {
            return Err(Error::InvalidArgument(format!(
                "a {cache_type} cache needs head_dim {} to be a multiple of {}",
                dims.head_dim,
                cache_type.block()
            )));
        }
        if n_ctx == 0 {
            return Err(Error::InvalidArgument("KV cache of 0 positions".into()));
        }
        if rope.n_rot == 0 || !rope.n_rot.is_multiple_of(2) || rope.n_rot > dims.head_dim {
            return Err(Error::InvalidArgument(format!(
                "rope n_rot {} must be even and at most head_dim {}",
                rope.n_rot, dims.head_dim
            )));
        }
        let layer_bytes = Self::layer_bytes(dims, n_ctx, cache_type);
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
            cache_type,
            dims,
            n_rot: rope.n_rot,
            layers,
            rope: storage_buffer_init(ctx, "rope table", &table)?,
        })
    }

    /// Bytes of one layer's K (or V) buffer.
    pub fn layer_bytes(dims: AttnDims, n_ctx: usize, cache_type: CacheType) -> u64 {
        n_ctx as u64 * dims.n_head_kv as u64 * 4 * row_words(dims.head_dim, cache_type) as u64
    }

    /// Total bytes of K and V over all layers (excluding the RoPE table).
    pub fn total_bytes(&self) -> u64 {
        2 * self.layers.len() as u64 * Self::layer_bytes(self.dims, self.n_ctx, self.cache_type)
    }

    /// Q8_0: the word offset of the scale region in each K/V buffer (0 for f16).
    pub fn scale_base(&self) -> u32 {
        match self.cache_type {
            CacheType::F16 => 0,
            CacheType::Q8_0 => (self.n_ctx * self.dims.kv_dim() / 4) as u32,
        }
    }

    /// The override constants every shader reading or writing the cache takes: `KV_Q8` (bool)
    /// and `SCALE_BASE` (see the module docs).
    pub fn overrides(&self) -> [(&'static str, f64); 2] {
        [
            (
                "KV_Q8",
                f64::from(u8::from(self.cache_type == CacheType::Q8_0)),
            ),
            ("SCALE_BASE", f64::from(self.scale_base())),
        ]
    }
}

/// u32 words of one cache row (one position, one kv head) of `head_dim` values.
fn row_words(head_dim: usize, cache_type: CacheType) -> usize {
    match cache_type {
        CacheType::F16 => head_dim / 2,
        CacheType::Q8_0 => head_dim / 4 + q8_scale_words(head_dim),
    }
}

/// Q8_0: scale words per cache row (two f16 scales each, the last one half empty when the row
/// has an odd number of blocks).
fn q8_scale_words(head_dim: usize) -> usize {
    (head_dim / QK8_0).div_ceil(2)
}

/// Packs `rows` cache rows of `head_dim` f32 values (`(rows, head_dim)`) into a Q8_0 cache
/// buffer's words (quants, then scales), quantizing as the cache write kernel does; for tests
/// and uploads. The scales follow the quants, so `rows` must be the whole cache
/// (`n_ctx * n_head_kv`) for the result to match [`KvCache::scale_base`].
pub fn pack_q8_0(values: &[f32], head_dim: usize) -> Vec<u32> {
    let rows = values.len() / head_dim;
    let sw = q8_scale_words(head_dim);
    let mut quants = Vec::with_capacity(values.len() / 4);
    let mut scales = vec![0u32; rows * sw];
    for (r, row) in values.chunks_exact(head_dim).enumerate() {
        for (b, x) in row.chunks_exact(QK8_0).enumerate() {
            let block = quantize_block_q8_0(x);
            let d = u16::from_le_bytes(block.d) as u32;
            scales[r * sw + b / 2] |= d << (16 * (b % 2));
            quants.extend(
                block
                    .qs
                    .chunks_exact(4)
                    .map(|q| u32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8])),
            );
        }
    }
    quants.extend(scales);
    quants
}

/// Unpacks a Q8_0 cache buffer's words holding `rows` rows of `head_dim` values to f32
/// (`(rows, head_dim)`), as the attention kernels read them: `f16(d) * q`.
pub fn unpack_q8_0(words: &[u32], rows: usize, head_dim: usize) -> Vec<f32> {
    let sw = q8_scale_words(head_dim);
    let (quants, scales) = words.split_at(rows * head_dim / 4);
    let mut out = Vec::with_capacity(rows * head_dim);
    for r in 0..rows {
        for j in 0..head_dim {
            let b = j / QK8_0;
            let word = scales[r * sw + b / 2];
            let d = half::f16::from_bits((word >> (16 * (b % 2))) as u16).to_f32();
            let q = (quants[(r * head_dim + j) / 4] >> (8 * (j % 4))) as u8 as i8;
            out.push(d * f32::from(q));
        }
    }
    out
}

/// `(cos, sin)` for every position `0..n_ctx` and pair `i0 / 2` (`i0` even, `< n_rot`), as the
/// CPU reference rotates with them: `(n_ctx, n_rot / 2)`.
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
