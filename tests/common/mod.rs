//! Shared test helpers: fixture paths and llama.cpp's reference outputs.
#![allow(dead_code)]

use std::path::PathBuf;

use serde::Deserialize;

/// llama.cpp quantizes activations to Q8_0 in its CPU matmuls; an exact f32 forward lands at
/// cosine 0.99976-0.99992 with its logits (fixtures README), so 0.999 leaves headroom while
/// missing YaRN (0.963) or interleaved RoPE (0.71) fail by far.
pub const LLAMA_COSINE_MIN: f64 = 0.999;
/// Least cosine of a whole-model GPU run on the q8 kernel path with the CPU reference in the
/// same arithmetic (`CpuSession::with_q8_activations`). Per kernel the two agree to 1e-7
/// (gpu_kernels, gpu_matmul); through a model every int8 rounding of an activation that sits
/// near a step boundary can land on the other step when the f32 sums before it ran in another
/// order, so the models drift apart faster than in f32 (measured on the tiny fixture:
/// 0.99980 .. 0.99990, against 0.99999+ on the f32 path).
pub const Q8_MODEL_COSINE_MIN: f64 = 0.9995;

/// The GPU-vs-CPU cosine bound of a model test: `f32_min` on the f32 path, the q8 one else.
pub fn model_cosine_min(ctx: &bonsai_wgpu::gpu::GpuContext, f32_min: f64) -> f64 {
    match ctx.kernel_path {
        bonsai_wgpu::gpu::KernelPath::Q8 => Q8_MODEL_COSINE_MIN.min(f32_min),
        _ => f32_min,
    }
}
/// Below this top1-top2 gap llama.cpp's Q8_0 activation rounding can flip the argmax.
pub const LLAMA_MARGIN_MIN: f32 = 0.05;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures")).join(name)
}

/// The .inp/.out pairs, split exactly as llama.cpp's tests/test-tokenizer-0.cpp does: cases are
/// separated by "\n__ggml_vocab_test__\n" (so each case loses only the newline before the
/// separator line), and the .out has one line of space-separated ids per case.
pub fn vocab_cases() -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(fixture("ggml-vocab-qwen2.gguf.inp")).expect("read .inp");
    let out = std::fs::read_to_string(fixture("ggml-vocab-qwen2.gguf.out")).expect("read .out");
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            Some(next) => {
                inputs.push(inp[pos..pos + next].to_string());
                pos += next + sep.len();
            }
            None => {
                inputs.push(inp[pos..].to_string());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("token id"))
                .collect()
        })
        .collect();
    assert_eq!(inputs.len(), outputs.len(), ".inp and .out case counts");
    inputs.into_iter().zip(outputs).collect()
}

#[derive(Deserialize)]
pub struct LlamaPrompt {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_argmax: Vec<u32>,
    pub prompt_margin: Vec<f32>,
    pub last_logits_file: String,
    pub greedy: Vec<u32>,
    pub greedy_margin: Vec<f32>,
}

#[derive(Deserialize)]
pub struct LlamaFixture {
    pub n_vocab: usize,
    pub prompts: Vec<LlamaPrompt>,
}

/// llama.cpp's outputs for tiny-bonsai-dev (Q1_0).
pub fn llama_fixture() -> LlamaFixture {
    llama_fixture_named("tiny-bonsai-dev.llama.json")
}

/// llama.cpp's outputs from the fixture JSON `name` (same format for every model).
pub fn llama_fixture_named(name: &str) -> LlamaFixture {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture json");
    serde_json::from_str(&text).expect("parse fixture json")
}

