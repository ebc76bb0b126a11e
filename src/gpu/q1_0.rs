//! GPU layout of Q1_0 weights.
//!
//! GGUF Q1_0 stores 18-byte blocks (`f16 d`, `qs[16]`) that are not 4-byte aligned, which WGSL
//! cannot read efficiently. We repack a `[K, N]` tensor (N rows of K) into two u32 arrays of
//! exactly the same total size:
//! - `signs`: `(N, K/32)` u32 words, row-major; bit `b` of word `w` of a row is weight `32w + b`
//!   (the same LSB-first order as `qs`); bit 1 means `+d`, bit 0 means `-d`.
//! - `scales`: `(N * K/128)` f16 block scales, two per u32 (low half first), read in WGSL with
//!   `unpack2x16float`, so no shader-f16 is needed.
//!
//! The block format itself (size, bit order) is [`crate::quant::q1_0`]'s; this module only
//! rearranges it.
//!
//! A part (a run of rows) must fit one storage binding; bigger tensors (the 8B head) are split
//! into several parts, each with its own pair of buffers.

use super::buffers::storage_buffer_init;
use super::context::GpuContext;
use crate::quant::q1_0;
use crate::{Error, Result};

/// Repacks GGUF Q1_0 bytes of a `[k, n]` tensor into `(signs, scales)` (see module docs).
/// `scales` has `ceil(n * k / 256)` words; an odd count of halves is padded with a zero half.
pub fn repack_q1_0(bytes: &[u8], k: usize, n: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    q1_0::check_shape("q1_0", bytes.len(), k, n)?;
    let blocks = q1_0::blocks(bytes);
    let mut signs = Vec::with_capacity(blocks.len() * 4);
    let mut scales = vec![0u32; blocks.len().div_ceil(2)];
    for (i, block) in blocks.iter().enumerate() {
        scales[i / 2] |= u32::from(block.scale_bits()) << (16 * (i % 2));
        signs.extend(block.sign_words());
    }
    Ok((signs, scales))
}

/// Rows per part so that neither the signs nor the scales of a part exceed `max_binding` bytes.
/// Even, so every part's scales start on a word boundary.
pub fn rows_per_part(k: usize, n: usize, max_binding: u64) -> Result<usize> {
    let sign_row_bytes = (k / 8) as u64;
    let rows = (max_binding / sign_row_bytes) as usize & !1;
    if rows == 0 {
        return Err(Error::Limit {
            limit: "max_storage_buffer_binding_size",
            needed: 2 * sign_row_bytes,
            allowed: max_binding,
        });
    }
    Ok(rows.min(n.next_multiple_of(2)))
}

/// A run of rows `row0 .. row0 + n_rows` of a Q1_0 weight on the GPU.
#[derive(Debug)]
pub struct Q1_0Part {
    /// First row of the weight this part holds.
    pub row0: usize,
    /// Rows in this part.
    pub n_rows: usize,
    /// Sign words, one bit per weight: (n_rows, k/32) u32.
    pub signs: wgpu::Buffer,
    /// Block scales: (n_rows * k / q1_0::QK1_0) f16 scales, 2 per u32.
    pub scales: wgpu::Buffer,
}

/// A Q1_0 weight `[k, n]` (n rows of k) uploaded in one or more parts.
#[derive(Debug)]
pub struct Q1_0Weight {
    /// Tensor name in the GGUF file (for labels and errors).
    pub name: String,
    /// Row length: weights per row, a multiple of [`q1_0::QK1_0`].
    pub k: usize,
    /// Number of rows (output width of a matvec).
    pub n: usize,
    /// Row ranges, in order, each within one storage binding.
    pub parts: Vec<Q1_0Part>,
}

impl Q1_0Weight {
    /// Repacks and uploads GGUF Q1_0 bytes, splitting at the device's storage binding limit.
    pub fn upload(ctx: &GpuContext, name: &str, bytes: &[u8], k: usize, n: usize) -> Result<Self> {
        Self::upload_with_limit(ctx, name, bytes, k, n, ctx.max_binding_bytes())
    }

    /// As [`Self::upload`] with an explicit per-binding byte limit (tests force splitting).
    pub fn upload_with_limit(
        ctx: &GpuContext,
        name: &str,
        bytes: &[u8],
        k: usize,
        n: usize,
        max_binding: u64,
    ) -> Result<Self> {
        q1_0::check_shape(name, bytes.len(), k, n)?;
        let rows = rows_per_part(k, n, max_binding.min(ctx.max_binding_bytes()))?;
        let row_bytes = q1_0::row_bytes(k);
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < n {
            let n_rows = rows.min(n - row0);
            let src = &bytes[row0 * row_bytes..(row0 + n_rows) * row_bytes];
            let (signs, scales) = repack_q1_0(src, k, n_rows)?;
            parts.push(Q1_0Part {
                row0,
                n_rows,
                signs: storage_buffer_init(ctx, &format!("{name}.signs[{row0}..]"), &signs)?,
                scales: storage_buffer_init(ctx, &format!("{name}.scales[{row0}..]"), &scales)?,
            });
            row0 += n_rows;
        }
        Ok(Q1_0Weight {
            name: name.to_string(),
            k,
            n,
            parts,
        })
    }

    /// Total bytes on the GPU (equals the GGUF Q1_0 size, up to per-part padding to 4 bytes).
    pub fn gpu_bytes(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| p.signs.size() + p.scales.size())
            .sum()
    }
}
