//! Lossless AWQ int4 (GEMM layout) from Q1_0 and Q2_0. Every Bonsai weight is `±d` with one `d`
//! per 128 inputs and every Ternary-Bonsai weight `(code - 1) * d` (code 0..=3) with one `d` per
//! 64 inputs, so AWQ with `scale = d` and `zero = 8` stores them exactly: Q1_0 `-d -> 7`,
//! `+d -> 9`; Q2_0 `-d -> 7`, `0 -> 8`, `+d -> 9`, `+2d -> 10` (`(nibble - 8) * d`). The group
//! size is the block size: 128 for Q1_0 files, 64 as soon as any linear is Q2_0 (a Q1_0 block
//! is then two groups with the same scale).
//!
//! Layout of one linear layer `W (out, in)`, as AutoAWQ's GEMM kernels and vLLM / sglang read it:
//! - `qweight`: int32 `(in, out / 8)`; word `c` of input row `i` holds the 4-bit codes of outputs
//!   `8c .. 8c + 7`, the code of output `8c + AWQ_ORDER[j]` in bits `4j .. 4j + 3`;
//! - `qzeros`: int32 `(in / group, out / 8)`, the zero points packed the same way (all 8 here);
//! - `scales`: f16 `(in / group, out)`, the scale of each group of inputs of each output.

use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::quant::q1_0::{self, QK1_0};
use crate::quant::q2_0::{self, QK2_0};

/// 4-bit codes per int32 word.
pub const AWQ_PACK: usize = 8;
/// AWQ's nibble order: nibble `j` of a word holds output `8c + AWQ_ORDER[j]`.
pub const AWQ_ORDER: [usize; AWQ_PACK] = [0, 2, 4, 6, 1, 3, 5, 7];
/// The zero point of every group.
pub const AWQ_ZERO: u32 = 8;

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

/// Inputs per scale of a weight type AWQ can hold exactly (its block size), or `None`.
pub fn block_inputs(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q1_0 => Some(QK1_0),
        GgmlType::Q2_0 => Some(QK2_0),
        _ => None,
    }
}

/// Checks that a `(out, in)` weight fits AWQ's packing: `out` whole words of 8 codes and `in`
/// whole groups of `group`. Names the tensor otherwise.
pub fn check_awq_shape(name: &str, n_in: usize, n_out: usize, group: usize) -> Result<()> {
    let bad = |reason: String| Error::BadTensor {
        name: name.to_string(),
        reason,
    };
    if !n_out.is_multiple_of(AWQ_PACK) {
        return Err(bad(format!(
            "AWQ packs {AWQ_PACK} outputs per int32: {n_out} outputs are not a multiple of {AWQ_PACK}"
        )));
    }
    if !n_in.is_multiple_of(group) {
        return Err(bad(format!(
            "AWQ groups {group} inputs: {n_in} inputs are not a multiple of {group}"
        )));
    }
    Ok(())
}

/// Shapes of `qweight`, `qzeros` and `scales` for a weight with `n_in` inputs and `n_out`
/// outputs in groups of `group` inputs.
pub fn awq_shapes(n_in: usize, n_out: usize, group: usize) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let groups = n_in / group;
    (
        vec![n_in, n_out / AWQ_PACK],
        vec![groups, n_out / AWQ_PACK],
        vec![groups, n_out],
    )
}

/// One output row of a Q1_0 / Q2_0 weight: the AWQ nibble (zero 8) of each input and the f16
/// bits of the scale each input's block carries. `ty` must pass [`block_inputs`].
fn row_nibbles(ty: GgmlType, row: &[u8], nibbles: &mut [u32], scales: &mut [u16]) {
    match ty {
        GgmlType::Q1_0 => {
            for (b, block) in q1_0::blocks(row).iter().enumerate() {
                for j in 0..QK1_0 {
                    // +d -> 9, -d -> 7.
                    let plus = u32::from(block.is_positive(j));
                    nibbles[b * QK1_0 + j] = AWQ_ZERO - 1 + 2 * plus;
                    scales[b * QK1_0 + j] = block.scale_bits();
                }
            }
        }
        _ => {
            for (b, block) in q2_0::blocks(row).iter().enumerate() {
                let d = u16::from_le_bytes(block.d);
                for j in 0..QK2_0 {
                    // (code - 1) * d = (nibble - 8) * d.
                    nibbles[b * QK2_0 + j] = u32::from(block.code(j)) + AWQ_ZERO - 1;
                    scales[b * QK2_0 + j] = d;
                }
            }
        }
    }
}

/// Visits the `n_out` rows of a GGUF weight `[in, out]` (ne0 first) as nibbles and scales.
fn for_each_row(
    ty: GgmlType,
    data: &[u8],
    n_in: usize,
    n_out: usize,
    mut f: impl FnMut(usize, &[u32], &[u16]),
) {
    let block = block_inputs(ty).expect("AWQ source type checked by plan_tensors");
    let row_bytes = n_in / block * ty.type_size();
    let (mut nibbles, mut scales) = (vec![0u32; n_in], vec![0u16; n_in]);
    for (o, row) in data.chunks_exact(row_bytes).take(n_out).enumerate() {
        row_nibbles(ty, row, &mut nibbles, &mut scales);
        f(o, &nibbles, &scales);
    }
}

/// `qweight` (little-endian int32 `(in, out / 8)`) of a Q1_0 / Q2_0 weight with `n_in` inputs
/// and `n_out` outputs. The shape must pass [`check_awq_shape`].
pub fn awq_qweight(ty: GgmlType, data: &[u8], n_in: usize, n_out: usize) -> Vec<u8> {
    let words_per_row = n_out / AWQ_PACK;
    let mut qweight = vec![0u32; n_in * words_per_row];
    for_each_row(ty, data, n_in, n_out, |o, nibbles, _| {
        let (word, shift) = (o / AWQ_PACK, 4 * NIBBLE_OF_OUTPUT[o % AWQ_PACK]);
        for (i, &nibble) in nibbles.iter().enumerate() {
            qweight[i * words_per_row + word] |= nibble << shift;
        }
    });
    qweight.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// `qzeros` (little-endian int32 `(in / group, out / 8)`): every nibble [`AWQ_ZERO`].
pub fn awq_qzeros(n_in: usize, n_out: usize, group: usize) -> Vec<u8> {
    let word = (0..AWQ_PACK).fold(0u32, |w, j| w | AWQ_ZERO << (4 * j));
    let n_words = n_in / group * (n_out / AWQ_PACK);
    word.to_le_bytes().repeat(n_words)
}

/// `scales` (f16 `(in / group, out)`): the block scale `d` of each group's inputs, bits copied
/// as stored. `group` divides the block size, so a group never spans two blocks.
pub fn awq_scales(ty: GgmlType, data: &[u8], n_in: usize, n_out: usize, group: usize) -> Vec<u8> {
    let groups = n_in / group;
    let mut scales = vec![0u16; groups * n_out];
    for_each_row(ty, data, n_in, n_out, |o, _, row_scales| {
        for g in 0..groups {
            scales[g * n_out + o] = row_scales[g * group];
        }
    });
    scales.iter().flat_map(|s| s.to_le_bytes()).collect()
}