/// llama.cpp's last-position logits for a prompt (little-endian f32).
pub fn llama_logits(p: &LlamaPrompt) -> Vec<f32> {
    let bytes = std::fs::read(fixture(&p.last_logits_file)).expect("logits file");
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

pub fn argmax(x: &[f32]) -> u32 {
    bonsai_wgpu::cpu::ops::argmax(x)
}

/// `n` values drawn uniformly from `(-amp, amp)`.
pub fn random_f32(rng: &mut rand::rngs::StdRng, n: usize, amp: f32) -> Vec<f32> {
    use rand::Rng;
    (0..n).map(|_| rng.random_range(-amp..amp)).collect()
}

/// Random GGUF Q1_0 bytes for a `[k, n]` weight: f16 block scales drawn from `scales`, random
/// sign bits.
pub fn random_q1_0(
    rng: &mut rand::rngs::StdRng,
    k: usize,
    n: usize,
    scales: std::ops::Range<f32>,
) -> Vec<u8> {
    use rand::Rng;
    let mut out = Vec::with_capacity(n * k / 128 * 18);
    for _ in 0..n * k / 128 {
        let d = half::f16::from_f32(rng.random_range(scales.clone()));
        out.extend_from_slice(&d.to_le_bytes());
        out.extend((0..16).map(|_| rng.random::<u8>()));
    }
    out
}

/// Random GGUF Q2_0 bytes for a `[k, n]` weight: f16 block scales drawn from `scales`, random
/// 2-bit codes (all four, so +2d is exercised too).
pub fn random_q2_0(
    rng: &mut rand::rngs::StdRng,
    k: usize,
    n: usize,
    scales: std::ops::Range<f32>,
) -> Vec<u8> {
    use rand::Rng;
    let mut out = Vec::with_capacity(n * k / 64 * 18);
    for _ in 0..n * k / 64 {
        let d = half::f16::from_f32(rng.random_range(scales.clone()));
        out.extend_from_slice(&d.to_le_bytes());
        out.extend((0..16).map(|_| rng.random::<u8>()));
    }
    out
}

/// The attribute of GPU tests. They are async so that one body runs in two places: natively
/// `#[pollster::test]` blocks on it; on wasm32 `#[wasm_bindgen_test]` lets the browser's event
/// loop drive it (WebGPU read-backs complete only there). Browser command: README, "Tests".
#[cfg(not(target_arch = "wasm32"))]
#[allow(unused_imports)]
pub use pollster::test as gpu_test;
#[cfg(target_arch = "wasm32")]
#[allow(unused_imports)]
pub use wasm_bindgen_test::wasm_bindgen_test as gpu_test;

/// A line of test output: stderr natively, the browser console (shown by wasm-bindgen-test on
/// failure) on wasm32.
#[allow(unused_macros)]
macro_rules! note {
    ($($arg:tt)*) => {{
        #[cfg(not(target_arch = "wasm32"))]
        eprintln!($($arg)*);
        #[cfg(target_arch = "wasm32")]
        wasm_bindgen_test::console_log!($($arg)*);
    }};
}

/// Fails with the worst index when max |got - want| exceeds `tol` times the RMS of `want`; notes
/// the worst error and the NMSE (llama.cpp's test-backend-ops metric).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let rms = (want.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / want.len() as f64).sqrt();
    let scale = (rms as f32).max(1e-30);
    let (mut worst, mut worst_err) = (0, 0.0f32);
    let mut sq_err = 0.0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        sq_err += (err as f64).powi(2);
        if err > worst_err || err.is_nan() {
            (worst, worst_err) = (i, err);
        }
    }
    let nmse = sq_err / (rms * rms * want.len() as f64).max(1e-300);
    note!(
        "{what}: max err {worst_err:e} (rel {:e}) at {worst}, nmse {nmse:e}",
        worst_err / scale
    );
    assert!(
        worst_err / scale <= tol,
        "{what}: index {worst}: got {} want {} (err {worst_err:e}, rms {rms:e}, tol {tol:e})",
        got[worst],
        want[worst]
    );
}

/// The tiny-bonsai-dev fixture: memory-mapped natively; compiled into the test module on wasm32,
/// where a browser test has no file system.
pub fn tiny_model() -> bonsai_wgpu::gguf::Gguf {
    #[cfg(not(target_arch = "wasm32"))]
    let gguf = bonsai_wgpu::gguf::Gguf::open(fixture("tiny-bonsai-dev.gguf"));
    #[cfg(target_arch = "wasm32")]
    let gguf = bonsai_wgpu::gguf::Gguf::from_bytes(TINY_MODEL_BYTES.to_vec());
    gguf.expect("tiny-bonsai-dev fixture")
}

/// The tiny-bonsai-dev file itself, compiled in: a browser test has no file system.
#[cfg(target_arch = "wasm32")]
pub const TINY_MODEL_BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/tiny-bonsai-dev.gguf"
));

/// The tiny-ternary-dev file (Q2_0), compiled in: a browser test has no file system.
#[cfg(target_arch = "wasm32")]
pub const TINY_TERNARY_BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/tiny-ternary-dev.gguf"
));

/// Wall-clock milliseconds since some fixed point (`std::time::Instant` panics on wasm32).
pub fn now_ms() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
            * 1e3
    }
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now()
    }
}
