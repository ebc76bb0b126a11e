//! Q2_0 (GGML type 42), the 2-bit format upstream llama.cpp stores PrismML's Ternary-Bonsai
//! models in: blocks of 64 weights, each an `f16` scale `d` and 16 bytes of 2-bit codes.
//! Weight `j` of a block is code `c = (qs[j / 4] >> (2 * (j % 4))) & 3` (least significant pair
//! first) and has the value `(c - 1) * d`: codes 0, 1, 2, 3 are -d, 0, +d, +2d. Ternary files
//! only use codes 0..2; the CPU and GPU paths decode all four.

use half::f16;

/// Weights per Q2_0 block.
pub const QK2_0: usize = 64;
/// Bytes per Q2_0 block: f16 scale + 16 bytes of 2-bit codes.
pub const Q2_0_BLOCK_BYTES: usize = 18;
/// Bits per Q2_0 code.
pub const Q2_0_CODE_BITS: usize = 2;

/// One Q2_0 block: 64 weights `(code - 1) * d`; weight `j` is bits `2 * (j % 4)` and
/// `2 * (j % 4) + 1` of `qs[j / 4]`. 18 bytes, no padding, alignment 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ2_0 {
    /// The scale, an IEEE half in little-endian byte order.
    pub d: [u8; 2],
    /// The 64 codes, four per byte.
    pub qs: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ2_0>() == Q2_0_BLOCK_BYTES);
const _: () = assert!(QK2_0 * Q2_0_CODE_BITS == 8 * 16);

impl BlockQ2_0 {
    /// The scale as `f32`.
    pub fn scale(&self) -> f32 {
        f16::from_le_bytes(self.d).to_f32()
    }

    /// Code (0..=3) of weight `j` (< 64).
    pub fn code(&self, j: usize) -> u8 {
        code_at(&self.qs, j)
    }
}

#[inline]
fn code_at(qs: &[u8], j: usize) -> u8 {
    (qs[j / 4] >> (2 * (j % 4))) & 3
}

#[inline]
fn blocks(bytes: &[u8]) -> impl Iterator<Item = (f32, &[u8])> {
    bytes
        .chunks_exact(Q2_0_BLOCK_BYTES)
        .map(|b| (f16::from_le_bytes([b[0], b[1]]).to_f32(), &b[2..]))
}

/// Dequantizes `dst.len() / 64` Q2_0 blocks from `src`.
///
/// # Panics
/// When `dst.len()` is not a multiple of 64 or `src` holds fewer than the needed blocks.
pub fn dequantize_row_q2_0(src: &[u8], dst: &mut [f32]) {
    assert_eq!(dst.len() % QK2_0, 0, "Q2_0 rows are whole blocks of 64");
    let nb = dst.len() / QK2_0;
    assert!(src.len() >= nb * Q2_0_BLOCK_BYTES, "Q2_0 source too short");
    for ((d, qs), out) in blocks(src).zip(dst.chunks_exact_mut(QK2_0)) {
        for (j, y) in out.iter_mut().enumerate() {
            *y = (f32::from(code_at(qs, j)) - 1.0) * d;
        }
    }
}

/// Dot product of one Q2_0 weight row with `x` (`x.len()` a multiple of 64), in f32.
/// Per block it sums `(code - 1) * x[j]` and scales once by `d`.
///
/// # Panics
/// When `x.len()` is not a multiple of 64 or `row` holds fewer than the needed blocks.
pub fn dot_q2_0_f32(row: &[u8], x: &[f32]) -> f32 {
    assert_eq!(x.len() % QK2_0, 0, "Q2_0 rows are whole blocks of 64");
    let nb = x.len() / QK2_0;
    assert!(row.len() >= nb * Q2_0_BLOCK_BYTES, "Q2_0 row too short");
    let mut sum = 0.0f32;
    for ((d, qs), xb) in blocks(row).zip(x.chunks_exact(QK2_0)) {
        let mut acc = 0.0f32;
        for (&byte, x4) in qs.iter().zip(xb.chunks_exact(4)) {
            for (k, &v) in x4.iter().enumerate() {
                let level = f32::from((byte >> (2 * k)) & 3) - 1.0;
                acc += level * v;
            }
        }
        sum += d * acc;
    }
    sum
}

/// Quantizes `src` (a multiple of 64 values) to Q2_0 as llama.cpp's `quantize_row_q2_0_ref`:
/// per block `d = max |x|` (stored as f16) and code `clamp(round(x / d), -1, 2) + 1`, rounding
/// half away from zero (C `roundf`); an all-zero block gets `d = 0` and code 1 (zero).
///
/// # Panics
/// When `src.len()` is not a multiple of 64 or `dst` is shorter than the blocks need.
pub fn quantize_row_q2_0(src: &[f32], dst: &mut [u8]) {
    assert_eq!(src.len() % QK2_0, 0, "Q2_0 rows are whole blocks of 64");
    let nb = src.len() / QK2_0;
    assert!(
        dst.len() >= nb * Q2_0_BLOCK_BYTES,
        "Q2_0 destination too short"
    );
    for (xb, block) in src
        .chunks_exact(QK2_0)
        .zip(dst.chunks_exact_mut(Q2_0_BLOCK_BYTES))
    {
        let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let id = if amax > 0.0 { 1.0 / amax } else { 0.0 };
        block[..2].copy_from_slice(&f16::from_f32(amax).to_le_bytes());
        let qs = &mut block[2..];
        qs.fill(0);
        for (j, &v) in xb.iter().enumerate() {
            let code = ((v * id).round() as i32).clamp(-1, 2) + 1;
            qs[j / 4] |= (code as u8) << (2 * (j % 4));
        }
    }
}
