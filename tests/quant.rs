//! CPU quantization references: Q1_0 against hand-built blocks and an independent bit
//! formulation, plus F16 / BF16 / Q8_0 known values.

use bonsai_wgpu::Error;
use bonsai_wgpu::gguf::GgmlType;
use bonsai_wgpu::quant::dequantize_row;
use bonsai_wgpu::quant::q1_0::{
    BlockQ1_0, QK1_0, dequantize_row_q1_0, dot_q1_0_f32, quantize_row_q1_0,
};
use half::f16;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Relative tolerance for comparing f32 sums accumulated in different orders.
const SUM_ORDER_RTOL: f32 = 1e-5;

fn block(d: f32, qs: [u8; 16]) -> BlockQ1_0 {
    BlockQ1_0 {
        d: f16::from_f32(d).to_le_bytes(),
        qs,
    }
}

/// Independent reference: the 128 sign bits as one little-endian u128.
fn reference_dequant(blocks: &[BlockQ1_0]) -> Vec<f32> {
    let mut out = Vec::new();
    for b in blocks {
        let d = f16::from_le_bytes(b.d).to_f32();
        let bits = u128::from_le_bytes(b.qs);
        for j in 0..QK1_0 {
            out.push(if (bits >> j) & 1 == 1 { d } else { -d });
        }
    }
    out
}

#[test]
fn q1_0_hand_built_blocks() {
    let mut qs0 = [0u8; 16];
    qs0[0] = 0b0000_0101; // weights 0 and 2 positive
    qs0[15] = 0b1000_0000; // weight 127 positive
    let blocks = [
        block(0.5, qs0),
        block(0.125, [0xFF; 16]),
        block(2.0, [0; 16]),
    ];
    let bytes: &[u8] = bytemuck::cast_slice(&blocks);
    assert_eq!(bytes.len(), 3 * 18);
    assert_eq!(&bytes[..2], &[0x00, 0x38]); // f16 0.5 little-endian
    let mut y = vec![0.0f32; 3 * QK1_0];
    dequantize_row_q1_0(bytes, &mut y);
    // Hand-written expectations.
    assert_eq!(y[0], 0.5);
    assert_eq!(y[1], -0.5);
    assert_eq!(y[2], 0.5);
    assert_eq!(y[3], -0.5);
    assert_eq!(y[8], -0.5);
    assert_eq!(y[126], -0.5);
    assert_eq!(y[127], 0.5);
    assert!(y[128..256].iter().all(|&v| v == 0.125));
    assert!(y[256..].iter().all(|&v| v == -2.0));
    assert_eq!(y, reference_dequant(&blocks));
    // The generic entry point agrees.
    let mut y2 = vec![0.0f32; 3 * QK1_0];
    dequantize_row(GgmlType::Q1_0, bytes, &mut y2).unwrap();
    assert_eq!(y, y2);
}

fn random_blocks(rng: &mut StdRng, n: usize) -> Vec<BlockQ1_0> {
    (0..n)
        .map(|_| {
            let mut qs = [0u8; 16];
            rng.fill(&mut qs);
            block(rng.random_range(-0.2..0.2), qs)
        })
        .collect()
}

#[test]
fn q1_0_random_blocks_match_reference() {
    let mut rng = StdRng::seed_from_u64(1);
    let blocks = random_blocks(&mut rng, 64);
    let mut y = vec![0.0f32; 64 * QK1_0];
    dequantize_row_q1_0(bytemuck::cast_slice(&blocks), &mut y);
    assert_eq!(y, reference_dequant(&blocks));
}

