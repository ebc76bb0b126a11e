//! Q1_0 and Q2_0 block decoding on arbitrary bytes: `dequantize_row` with any type and length is
//! `Ok` or `Err`, never a panic; decoded weights equal a straightforward decoding written here
//! (Q1_0: `±d` by the bit; Q2_0: `(code - 1) * d`), the dot product agrees with the decoded row,
//! and quantizing the decoded row gives the blocks back where the format allows it.
#![no_main]

use bonsai_wgpu::gguf::GgmlType;
use bonsai_wgpu::quant::dequantize_row;
use bonsai_wgpu::quant::q1_0::{
    self, Q1_0_BLOCK_BYTES, QK1_0, dequantize_row_q1_0, dot_q1_0_f32, quantize_row_q1_0,
};
use bonsai_wgpu::quant::q2_0::{
    self, Q2_0_BLOCK_BYTES, QK2_0, dequantize_row_q2_0, dot_q2_0_f32, quantize_row_q2_0,
};
use half::f16;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // Any type id and element count must give an answer, not a panic.
    if let Some(ty) = GgmlType::from_u32(u32::from(selector & 0x3f)) {
        let n = rest.len() / ty.type_size().max(1) * ty.block_size() + usize::from(selector >> 6);
        let mut out = vec![0f32; n.min(1 << 16)];
        let _ = dequantize_row(ty, rest, &mut out);
    }
    check_q1_0(rest);
    check_q2_0(rest);
});

/// Same bits, or both NaN (a NaN or infinite f16 scale is decoded, not rejected).
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn check_q1_0(bytes: &[u8]) {
    let nb = bytes.len() / Q1_0_BLOCK_BYTES;
    let src = &bytes[..nb * Q1_0_BLOCK_BYTES];
    let mut row = vec![0f32; nb * QK1_0];
    dequantize_row(GgmlType::Q1_0, src, &mut row).expect("whole Q1_0 blocks decode");
    let mut direct = vec![0f32; nb * QK1_0];
    dequantize_row_q1_0(src, &mut direct);
    assert_eq!(
        row.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        direct.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    for (b, block) in src.chunks_exact(Q1_0_BLOCK_BYTES).enumerate() {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        for j in 0..QK1_0 {
            let bit = (block[2 + j / 8] >> (j % 8)) & 1;
            let want = if bit == 1 { d } else { -d };
            let got = row[b * QK1_0 + j];
            assert!(same(got, want), "block {b} weight {j}: {got} != {want}");
        }
        // The block view decodes the same weights.
        let view = &q1_0::blocks(block)[0];
        let mut from_view = [0f32; QK1_0];
        view.dequantize(&mut from_view);
        for (j, (&a, &w)) in from_view.iter().zip(&row[b * QK1_0..]).enumerate() {
            assert!(
                a.to_bits() == w.to_bits(),
                "block view weight {j}: {a} != {w}"
            );
            assert_eq!(
                view.is_positive(j),
                w.is_sign_positive() == d.is_sign_positive()
            );
        }
        // One-hot x picks out a single weight: the dot product is that weight.
        let j = usize::from(block[2]) % QK1_0;
        let mut x = vec![0f32; QK1_0];
        x[j] = 1.0;
        let dot = dot_q1_0_f32(block, &x);
        let w = row[b * QK1_0 + j];
        assert!(
            dot == w || (dot.is_nan() && w.is_nan()),
            "dot {dot} != weight {w}"
        );
        // d = mean |x| reproduces a positive finite scale exactly, and bit j = (x[j] >= 0).
        if d.is_finite() && d > 0.0 {
            let mut again = [0u8; Q1_0_BLOCK_BYTES];
            quantize_row_q1_0(&row[b * QK1_0..(b + 1) * QK1_0], &mut again);
            assert_eq!(&again[..], block, "quantize(dequantize(block)) != block");
        }
    }
}

fn check_q2_0(bytes: &[u8]) {
    let nb = bytes.len() / Q2_0_BLOCK_BYTES;
    let src = &bytes[..nb * Q2_0_BLOCK_BYTES];
    let mut row = vec![0f32; nb * QK2_0];
    dequantize_row(GgmlType::Q2_0, src, &mut row).expect("whole Q2_0 blocks decode");
    let mut direct = vec![0f32; nb * QK2_0];
    dequantize_row_q2_0(src, &mut direct);
    for (j, (&a, &b)) in row.iter().zip(&direct).enumerate() {
        assert!(
            a.to_bits() == b.to_bits(),
            "weight {j}: dequantize_row {a} != q2_0 {b}"
        );
    }
    for (b, block) in src.chunks_exact(Q2_0_BLOCK_BYTES).enumerate() {
        // The layout written out by hand: f16 d, then qs[16]; weight j is bits 2 * (j % 4) and
        // 2 * (j % 4) + 1 of qs[j / 4], and its value is (code - 1) * d.
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let codes: Vec<u8> = (0..QK2_0)
            .map(|j| (block[2 + j / 4] >> (2 * (j % 4))) & 3)
            .collect();
        for (j, &code) in codes.iter().enumerate() {
            let want = (f32::from(code) - 1.0) * d;
            let got = row[b * QK2_0 + j];
            assert!(
                same(got, want),
                "block {b} weight {j} (code {code}): {got} != {want}"
            );
        }
        // The block view decodes the same codes and weights.
        let view = &q2_0::blocks(block)[0];
        assert!(same(view.scale(), d));
        let mut from_view = [0f32; QK2_0];
        view.dequantize(&mut from_view);
        for (j, (&a, &w)) in from_view.iter().zip(&row[b * QK2_0..]).enumerate() {
            assert!(
                a.to_bits() == w.to_bits(),
                "block view weight {j}: {a} != {w}"
            );
            assert_eq!(view.code(j), codes[j], "block view code {j}");
        }
        // One-hot x picks out a single weight: the dot product is that weight.
        let j = usize::from(block[2]) % QK2_0;
        let mut x = vec![0f32; QK2_0];
        x[j] = 1.0;
        let w = row[b * QK2_0 + j];
        let dot = dot_q2_0_f32(block, &x);
        assert!(
            dot == w || (dot.is_nan() && w.is_nan()),
            "dot {dot} != weight {w}"
        );
        let dot = view.dot(&x);
        assert!(
            dot == w || (dot.is_nan() && w.is_nan()),
            "block dot {dot} != weight {w}"
        );
        // quantize takes d = max |x|: that gives the block back when d is finite and positive,
        // every code is -d, 0 or +d (a +2d code would become the max) and one of them is not 0.
        let round_trips = d.is_finite()
            && d > 0.0
            && codes.iter().all(|&c| c <= 2)
            && codes.iter().any(|&c| c != 1);
        if round_trips {
            let mut again = [0u8; Q2_0_BLOCK_BYTES];
            quantize_row_q2_0(&row[b * QK2_0..(b + 1) * QK2_0], &mut again);
            assert_eq!(&again[..], block, "quantize(dequantize(block)) != block");
        }
    }
}
