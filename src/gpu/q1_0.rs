//! GPU layout of Q1_0 and Q2_0 weights.
//!
//! GGUF Q1_0 and Q2_0 both store 18-byte blocks (`f16 d`, `qs[16]`) that are not 4-byte aligned,
//! which WGSL cannot read efficiently. We repack a `[K, N]` tensor (N rows of K) into two u32
//! arrays of exactly the same total size:
//! - `signs` (the codes): `(N, K * bits / 32)` u32 words, row-major, the bytes of `qs` in order.
//!   Q1_0 (1 bit): bit `b` of word `w` of a row is weight `32w + b` (LSB first); 1 means `+d`,
//!   0 means `-d`. Q2_0 (2 bits): bits `2b, 2b + 1` of word `w` are the code `c` of weight
//!   `16w + b`, value `(c - 1) * d`.
//! - `scales`: `(N * K/block)` f16 block scales (block = 128 for Q1_0, 64 for Q2_0), two per
//!   u32 (low half first), read in WGSL with `unpack2x16float`, so no shader-f16 is needed.
//!
//! Both formats have 4 code words per block, so one repack serves both; the
//! [`WeightFormat`] picks the block size and the shaders.
//!
//! F32, F16 and BF16 linear weights (only mixed-type files have them) are uploaded as dense f32
//! rows, `(N, K)`, exact, and use the `*_f32` kernels: they have no scales.
//!
//! The block formats themselves (size, bit order) are [`crate::quant::q1_0`]'s and
//! [`crate::quant::q2_0`]'s; this module only rearranges them.
//!
//! A part (a run of rows) must fit one storage binding; bigger tensors (the 8B head) are split
//! into several parts, each with its own pair of buffers.

use super::buffers::storage_buffer_init;
use super::context::GpuContext;
use crate::gguf::GgmlType;
use crate::quant::dequantize_row;
use crate::quant::q1_0::{Q1_0_BLOCK_BYTES, QK1_0};
use crate::quant::q2_0::{Q2_0_BLOCK_BYTES, QK2_0};
use crate::{Error, Result};

/// Bytes per block, both packed formats: an f16 scale and 16 code bytes.
const BLOCK_BYTES: usize = Q1_0_BLOCK_BYTES;
const _: () = assert!(Q1_0_BLOCK_BYTES == Q2_0_BLOCK_BYTES);
/// u32 code words per block, both packed formats (16 code bytes).
const WORDS_PER_BLOCK: usize = (BLOCK_BYTES - 2) / 4;

/// How a linear weight lives on the GPU: which layout its buffers have and which shaders the
/// ops pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// Q1_0: 128 weights of 1 bit per block, packed.
    Q1_0,
    /// Q2_0: 64 weights of 2 bits per block, packed.
    Q2_0,
    /// Dense f32 rows: F32, F16 and BF16 tensors (widened at upload).
    F32,
}

impl WeightFormat {
    /// The GPU format of a GGML type, or `None` when the GPU cannot hold a linear weight of
    /// that type.
    pub fn of(ty: GgmlType) -> Option<WeightFormat> {
        match ty {
            GgmlType::Q1_0 => Some(WeightFormat::Q1_0),
            GgmlType::Q2_0 => Some(WeightFormat::Q2_0),
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => Some(WeightFormat::F32),
            _ => None,
        }
    }

    /// Weights per block (one f16 scale each for the packed formats; 4 for dense rows, whose
    /// kernels read vec4s).
    pub fn block(self) -> usize {
        match self {
            WeightFormat::Q1_0 => QK1_0,
            WeightFormat::Q2_0 => QK2_0,
            WeightFormat::F32 => 4,
        }
    }

    /// Weights per u32 word of the first buffer (1 for dense rows).
    pub fn weights_per_word(self) -> usize {
        match self {
            WeightFormat::F32 => 1,
            packed => packed.block() / WORDS_PER_BLOCK,
        }
    }

    /// Whether the weight has a second buffer of f16 block scales.
    pub fn has_scales(self) -> bool {
        self != WeightFormat::F32
    }
}

fn check_shape(ty: GgmlType, name: &str, len: usize, k: usize, n: usize) -> Result<WeightFormat> {
    let bad = |reason: String| {
        Err(Error::BadTensor {
            name: name.to_string(),
            reason,
        })
    };
    let Some(format) = WeightFormat::of(ty) else {
        return bad(format!(
            "type {ty} is not a GPU weight type (Q1_0, Q2_0, F32, F16, BF16)"
        ));
    };
    let block = format.block();
    if k == 0 || !k.is_multiple_of(block) {
        return bad(format!(
            "{ty} row length {k} is not a positive multiple of {block}"
        ));
    }
    let want = ty.row_bytes(k as u64).and_then(|r| r.checked_mul(n as u64));
    if want != Some(len as u64) {
        return bad(format!("{ty} [{k}, {n}] needs {want:?} bytes, got {len}"));
    }
    Ok(format)
}

