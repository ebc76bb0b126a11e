//! CPU (de)quantization of the GGML types the engine reads: one module per block format
//! ([`q1_0`], Bonsai's 1-bit weights; [`q2_0`], Ternary-Bonsai's 2-bit codes), and F32 / F16 /
//! BF16 / Q8_0 rows here. These are the references the GPU kernels are tested against.
//!
//! A format module holds its block type with a size assert, constants, bit order, CPU decode
//! and dot; [`dequantize_row`] and [`dot_row`] dispatch to it by each tensor's own type.

use half::f16;

use crate::error::{Error, Result};
use crate::gguf::GgmlType;

pub mod q1_0;
pub mod q2_0;

/// Weights per Q8_0 block.
pub const QK8_0: usize = 32;
/// Bytes per Q8_0 block.
pub const Q8_0_BLOCK_BYTES: usize = 34;

/// One Q8_0 block: 32 weights `d * qs[j]`. 34 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// The scale, an IEEE half in little-endian byte order.
    pub d: [u8; 2],
    /// The quantized weights.
    pub qs: [i8; 32],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == Q8_0_BLOCK_BYTES);

#[inline]
fn half_at(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Whether a linear weight (matrix) may be stored as `ty`: the types [`dot_row`] computes with.
pub fn is_matrix_type(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q1_0 | GgmlType::Q2_0 | GgmlType::F32 | GgmlType::F16 | GgmlType::BF16
    )
}

/// Dot product of one weight row of type `ty` with `x`, in f32: the CPU reference's matvec
/// kernel for every matrix type ([`is_matrix_type`]). `row` holds `ty.row_bytes(x.len())`
/// bytes.
///
/// # Panics
/// When `ty` is not a matrix type or `row` is too short for `x`.
pub fn dot_row(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    match ty {
        GgmlType::Q1_0 => q1_0::dot_q1_0_f32(row, x),
        GgmlType::Q2_0 => q2_0::dot_q2_0_f32(row, x),
        GgmlType::F32 => row
            .chunks_exact(4)
            .zip(x)
            .map(|(b, v)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * v)
            .sum(),
        GgmlType::F16 => row
            .chunks_exact(2)
            .zip(x)
            .map(|(b, v)| half_at(b) * v)
            .sum(),
        GgmlType::BF16 => row
            .chunks_exact(2)
            .zip(x)
            .map(|(b, v)| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16) * v)
            .sum(),
        other => panic!("dot_row: {other} is not a matrix type"),
    }
}

/// Dequantizes `dst.len()` elements of type `ty` from `src`, which must hold exactly
/// `ty.row_bytes(dst.len())` bytes. Supports F32, F16, BF16, Q8_0, Q1_0 and Q2_0.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    let need = ty.row_bytes(dst.len() as u64).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{} elements are not a whole number of {ty} blocks of {}",
            dst.len(),
            ty.block_size()
        ))
    })?;
    if src.len() as u64 != need {
        return Err(Error::InvalidArgument(format!(
            "{} elements of {ty} need {need} bytes, got {}",
            dst.len(),
            src.len()
        )));
    }
    match ty {
        GgmlType::F32 => {
            for (y, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *y = half_at(b);
            }
        }
        GgmlType::BF16 => {
            for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *y = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
            }
        }
        GgmlType::Q8_0 => {
            for (block, out) in src
                .chunks_exact(Q8_0_BLOCK_BYTES)
                .zip(dst.chunks_exact_mut(QK8_0))
            {
                let d = half_at(block);
                for (y, &q) in out.iter_mut().zip(&block[2..]) {
                    *y = d * f32::from(q as i8);
                }
            }
        }
        GgmlType::Q1_0 => q1_0::dequantize_row_q1_0(src, dst),
        GgmlType::Q2_0 => q2_0::dequantize_row_q2_0(src, dst),
        other => {
            return Err(Error::InvalidArgument(format!(
                "dequantizing {other} is not supported (F32, F16, BF16, Q8_0, Q1_0, Q2_0 are)"
            )));
        }
    }
    Ok(())
}

/// Quantizes 32 values to a Q8_0 block exactly as llama.cpp's `quantize_row_q8_0_ref`:
/// `d = max|x| / 127` in f32, `qs[j] = round(x[j] / d)` (half away from zero, through the f32
/// reciprocal `1 / d`), and `d` stored as f16. The KV cache's Q8_0 option (CPU reference and
/// `shaders/qk_norm_rope.wgsl`) uses this arithmetic.
///
/// # Panics
/// When `x.len() != 32`.
pub fn quantize_block_q8_0(x: &[f32]) -> BlockQ8_0 {
    assert_eq!(x.len(), QK8_0, "a Q8_0 block holds 32 values");
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK8_0];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    BlockQ8_0 {
        d: f16::from_f32(d).to_le_bytes(),
        qs,
    }
}

/// Rounds `row` (a multiple of 32 values) through Q8_0 in place: quantize each block of 32 with
/// [`quantize_block_q8_0`], then dequantize (`f16(d) * q`).
///
/// # Panics
/// When `row.len()` is not a multiple of 32.
pub fn round_trip_q8_0(row: &mut [f32]) {
    assert_eq!(row.len() % QK8_0, 0, "Q8_0 rows are whole blocks of 32");
    for x in row.chunks_exact_mut(QK8_0) {
        let block = quantize_block_q8_0(x);
        let d = block.scale();
        for (y, &q) in x.iter_mut().zip(&block.qs) {
            *y = d * f32::from(q);
        }
    }
}

impl BlockQ8_0 {
    /// The scale as `f32`.
    pub fn scale(&self) -> f32 {
        f16::from_le_bytes(self.d).to_f32()
    }
}