#[test]
fn q1_0_dot_equals_dequant_then_dot() {
    let mut rng = StdRng::seed_from_u64(2);
    for n_blocks in [1usize, 2, 20, 48] {
        let blocks = random_blocks(&mut rng, n_blocks);
        let x: Vec<f32> = (0..n_blocks * QK1_0)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let w = reference_dequant(&blocks);
        let want: f64 = w.iter().zip(&x).map(|(a, b)| f64::from(a * b)).sum();
        let scale: f64 = w
            .iter()
            .zip(&x)
            .map(|(a, b)| f64::from((a * b).abs()))
            .sum();
        let got = dot_q1_0_f32(bytemuck::cast_slice(&blocks), &x);
        let err = (f64::from(got) - want).abs();
        assert!(
            err <= f64::from(SUM_ORDER_RTOL) * scale.max(1e-6),
            "{n_blocks} blocks: dot {got} vs {want} (err {err}, scale {scale})"
        );
    }
    // Exact case: x of +-1 and d a power of two.
    let blocks = [block(0.25, [0b1111_0000; 16])];
    let x = vec![1.0f32; QK1_0];
    assert_eq!(dot_q1_0_f32(bytemuck::cast_slice(&blocks), &x), 0.0);
    let x: Vec<f32> = (0..QK1_0)
        .map(|j| if j % 8 >= 4 { 1.0 } else { -1.0 })
        .collect();
    assert_eq!(dot_q1_0_f32(bytemuck::cast_slice(&blocks), &x), 32.0);
}

#[test]
fn q1_0_quantize_known_block() {
    // x = j - 64: mean |x| = (64*65/2 + 63*64/2) / 128 = 32, exact in f16.
    let x: Vec<f32> = (0..QK1_0).map(|j| j as f32 - 64.0).collect();
    let mut q = [0u8; 18];
    quantize_row_q1_0(&x, &mut q);
    assert_eq!(f16::from_le_bytes([q[0], q[1]]).to_f32(), 32.0);
    // Bits 0..63 clear (negative), 64..127 set (x >= 0, zero included).
    assert_eq!(&q[2..10], &[0u8; 8]);
    assert_eq!(&q[10..], &[0xFFu8; 8]);
}

#[test]
fn q1_0_quantize_round_trip_signs_and_scale() {
    let mut rng = StdRng::seed_from_u64(3);
    let n = 16 * QK1_0;
    let mut x: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0..3.0)).collect();
    x[5] = 0.0;
    x[6] = -0.0; // -0.0 >= 0.0: positive, as llama.cpp
    let mut q = vec![0xAAu8; 16 * 18];
    quantize_row_q1_0(&x, &mut q);
    let mut y = vec![0.0f32; n];
    dequantize_row_q1_0(&q, &mut y);
    for (b, (xb, yb)) in x.chunks(QK1_0).zip(y.chunks(QK1_0)).enumerate() {
        let mean_abs = xb.iter().map(|v| v.abs()).sum::<f32>() / QK1_0 as f32;
        let d = f16::from_f32(mean_abs).to_f32();
        for (j, (&xv, &yv)) in xb.iter().zip(yb).enumerate() {
            let want = if xv >= 0.0 { d } else { -d };
            assert_eq!(yv, want, "block {b} weight {j} x {xv}");
        }
    }
    assert!(y[5] > 0.0 && y[6] > 0.0);
    // Quantizing the dequantized values is a fixed point.
    let mut q2 = vec![0u8; q.len()];
    quantize_row_q1_0(&y, &mut q2);
    assert_eq!(q, q2);
}

