//! CPU Q2_0 (Ternary-Bonsai): decode, dot and quantize against hand-built blocks, an independent
//! formulation (the 64 codes as one u128) and the tiny-ternary-dev fixture's blocks.

mod common;

use bonsai_wgpu::Error;
use bonsai_wgpu::gguf::{GgmlType, Gguf};
use bonsai_wgpu::quant::dequantize_row;
use bonsai_wgpu::quant::q2_0::{
    BlockQ2_0, QK2_0, dequantize_row_q2_0, dot_q2_0_f32, quantize_row_q2_0,
};
use half::f16;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Relative tolerance for comparing f32 sums accumulated in different orders.
const SUM_ORDER_RTOL: f64 = 1e-5;

fn block(d: f32, qs: [u8; 16]) -> BlockQ2_0 {
    BlockQ2_0 {
        d: f16::from_f32(d).to_le_bytes(),
        qs,
    }
}

/// Independent reference: code j is bits 2j, 2j+1 of the 16 code bytes read as a u128.
fn reference_dequant(blocks: &[BlockQ2_0]) -> Vec<f32> {
    let mut out = Vec::new();
    for b in blocks {
        let d = f16::from_le_bytes(b.d).to_f32();
        let bits = u128::from_le_bytes(b.qs);
        for j in 0..QK2_0 {
            let code = ((bits >> (2 * j)) & 3) as i32;
            out.push((code - 1) as f32 * d);
        }
    }
    out
}

fn random_blocks(rng: &mut StdRng, n: usize) -> Vec<BlockQ2_0> {
    (0..n)
        .map(|_| {
            let mut qs = [0u8; 16];
            rng.fill(&mut qs);
            block(rng.random_range(0.001..0.2), qs)
        })
        .collect()
}

#[test]
fn q2_0_hand_built_blocks() {
    let mut qs = [0x55u8; 16]; // code 1 everywhere: zeros
    qs[0] = 0b11_10_01_00; // weights 0..3: -d, 0, +d, +2d
    qs[15] = 0b10_01_01_01; // weight 63: +d
    let blocks = [
        block(0.5, qs),
        block(0.125, [0xAA; 16]),
        block(2.0, [0; 16]),
    ];
    let bytes: &[u8] = bytemuck::cast_slice(&blocks);
    assert_eq!(bytes.len(), 3 * 18);
    let mut y = vec![0.0f32; 3 * QK2_0];
    dequantize_row_q2_0(bytes, &mut y);
    assert_eq!(&y[..4], &[-0.5, 0.0, 0.5, 1.0]);
    assert!(y[4..63].iter().all(|&v| v == 0.0));
    assert_eq!(y[63], 0.5);
    assert!(y[64..128].iter().all(|&v| v == 0.125));
    assert!(y[128..].iter().all(|&v| v == -2.0));
    assert_eq!(y, reference_dequant(&blocks));
    assert_eq!(blocks[0].code(3), 3);
    assert_eq!(blocks[0].scale(), 0.5);
    let mut y2 = vec![0.0f32; 3 * QK2_0];
    dequantize_row(GgmlType::Q2_0, bytes, &mut y2).unwrap();
    assert_eq!(y, y2);
}

#[test]
fn q2_0_random_blocks_match_reference() {
    let mut rng = StdRng::seed_from_u64(1);
    let blocks = random_blocks(&mut rng, 64);
    let mut y = vec![0.0f32; 64 * QK2_0];
    dequantize_row_q2_0(bytemuck::cast_slice(&blocks), &mut y);
    assert_eq!(y, reference_dequant(&blocks));
}

#[test]
fn q2_0_dot_equals_dequant_then_dot() {
    let mut rng = StdRng::seed_from_u64(2);
    for n_blocks in [1usize, 3, 32, 96] {
        let blocks = random_blocks(&mut rng, n_blocks);
        let x: Vec<f32> = (0..n_blocks * QK2_0)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let w = reference_dequant(&blocks);
        let want: f64 = w.iter().zip(&x).map(|(a, b)| f64::from(a * b)).sum();
        let scale: f64 = w
            .iter()
            .zip(&x)
            .map(|(a, b)| f64::from((a * b).abs()))
            .sum();
        let got = dot_q2_0_f32(bytemuck::cast_slice(&blocks), &x);
        let err = (f64::from(got) - want).abs();
        assert!(
            err <= SUM_ORDER_RTOL * scale.max(1e-6),
            "{n_blocks} blocks: dot {got} vs {want} (err {err}, scale {scale})"
        );
    }
    // Exact case: x = 1 and d a power of two; codes 0,1,2,3 repeating sum to (−1+0+1+2)·16.
    let blocks = [block(0.25, [0b11_10_01_00; 16])];
    assert_eq!(
        dot_q2_0_f32(bytemuck::cast_slice(&blocks), &[1.0; QK2_0]),
        8.0
    );
}

