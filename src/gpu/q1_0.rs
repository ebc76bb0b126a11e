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
//! A part (a run of rows) must fit one storage binding; bigger tensors (the 8B head) are split
//! into several parts, each with its own pair of buffers.

use super::context::GpuContext;
use super::op::storage_buffer_init;
use crate::{Error, Result};

/// Weights per Q1_0 block.
pub const Q1_0_BLOCK: usize = 128;
/// Bytes per Q1_0 block (f16 scale + 16 sign bytes).
pub const Q1_0_BLOCK_BYTES: usize = 18;

fn check_shape(name: &str, len: usize, k: usize, n: usize) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::BadTensor {
            name: name.to_string(),
            reason,
        })
    };
    if k == 0 || !k.is_multiple_of(Q1_0_BLOCK) {
        return bad(format!(
            "Q1_0 row length {k} is not a positive multiple of 128"
        ));
    }
    let want = (k / Q1_0_BLOCK)
        .checked_mul(n)
        .and_then(|b| b.checked_mul(Q1_0_BLOCK_BYTES));
    if want != Some(len) {
        return bad(format!("Q1_0 [{k}, {n}] needs {want:?} bytes, got {len}"));
    }
    Ok(())
}

/// Repacks GGUF Q1_0 bytes of a `[k, n]` tensor into `(signs, scales)` (see module docs).
/// `scales` has `ceil(n * k / 256)` words; an odd count of halves is padded with a zero half.
pub fn repack_q1_0(bytes: &[u8], k: usize, n: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    check_shape("q1_0", bytes.len(), k, n)?;
    let n_blocks = n * k / Q1_0_BLOCK;
    let mut signs = Vec::with_capacity(n_blocks * 4);
    let mut scales = vec![0u32; n_blocks.div_ceil(2)];
    for (i, block) in bytes.chunks_exact(Q1_0_BLOCK_BYTES).enumerate() {
        let d = u16::from_le_bytes([block[0], block[1]]) as u32;
        scales[i / 2] |= d << (16 * (i % 2));
        for w in block[2..].chunks_exact(4) {
            signs.push(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        }
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
    /// Block scales: (n_rows * k/128) f16 scales, 2 per u32.
    pub scales: wgpu::Buffer,
}

/// A Q1_0 weight `[k, n]` (n rows of k) uploaded in one or more parts.
#[derive(Debug)]
pub struct Q1_0Weight {
    /// Tensor name in the GGUF file (for labels and errors).
    pub name: String,
    /// Row length: weights per row, a multiple of 128.
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
        check_shape(name, bytes.len(), k, n)?;
        let rows = rows_per_part(k, n, max_binding.min(ctx.max_binding_bytes()))?;
        let row_bytes = k / Q1_0_BLOCK * Q1_0_BLOCK_BYTES;
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
