//! Lossless AWQ int4 (GEMM layout) from Q1_0: every Bonsai weight is `±d` with one `d` per 128
//! inputs, so AWQ with group size 128, `scale = d` and `zero = 8` stores `+d` as 9 and `-d` as 7
//! exactly: `(9 - 8) * d = d`, `(7 - 8) * d = -d`.
//!
//! Layout of one linear layer `W (out, in)`, as AutoAWQ's GEMM kernels and vLLM / sglang read it:
//! - `qweight`: int32 `(in, out / 8)`; word `c` of input row `i` holds the 4-bit codes of outputs
//!   `8c .. 8c + 7`, the code of output `8c + AWQ_ORDER[j]` in bits `4j .. 4j + 3`;
//! - `qzeros`: int32 `(in / 128, out / 8)`, the zero points packed the same way (all 8 here);
//! - `scales`: f16 `(in / 128, out)`, the scale of each group of 128 inputs of each output.

use crate::error::{Error, Result};
use crate::quant::q1_0::{BlockQ1_0, Q1_0_BLOCK_BYTES, QK1_0};

/// Inputs per AWQ group: one scale and zero per group. Equal to the Q1_0 block, which makes
/// the repack exact.
pub const AWQ_GROUP_SIZE: usize = QK1_0;
/// 4-bit codes per int32 word.
pub const AWQ_PACK: usize = 8;
/// AWQ's nibble order: nibble `j` of a word holds output `8c + AWQ_ORDER[j]`.
pub const AWQ_ORDER: [usize; AWQ_PACK] = [0, 2, 4, 6, 1, 3, 5, 7];
/// The zero point of every group.
pub const AWQ_ZERO: u32 = 8;
/// The code of `+d` (bit 1 of Q1_0).
const CODE_PLUS: u32 = AWQ_ZERO + 1;
/// The code of `-d` (bit 0 of Q1_0).
const CODE_MINUS: u32 = AWQ_ZERO - 1;

/// Nibble that holds output `8c + r`: the inverse permutation of [`AWQ_ORDER`].
const fn nibble_of_output() -> [usize; AWQ_PACK] {
    let mut inv = [0; AWQ_PACK];
    let mut j = 0;
    while j < AWQ_PACK {
        inv[AWQ_ORDER[j]] = j;
        j += 1;
    }
    inv
}
const NIBBLE_OF_OUTPUT: [usize; AWQ_PACK] = nibble_of_output();

/// Checks that a `(out, in)` weight fits AWQ's packing: `out` whole words of 8 codes and `in`
/// whole groups of 128. Names the tensor otherwise.
pub fn check_awq_shape(name: &str, n_in: usize, n_out: usize) -> Result<()> {
    let bad = |reason: String| Error::BadTensor {
        name: name.to_string(),
        reason,
    };
    if !n_out.is_multiple_of(AWQ_PACK) {
        return Err(bad(format!(
            "AWQ packs {AWQ_PACK} outputs per int32: {n_out} outputs are not a multiple of {AWQ_PACK}"
        )));
    }
    if !n_in.is_multiple_of(AWQ_GROUP_SIZE) {
        return Err(bad(format!(
            "AWQ groups {AWQ_GROUP_SIZE} inputs: {n_in} inputs are not a multiple of {AWQ_GROUP_SIZE}"
        )));
    }
    Ok(())
}

/// Shapes of `qweight`, `qzeros` and `scales` for a weight with `n_in` inputs and `n_out`
/// outputs.
pub fn awq_shapes(n_in: usize, n_out: usize) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let groups = n_in / AWQ_GROUP_SIZE;
    (
        vec![n_in, n_out / AWQ_PACK],
        vec![groups, n_out / AWQ_PACK],
        vec![groups, n_out],
    )
}

/// The Q1_0 blocks of a GGUF weight `[in, out]` (ne0 first): `out` rows of `in / 128` blocks.
fn blocks(q1: &[u8]) -> &[BlockQ1_0] {
    bytemuck::cast_slice(&q1[..q1.len() / Q1_0_BLOCK_BYTES * Q1_0_BLOCK_BYTES])
}

/// `qweight` (little-endian int32 `(in, out / 8)`) of a Q1_0 weight with `n_in` inputs and
/// `n_out` outputs. The shape must pass [`check_awq_shape`].
pub fn awq_qweight(q1: &[u8], n_in: usize, n_out: usize) -> Vec<u8> {
    let words_per_row = n_out / AWQ_PACK;
    let groups = n_in / QK1_0;
    let mut qweight = vec![0u32; n_in * words_per_row];
    for (o, row) in blocks(q1).chunks_exact(groups).take(n_out).enumerate() {
        let (word, shift) = (o / AWQ_PACK, 4 * NIBBLE_OF_OUTPUT[o % AWQ_PACK]);
        for (g, block) in row.iter().enumerate() {
            for j in 0..QK1_0 {
                let bit = (block.qs[j / 8] >> (j % 8)) & 1;
                let code = if bit == 1 { CODE_PLUS } else { CODE_MINUS };
                qweight[(g * QK1_0 + j) * words_per_row + word] |= code << shift;
            }
        }
    }
    qweight.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// `qzeros` (little-endian int32 `(in / 128, out / 8)`): every nibble [`AWQ_ZERO`].
pub fn awq_qzeros(n_in: usize, n_out: usize) -> Vec<u8> {
    let word = (0..AWQ_PACK).fold(0u32, |w, j| w | AWQ_ZERO << (4 * j));
    let n_words = n_in / AWQ_GROUP_SIZE * (n_out / AWQ_PACK);
    word.to_le_bytes().repeat(n_words)
}

/// `scales` (f16 `(in / 128, out)`): the Q1_0 block scale `d`, bytes copied as stored.
pub fn awq_scales(q1: &[u8], n_in: usize, n_out: usize) -> Vec<u8> {
    let groups = n_in / QK1_0;
    let rows: Vec<&[BlockQ1_0]> = blocks(q1).chunks_exact(groups).take(n_out).collect();
    let mut scales = Vec::with_capacity(groups * n_out * 2);
    for g in 0..groups {
        for row in &rows {
            scales.extend_from_slice(&row[g].d);
        }
    }
    scales
}
