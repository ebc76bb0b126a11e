//! Q1_0 block decoding on arbitrary bytes: `dequantize_row` with any type and length is `Ok`
//! or `Err`, never a panic; decoded Q1_0 weights are exactly `±d`, the dot product agrees with
//! the decoded row, and quantizing the decoded row gives the blocks back.
//!
//! Q2_0 (ternary) joins here when `quant::q2_0` lands: add its decode to `check_type` below.
#![no_main]

use bonsai_wgpu::gguf::GgmlType;
use bonsai_wgpu::quant::dequantize_row;
use bonsai_wgpu::quant::q1_0::{
    self, Q1_0_BLOCK_BYTES, QK1_0, dequantize_row_q1_0, dot_q1_0_f32, quantize_row_q1_0,
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
});

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
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()));
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