#[test]
fn q2_0_quantize_known_block() {
    // amax 2 (exact in f16); x / d rounds half away from zero: 0.5 -> 1, -0.5 -> -1,
    // 0.49 -> 0, -1 -> -1, 1 -> 1.
    let mut x = vec![0.0f32; QK2_0];
    x[..6].copy_from_slice(&[1.0, -1.0, 0.98, -2.0, 2.0, 0.0]);
    let mut q = [0u8; 18];
    quantize_row_q2_0(&x, &mut q);
    assert_eq!(f16::from_le_bytes([q[0], q[1]]).to_f32(), 2.0);
    let b: BlockQ2_0 = bytemuck::cast(q);
    let codes: Vec<u8> = (0..6).map(|j| b.code(j)).collect();
    assert_eq!(codes, [2, 0, 1, 0, 2, 1]);
    assert!((6..QK2_0).all(|j| b.code(j) == 1));
    // All zeros: d = 0, every code 1 (zero), nothing NaN.
    quantize_row_q2_0(&[0.0; QK2_0], &mut q);
    let mut y = [1.0f32; QK2_0];
    dequantize_row_q2_0(&q, &mut y);
    assert!(y.iter().all(|&v| v == 0.0));
}

#[test]
fn q2_0_quantize_round_trips_ternary_data() {
    // Ternary data {-s, 0, +s} with an f16-exact s per block quantizes to itself.
    let mut rng = StdRng::seed_from_u64(3);
    let n = 24 * QK2_0;
    let mut x = vec![0.0f32; n];
    for xb in x.chunks_mut(QK2_0) {
        let s = f16::from_f32(rng.random_range(0.01..0.1)).to_f32();
        for v in xb.iter_mut() {
            *v = s * rng.random_range(-1i32..=1) as f32;
        }
        xb[0] = s; // amax is s
    }
    let mut q = vec![0xFFu8; 24 * 18];
    quantize_row_q2_0(&x, &mut q);
    let mut y = vec![0.0f32; n];
    dequantize_row_q2_0(&q, &mut y);
    assert_eq!(x, y);
    let mut q2 = vec![0u8; q.len()];
    quantize_row_q2_0(&y, &mut q2);
    assert_eq!(q, q2, "quantizing dequantized values is a fixed point");
}

#[test]
fn q2_0_rejects_bad_lengths() {
    let mut y = vec![0.0f32; 64];
    assert!(matches!(
        dequantize_row(GgmlType::Q2_0, &[0u8; 17], &mut y),
        Err(Error::InvalidArgument(_))
    ));
    let mut y = vec![0.0f32; 96];
    assert!(matches!(
        dequantize_row(GgmlType::Q2_0, &[0u8; 36], &mut y),
        Err(Error::InvalidArgument(_))
    ));
}

/// The fixture's linear weights are ternary Q2_0: codes 0..2 only, about 40% zeros (fixtures
/// README), and its blocks decode the same through both paths.
#[test]
fn ternary_fixture_blocks_are_ternary() {
    let gguf = Gguf::open(common::fixture("tiny-ternary-dev.gguf")).expect("fixture");
    let info = gguf.tensor_info("blk.0.ffn_up.weight").expect("tensor");
    assert_eq!(info.ggml_type, GgmlType::Q2_0);
    let bytes = gguf.tensor_data("blk.0.ffn_up.weight").unwrap();
    let blocks: &[BlockQ2_0] = bytemuck::cast_slice(bytes);
    let mut counts = [0usize; 4];
    for b in blocks {
        for j in 0..QK2_0 {
            counts[b.code(j) as usize] += 1;
        }
    }
    let total: usize = counts.iter().sum();
    let zeros = counts[1] as f64 / total as f64;
    assert_eq!(counts[3], 0, "ternary file uses no +2d code");
    assert!((0.35..0.45).contains(&zeros), "zero fraction {zeros}");
    let mut y = vec![0.0f32; total];
    dequantize_row_q2_0(bytes, &mut y);
    assert_eq!(y, reference_dequant(blocks));
}
