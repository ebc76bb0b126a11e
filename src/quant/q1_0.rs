//! Q1_0, PrismML's 1-bit format (GGML type 41): the only place its block size, byte layout and
//! bit order are written down. Everything else (the CPU reference, the GPU repack, synthetic
//! models, the GGUF type table) calls this module.
//!
//! A block holds 128 weights in 18 bytes: an IEEE half scale `d` (little-endian) and 16 bytes of
//! sign bits. Weight `j` is bit `j % 8` (least significant first) of `qs[j / 8]`; bit 1 is `+d`,
//! bit 0 is `-d`.

use half::f16;

use crate::error::{Error, Result};

/// Weights per Q1_0 block.
pub const QK1_0: usize = 128;
/// Bytes per Q1_0 block (f16 scale + 16 bytes of sign bits).
pub const Q1_0_BLOCK_BYTES: usize = 18;

/// One Q1_0 block: 128 weights, each `+d` (bit 1) or `-d` (bit 0). Weight `j` is bit `j % 8`
/// (least significant first) of `qs[j / 8]`. 18 bytes, no padding, alignment 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ1_0 {
    /// The scale, an IEEE half in little-endian byte order.
    pub d: [u8; 2],
    /// Sign bits of the 128 weights.
    pub qs: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ1_0>() == Q1_0_BLOCK_BYTES);
const _: () = assert!(QK1_0 == 8 * 16);

impl BlockQ1_0 {
    /// The scale as `f32`.
    pub fn scale(&self) -> f32 {
        f16::from_le_bytes(self.d).to_f32()
    }

    /// The scale's f16 bit pattern.
    pub fn scale_bits(&self) -> u16 {
        u16::from_le_bytes(self.d)
    }

    /// Whether weight `j` (< 128) is `+d` (bit set) rather than `-d`.
    #[inline]
    pub fn is_positive(&self, j: usize) -> bool {
        (self.qs[j / 8] >> (j % 8)) & 1 == 1
    }

    /// The sign bits as four little-endian u32 words: bit `b` of word `w` is weight `32w + b`,
    /// the same LSB-first order as `qs` (the GPU layout, `gpu::q1_0`).
    pub fn sign_words(&self) -> [u32; 4] {
        let mut words = [0u32; 4];
        for (w, bytes) in words.iter_mut().zip(self.qs.chunks_exact(4)) {
            *w = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        words
    }

    /// A block with scale `d` (rounded to f16) and the given sign bytes.
    pub fn new(d: f32, qs: [u8; 16]) -> BlockQ1_0 {
        BlockQ1_0 {
            d: f16::from_f32(d).to_le_bytes(),
            qs,
        }
    }

    /// Decodes the 128 weights into `out`.
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.scale();
        for (j, y) in out.iter_mut().enumerate().take(QK1_0) {
            *y = if self.is_positive(j) { d } else { -d };
        }
    }

    /// `sum_j w_j x_j` over the block's 128 weights: the sum of `±x[j]` (sign from the bit),
    /// scaled once by `d`, in f32. The sum runs in 8 lanes, one per bit of a sign byte (lane `k`
    /// adds weights `j % 8 == k`), added at the end: one running sum cannot be vectorized, and
    /// this dot is most of the CPU reference's time.
    pub fn dot(&self, x: &[f32]) -> f32 {
        let mut lanes = [0.0f32; 8];
        for (&byte, x8) in self.qs.iter().zip(x.chunks_exact(8)) {
            for ((lane, &v), sign) in lanes.iter_mut().zip(x8).zip(SIGNS[usize::from(byte)]) {
                *lane += sign * v;
            }
        }
        self.scale() * lanes.iter().sum::<f32>()
    }
}

/// The eight signs a byte of sign bits stands for: `SIGNS[byte][k]` is `+1.0` when bit `k` is set,
/// else `-1.0` (multiplying by it is exact, and vectorizes where bit tests do not).
static SIGNS: [[f32; 8]; 256] = {
    let mut table = [[0.0f32; 8]; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut k = 0;
        while k < 8 {
            table[byte][k] = if (byte >> k) & 1 == 1 { 1.0 } else { -1.0 };
            k += 1;
        }
        byte += 1;
    }
    table
};

/// Bytes of one row of `k` weights (`k` a multiple of 128).
pub const fn row_bytes(k: usize) -> usize {
    k / QK1_0 * Q1_0_BLOCK_BYTES
}

/// The blocks of `bytes` (a whole number of 18-byte blocks; alignment 1, so never a copy).
///
/// # Panics
/// When `bytes.len()` is not a multiple of 18.
pub fn blocks(bytes: &[u8]) -> &[BlockQ1_0] {
    bytemuck::cast_slice(bytes)
}

/// Fails unless `len` bytes are exactly a `[k, n]` Q1_0 tensor (n rows of k, k a positive
/// multiple of 128); `name` goes into the error.
pub fn check_shape(name: &str, len: usize, k: usize, n: usize) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::BadTensor {
            name: name.to_string(),
            reason,
        })
    };
    if k == 0 || !k.is_multiple_of(QK1_0) {
        return bad(format!(
            "Q1_0 row length {k} is not a positive multiple of {QK1_0}"
        ));
    }
    let want = (k / QK1_0)
        .checked_mul(n)
        .and_then(|b| b.checked_mul(Q1_0_BLOCK_BYTES));
    if want != Some(len) {
        return bad(format!("Q1_0 [{k}, {n}] needs {want:?} bytes, got {len}"));
    }
    Ok(())
}