/// Repacks GGUF Q1_0 bytes of a `[k, n]` tensor into `(signs, scales)` (see module docs).
/// `scales` has `ceil(n * k / 256)` words; an odd count of halves is padded with a zero half.
pub fn repack_q1_0(bytes: &[u8], k: usize, n: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    repack(GgmlType::Q1_0, bytes, k, n)
}

/// Repacks GGUF Q1_0 or Q2_0 bytes of a `[k, n]` tensor into `(codes, scales)` (see module
/// docs). `scales` has `ceil(n * k / block / 2)` words; an odd count of halves is padded with a
/// zero half.
pub fn repack(ty: GgmlType, bytes: &[u8], k: usize, n: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let format = check_shape(ty, "packed weight", bytes.len(), k, n)?;
    if !format.has_scales() {
        return Err(Error::InvalidArgument(format!(
            "{ty} is not a packed format"
        )));
    }
    let n_blocks = n * k / format.block();
    let mut codes = Vec::with_capacity(n_blocks * WORDS_PER_BLOCK);
    let mut scales = vec![0u32; n_blocks.div_ceil(2)];
    for (i, block) in bytes.chunks_exact(BLOCK_BYTES).enumerate() {
        let d = u16::from_le_bytes([block[0], block[1]]) as u32;
        scales[i / 2] |= d << (16 * (i % 2));
        for w in block[2..].chunks_exact(4) {
            codes.push(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        }
    }
    Ok((codes, scales))
}

/// Rows per part so that neither the codes (or dense rows) nor the scales of a part exceed
/// `max_binding` bytes. Even, so every part's scales start on a word boundary.
pub fn rows_per_part(format: WeightFormat, k: usize, n: usize, max_binding: u64) -> Result<usize> {
    let row_bytes = (k / format.weights_per_word() * 4) as u64;
    let rows = (max_binding / row_bytes) as usize & !1;
    if rows == 0 {
        return Err(Error::Limit {
            limit: "max_storage_buffer_binding_size",
            needed: 2 * row_bytes,
            allowed: max_binding,
        });
    }
    Ok(rows.min(n.next_multiple_of(2)))
}

/// A run of rows `row0 .. row0 + n_rows` of a weight on the GPU.
#[derive(Debug)]
pub struct Q1_0Part {
    /// First row of the weight this part holds.
    pub row0: usize,
    /// Rows in this part.
    pub n_rows: usize,
    /// Row of the buffers where this part starts: 0, or the offset of a row view into a fused
    /// weight's buffers ([`Q1_0Weight::concat`]).
    pub w_row0: usize,
    /// Whether the buffers belong to another weight (a row view): not counted in
    /// [`Q1_0Weight::gpu_bytes`].
    pub is_view: bool,
    /// Packed: code words, (n_rows, k * bits / 32) u32 (Q1_0: one sign bit per weight).
    /// Dense: the rows, (n_rows, k) f32.
    pub signs: wgpu::Buffer,
    /// Block scales, (n_rows * k / block) f16, 2 per u32; `None` for dense rows.
    pub scales: Option<wgpu::Buffer>,
}

impl Q1_0Part {
    /// The part's weight bindings, in shader order: codes then scales (dense: the rows).
    pub fn bindings(&self) -> Vec<wgpu::BindingResource<'_>> {
        std::iter::once(&self.signs)
            .chain(self.scales.as_ref())
            .map(wgpu::Buffer::as_entire_binding)
            .collect()
    }
}