#[test]
fn f16_bf16_f32_known_values() {
    let f16_bits: [(u16, f32); 6] = [
        (0x3C00, 1.0),
        (0xC000, -2.0),
        (0x3800, 0.5),
        (0x7BFF, 65504.0),
        (0x0001, 5.960_464_5e-8),
        (0x8000, -0.0),
    ];
    let src: Vec<u8> = f16_bits.iter().flat_map(|(b, _)| b.to_le_bytes()).collect();
    let mut y = vec![0.0f32; f16_bits.len()];
    dequantize_row(GgmlType::F16, &src, &mut y).unwrap();
    for ((bits, want), got) in f16_bits.iter().zip(&y) {
        assert_eq!(got.to_bits(), want.to_bits(), "f16 {bits:#06x}");
    }
    let bf16_bits: [(u16, f32); 4] = [
        (0x3F80, 1.0),
        (0xC040, -3.0),
        (0x4049, 3.140625),
        (0x0000, 0.0),
    ];
    let src: Vec<u8> = bf16_bits
        .iter()
        .flat_map(|(b, _)| b.to_le_bytes())
        .collect();
    let mut y = vec![0.0f32; bf16_bits.len()];
    dequantize_row(GgmlType::BF16, &src, &mut y).unwrap();
    for ((bits, want), got) in bf16_bits.iter().zip(&y) {
        assert_eq!(got, want, "bf16 {bits:#06x}");
    }
    let vals = [1.5f32, -0.0, f32::MAX, 1e-40];
    let src: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut y = vec![0.0f32; 4];
    dequantize_row(GgmlType::F32, &src, &mut y).unwrap();
    assert_eq!(
        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        vals.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn q8_0_known_values() {
    // Two blocks: d = 0.25 with qs = -16..16, d = -2 with qs = [127, -128, 0, ...].
    let mut src = Vec::new();
    src.extend_from_slice(&f16::from_f32(0.25).to_le_bytes());
    src.extend((0..32).map(|i| (i as i8 - 16) as u8));
    src.extend_from_slice(&f16::from_f32(-2.0).to_le_bytes());
    let mut qs = [0u8; 32];
    qs[0] = 127;
    qs[1] = 0x80;
    src.extend_from_slice(&qs);
    let mut y = vec![0.0f32; 64];
    dequantize_row(GgmlType::Q8_0, &src, &mut y).unwrap();
    for (i, v) in y[..32].iter().enumerate() {
        assert_eq!(*v, (i as f32 - 16.0) * 0.25);
    }
    assert_eq!(y[32], -254.0);
    assert_eq!(y[33], 256.0);
    assert!(y[34..].iter().all(|&v| v == 0.0));
}

#[test]
fn dequantize_row_rejects_bad_arguments() {
    let mut y = vec![0.0f32; 128];
    assert!(matches!(
        dequantize_row(GgmlType::Q1_0, &[0u8; 17], &mut y),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        dequantize_row(GgmlType::Q1_0, &[0u8; 36], &mut y),
        Err(Error::InvalidArgument(_))
    ));
    let mut y = vec![0.0f32; 100];
    assert!(matches!(
        dequantize_row(GgmlType::Q8_0, &[0u8; 34 * 4], &mut y),
        Err(Error::InvalidArgument(_))
    ));
    let mut y = vec![0.0f32; 256];
    assert!(matches!(
        dequantize_row(GgmlType::Q4K, &[0u8; 144], &mut y),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn ggml_type_table() {
    assert_eq!(GgmlType::from_u32(41), Some(GgmlType::Q1_0));
    assert_eq!(GgmlType::from_u32(4), None);
    assert_eq!(GgmlType::from_u32(1000), None);
    for t in GgmlType::ALL {
        assert_eq!(GgmlType::from_u32(t.id()), Some(t));
    }
    assert_eq!(
        (GgmlType::Q1_0.block_size(), GgmlType::Q1_0.type_size()),
        (128, 18)
    );
    assert_eq!(
        (GgmlType::Q8_0.block_size(), GgmlType::Q8_0.type_size()),
        (32, 34)
    );
    assert_eq!(
        (GgmlType::F16.block_size(), GgmlType::F16.type_size()),
        (1, 2)
    );
    assert_eq!(
        (GgmlType::BF16.block_size(), GgmlType::BF16.type_size()),
        (1, 2)
    );
    assert_eq!(
        (GgmlType::F32.block_size(), GgmlType::F32.type_size()),
        (1, 4)
    );
    assert_eq!(GgmlType::Q1_0.row_bytes(2048), Some(16 * 18));
    assert_eq!(GgmlType::Q1_0.row_bytes(100), None);
    assert_eq!(GgmlType::F32.row_bytes(u64::MAX), None);
}
