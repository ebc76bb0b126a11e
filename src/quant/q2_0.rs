//! Q2_0 (GGML type 42), the 2-bit format upstream llama.cpp stores PrismML's Ternary-Bonsai
//! models in: the only place its block size, byte layout and code order are written down.
//!
//! A block holds 64 weights in 18 bytes: an IEEE half scale `d` (little-endian) and 16 bytes of
//! 2-bit codes. Weight `j` is code `c = (qs[j / 4] >> (2 * (j % 4))) & 3` (least significant
//! pair first) and has the value `(c - 1) * d`: codes 0, 1, 2, 3 are -d, 0, +d, +2d. Ternary
//! files only use codes 0..2; the CPU and GPU paths decode all four.

use half::f16;

/// Weights per Q2_0 block.
pub const QK2_0: usize = 64;
/// Bytes per Q2_0 block: f16 scale + 16 bytes of 2-bit codes.
pub const Q2_0_BLOCK_BYTES: usize = 18;

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
const _: () = assert!(QK2_0 * 2 == 8 * 16);

impl BlockQ2_0 {
    /// A block with scale `d` (rounded to f16) and the given code bytes.
    pub fn new(d: f32, qs: [u8; 16]) -> BlockQ2_0 {
        BlockQ2_0 {
            d: f16::from_f32(d).to_le_bytes(),
            qs,
        }
    }

    /// The scale as `f32`.
    pub fn scale(&self) -> f32 {
        f16::from_le_bytes(self.d).to_f32()
    }

    /// Code (0..=3) of weight `j` (< 64).
    #[inline]
    pub fn code(&self, j: usize) -> u8 {
        (self.qs[j / 4] >> (2 * (j % 4))) & 3
    }

    /// Decodes the 64 weights into `out`.
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.scale();
        for (j, y) in out.iter_mut().enumerate().take(QK2_0) {
            *y = (f32::from(self.code(j)) - 1.0) * d;
        }
    }

    /// `sum_j w_j x_j` over the block's 64 weights: the sum of `(code - 1) * x[j]`, scaled once
    /// by `d`, in f32.
    pub fn dot(&self, x: &[f32]) -> f32 {
        let mut acc = 0.0f32;
        for (&byte, x4) in self.qs.iter().zip(x.chunks_exact(4)) {
            for (k, &v) in x4.iter().enumerate() {
                acc += (f32::from((byte >> (2 * k)) & 3) - 1.0) * v;
            }
        }
        self.scale() * acc
    }
}

/// The blocks of `bytes` (a whole number of 18-byte blocks; alignment 1, so never a copy).
///
/// # Panics
/// When `bytes.len()` is not a multiple of 18.
pub fn blocks(bytes: &[u8]) -> &[BlockQ2_0] {
    bytemuck::cast_slice(bytes)
}

/// Dequantizes `dst.len() / 64` Q2_0 blocks from `src`.
///
/// # Panics
/// When `dst.len()` is not a multiple of 64 or `src` holds fewer than the needed blocks.
pub fn dequantize_row_q2_0(src: &[u8], dst: &mut [f32]) {
    assert_eq!(dst.len() % QK2_0, 0, "Q2_0 rows are whole blocks of 64");
    let nb = dst.len() / QK2_0;
    assert!(src.len() >= nb * Q2_0_BLOCK_BYTES, "Q2_0 source too short");
    for (block, out) in blocks(&src[..nb * Q2_0_BLOCK_BYTES])
        .iter()
        .zip(dst.chunks_exact_mut(QK2_0))
    {
        block.dequantize(out);
    }
}

/// Dot product of one Q2_0 weight row with `x` (`x.len()` a multiple of 64), in f32.
///
/// # Panics
/// When `x.len()` is not a multiple of 64 or `row` holds fewer than the needed blocks.
pub fn dot_q2_0_f32(row: &[u8], x: &[f32]) -> f32 {
    assert_eq!(x.len() % QK2_0, 0, "Q2_0 rows are whole blocks of 64");
    let nb = x.len() / QK2_0;
    assert!(row.len() >= nb * Q2_0_BLOCK_BYTES, "Q2_0 row too short");
    blocks(&row[..nb * Q2_0_BLOCK_BYTES])
        .iter()
        .zip(x.chunks_exact(QK2_0))
        .map(|(block, xb)| block.dot(xb))
        .sum()
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
    let out: &mut [BlockQ2_0] = bytemuck::cast_slice_mut(&mut dst[..nb * Q2_0_BLOCK_BYTES]);
    for (xb, block) in src.chunks_exact(QK2_0).zip(out) {
        let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let id = if amax > 0.0 { 1.0 / amax } else { 0.0 };
        let mut qs = [0u8; 16];
        for (j, &v) in xb.iter().enumerate() {
            let code = ((v * id).round() as i32).clamp(-1, 2) + 1;
            qs[j / 4] |= (code as u8) << (2 * (j % 4));
        }
        *block = BlockQ2_0::new(amax, qs);
    }
}