/// A linear weight `[k, n]` (n rows of k) on the GPU in one or more parts: Q1_0 or Q2_0 packed
/// (never expanded), or dense f32 rows for F32 / F16 / BF16 tensors.
#[derive(Debug)]
pub struct Q1_0Weight {
    /// Tensor name in the GGUF file (for labels and errors).
    pub name: String,
    /// The layout of the buffers: picks the shaders of the ops.
    pub format: WeightFormat,
    /// Row length: weights per row, a multiple of the format's block.
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
        Self::upload_as(ctx, GgmlType::Q1_0, name, bytes, k, n, max_binding)
    }

    /// Uploads the GGUF bytes of a `[k, n]` tensor of type `ty` (Q1_0, Q2_0 repacked; F32,
    /// F16, BF16 as f32 rows) in parts of at most `max_binding` bytes (capped at the device's
    /// storage binding limit).
    pub fn upload_as(
        ctx: &GpuContext,
        ty: GgmlType,
        name: &str,
        bytes: &[u8],
        k: usize,
        n: usize,
        max_binding: u64,
    ) -> Result<Self> {
        let format = check_shape(ty, name, bytes.len(), k, n)?;
        let rows = rows_per_part(format, k, n, max_binding.min(ctx.max_binding_bytes()))?;
        let row_bytes = bytes.len() / n.max(1);
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < n {
            let n_rows = rows.min(n - row0);
            let src = &bytes[row0 * row_bytes..(row0 + n_rows) * row_bytes];
            let label = |what: &str| format!("{name}.{what}[{row0}..]");
            let (signs, scales) = if format.has_scales() {
                let (codes, scales) = repack(ty, src, k, n_rows)?;
                let scales = storage_buffer_init(ctx, &label("scales"), &scales)?;
                (
                    storage_buffer_init(ctx, &label("codes"), &codes)?,
                    Some(scales),
                )
            } else {
                let mut rows_f32 = vec![0.0f32; n_rows * k];
                dequantize_row(ty, src, &mut rows_f32)?;
                (storage_buffer_init(ctx, &label("rows"), &rows_f32)?, None)
            };
            parts.push(Q1_0Part {
                row0,
                n_rows,
                w_row0: 0,
                is_view: false,
                signs,
                scales,
            });
            row0 += n_rows;
        }
        Ok(Q1_0Weight {
            name: name.to_string(),
            format,
            k,
            n,
            parts,
        })
    }

    /// u32 words per row of the first buffer (code words, or f32 values for dense rows).
    pub fn words_per_row(&self) -> usize {
        self.k / self.format.weights_per_word()
    }

    /// Total bytes on the GPU (packed: the GGUF size, up to per-part padding to 4 bytes); 0
    /// for a row view.
    pub fn gpu_bytes(&self) -> u64 {
        self.parts
            .iter()
            .filter(|p| !p.is_view)
            .map(|p| p.signs.size() + p.scales.as_ref().map_or(0, wgpu::Buffer::size))
            .sum()
    }

    /// The rows of `ws` in order as one weight named `name`, copied on the GPU (the fused decode
    /// plan's q|k|v and gate|up), or `None` when they cannot be joined: a dense or split weight,
    /// different formats or row lengths, or a weight whose scales end mid-word.
    pub fn concat(ctx: &GpuContext, name: &str, ws: &[&Q1_0Weight]) -> Result<Option<Q1_0Weight>> {
        if !Self::joinable(ctx, ws) {
            return Ok(None);
        }
        let (format, k) = (ws[0].format, ws[0].k);
        let n: usize = ws.iter().map(|w| w.n).sum();
        let code_bytes = |w: &Q1_0Weight| (w.n * w.words_per_row() * 4) as u64;
        let scale_bytes = |w: &Q1_0Weight| (w.n * k / format.block() * 2) as u64;
        let total_codes: u64 = ws.iter().map(|w| code_bytes(w)).sum();
        let total_scales: u64 = ws.iter().map(|w| scale_bytes(w)).sum();
        let signs = super::buffers::storage_buffer(ctx, &format!("{name}.codes"), total_codes)?;
        let scales = super::buffers::storage_buffer(ctx, &format!("{name}.scales"), total_scales)?;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("concat weights"),
            });
        let (mut at_codes, mut at_scales) = (0, 0);
        for w in ws {
            let part = &w.parts[0];
            let Some(src_scales) = part.scales.as_ref() else {
                return Ok(None);
            };
            encoder.copy_buffer_to_buffer(&part.signs, 0, &signs, at_codes, code_bytes(w));
            encoder.copy_buffer_to_buffer(src_scales, 0, &scales, at_scales, scale_bytes(w));
            at_codes += code_bytes(w);
            at_scales += scale_bytes(w);
        }
        ctx.queue.submit([encoder.finish()]);
        Ok(Some(Q1_0Weight {
            name: name.to_string(),
            format,
            k,
            n,
            parts: vec![Q1_0Part {
                row0: 0,
                n_rows: n,
                w_row0: 0,
                is_view: false,
                signs,
                scales: Some(scales),
            }],
        }))
    }

    /// Whether [`Self::concat`] can join `ws`: packed, one part each (not views), the same
    /// format and row length, scales ending on a word, and the result within one binding.
    pub fn joinable(ctx: &GpuContext, ws: &[&Q1_0Weight]) -> bool {
        let Some(first) = ws.first() else {
            return false;
        };
        let (format, k) = (first.format, first.k);
        let codes: u64 = ws
            .iter()
            .map(|w| (w.n * w.words_per_row() * 4) as u64)
            .sum();
        codes <= ctx.max_binding_bytes()
            && ws.iter().all(|w| {
                w.format == format
                    && w.format.has_scales()
                    && w.k == k
                    && w.parts.len() == 1
                    && !w.parts[0].is_view
                    && (w.n * k / format.block()).is_multiple_of(2)
            })
    }

    /// Rows `first .. first + n` of this single-part weight as a weight of its own that shares
    /// the buffers (kernels offset their row index by `first`).
    pub fn view(&self, name: &str, first: usize, n: usize) -> Result<Q1_0Weight> {
        match self.parts.as_slice() {
            [part] if first + n <= part.n_rows => Ok(Q1_0Weight {
                name: name.to_string(),
                format: self.format,
                k: self.k,
                n,
                parts: vec![Q1_0Part {
                    row0: 0,
                    n_rows: n,
                    w_row0: part.w_row0 + first,
                    is_view: true,
                    signs: part.signs.clone(),
                    scales: part.scales.clone(),
                }],
            }),
            _ => Err(Error::InvalidArgument(format!(
                "rows {first}..{} of {} ({} rows in {} parts): not a view of one part",
                first + n,
                self.name,
                self.n,
                self.parts.len()
            ))),
        }
    }
}