/// Dequantizes `dst.len() / 128` Q1_0 blocks from `src`.
///
/// # Panics
/// When `dst.len()` is not a multiple of 128 or `src` holds fewer than the needed blocks.
pub fn dequantize_row_q1_0(src: &[u8], dst: &mut [f32]) {
    assert_eq!(dst.len() % QK1_0, 0, "Q1_0 rows are whole blocks of 128");
    let nb = dst.len() / QK1_0;
    assert!(src.len() >= nb * Q1_0_BLOCK_BYTES, "Q1_0 source too short");
    for (block, out) in blocks(&src[..nb * Q1_0_BLOCK_BYTES])
        .iter()
        .zip(dst.chunks_exact_mut(QK1_0))
    {
        block.dequantize(out);
    }
}

/// Dot product of one Q1_0 weight row with `x` (`x.len()` a multiple of 128), in f32.
/// Per block it sums `±x[j]` (sign from the bit) and scales once by `d`.
///
/// # Panics
/// When `x.len()` is not a multiple of 128 or `row` holds fewer than the needed blocks.
pub fn dot_q1_0_f32(row: &[u8], x: &[f32]) -> f32 {
    assert_eq!(x.len() % QK1_0, 0, "Q1_0 rows are whole blocks of 128");
    let nb = x.len() / QK1_0;
    assert!(row.len() >= nb * Q1_0_BLOCK_BYTES, "Q1_0 row too short");
    blocks(&row[..nb * Q1_0_BLOCK_BYTES])
        .iter()
        .zip(x.chunks_exact(QK1_0))
        .map(|(block, xb)| block.dot(xb))
        .sum()
}

/// Activations quantized as the GPU's q8 path stages them ([`crate::gpu::KernelPath::Q8`],
/// shaders/lib/q1_0_q8_dots.wgsl): blocks of 32 with `d = amax / 127` and
/// `q = round(x * (127 / amax))` (ties to even, WGSL's `round`), llama.cpp's q8_0 but for the
/// rounding of ties and an f32 scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Q8Activations {
    /// The int8 values, one per input.
    pub q: Vec<i8>,
    /// The scale of each block of 32.
    pub d: Vec<f32>,
    /// `d * sum(q)` of each block of 32.
    pub dsum: Vec<f32>,
}

/// Values per q8 scale.
pub const QK8: usize = 32;

impl Q8Activations {
    /// Quantizes `x` (a multiple of 32 values).
    ///
    /// # Panics
    /// When `x.len()` is not a multiple of 32.
    pub fn new(x: &[f32]) -> Q8Activations {
        assert_eq!(x.len() % QK8, 0, "q8 activations are whole blocks of 32");
        let mut q = Vec::with_capacity(x.len());
        let mut d = Vec::with_capacity(x.len() / QK8);
        let mut dsum = Vec::with_capacity(x.len() / QK8);
        for g in x.chunks_exact(QK8) {
            let amax = g.iter().fold(0f32, |m, v| m.max(v.abs()));
            let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            let mut sum = 0i32;
            for v in g {
                let r = (v * inv).round_ties_even() as i8;
                sum += i32::from(r);
                q.push(r);
            }
            let scale = amax / 127.0;
            d.push(scale);
            dsum.push(scale * sum as f32);
        }
        Q8Activations { q, d, dsum }
    }
}

/// A Q1_0 row dotted with q8 activations in the GPU's arithmetic: per block of 128, the
/// integer sums `S_g` of the activations whose sign bit is set in each group of 32, then
/// `d_w * (2 (d . S) - sum_g d_g sum(q_g))`, accumulated over the blocks in f32.
pub fn dot_q1_0_q8(row: &[u8], x: &Q8Activations) -> f32 {
    let nb = x.q.len() / QK1_0;
    assert!(row.len() >= nb * Q1_0_BLOCK_BYTES, "Q1_0 row too short");
    let mut acc = 0f32;
    for (b, block) in blocks(&row[..nb * Q1_0_BLOCK_BYTES]).iter().enumerate() {
        let mut dot_ds = 0f32;
        let mut sx = 0f32;
        for g in 0..4 {
            let i = 4 * b + g;
            let qs = &x.q[QK8 * i..QK8 * (i + 1)];
            let s: i32 = qs
                .iter()
                .enumerate()
                .filter(|&(j, _)| block.is_positive(QK8 * g + j))
                .map(|(_, &v)| i32::from(v))
                .sum();
            dot_ds += x.d[i] * s as f32;
            sx += x.dsum[i];
        }
        acc += block.scale() * (2.0 * dot_ds - sx);
    }
    acc
}

/// Quantizes `src` (a multiple of 128 values) to Q1_0 as llama.cpp's `quantize_row_q1_0_ref`:
/// per block `d = sum(|x|) / 128` (summed in order, stored as f16) and bit `j` set when
/// `x[j] >= 0`.
///
/// # Panics
/// When `src.len()` is not a multiple of 128 or `dst` is shorter than the blocks need.
pub fn quantize_row_q1_0(src: &[f32], dst: &mut [u8]) {
    assert_eq!(src.len() % QK1_0, 0, "Q1_0 rows are whole blocks of 128");
    let nb = src.len() / QK1_0;
    assert!(
        dst.len() >= nb * Q1_0_BLOCK_BYTES,
        "Q1_0 destination too short"
    );
    let out: &mut [BlockQ1_0] = bytemuck::cast_slice_mut(&mut dst[..nb * Q1_0_BLOCK_BYTES]);
    for (xb, block) in src.chunks_exact(QK1_0).zip(out) {
        let sum_abs: f32 = xb.iter().fold(0.0, |a, v| a + v.abs());
        let mut qs = [0u8; 16];
        for (j, &v) in xb.iter().enumerate() {
            if v >= 0.0 {
                qs[j / 8] |= 1 << (j % 8);
            }
        }
        *block = BlockQ1_0::new(sum_abs / QK1_0 as f32, qs);
    }
}
