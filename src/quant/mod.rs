//! CPU (de)quantization of the GGML types the engine reads: one module per block format
//! ([`q1_0`], Bonsai's 1-bit weights), and F32 / F16 / BF16 / Q8_0 rows here. These are the
//! references the GPU kernels are tested against.
//!
//! A new format (e.g. Q2_0) is a new module beside [`q1_0`]: its block type with a size assert,
//! constants, bit order, CPU decode and dot; [`dequantize_row`] dispatches to it.

use half::f16;

use crate::error::{Error, Result};
use crate::gguf::GgmlType;

pub mod q1_0;

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

/// Dequantizes `dst.len()` elements of type `ty` from `src`, which must hold exactly
/// `ty.row_bytes(dst.len())` bytes. Supports F32, F16, BF16, Q8_0 and Q1_0.
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
        other => {
            return Err(Error::InvalidArgument(format!(
                "dequantizing {other} is not supported (F32, F16, BF16, Q8_0, Q1_0 are)"
            )));
        }
    }
    Ok(())
}
