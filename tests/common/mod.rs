//! Shared test helpers: fixture paths and llama.cpp's reference outputs.
#![allow(dead_code)]

use std::path::PathBuf;

use serde::Deserialize;

/// llama.cpp quantizes activations to Q8_0 in its CPU matmuls; an exact f32 forward lands at
/// cosine 0.99976-0.99992 with its logits (fixtures README), so 0.999 leaves headroom while
/// missing YaRN (0.963) or interleaved RoPE (0.71) fail by far.
pub const LLAMA_COSINE_MIN: f64 = 0.999;
/// Below this top1-top2 gap llama.cpp's Q8_0 activation rounding can flip the argmax.
pub const LLAMA_MARGIN_MIN: f32 = 0.05;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures")).join(name)
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

pub fn llama_fixture() -> LlamaFixture {
    let text =
        std::fs::read_to_string(fixture("tiny-bonsai-dev.llama.json")).expect("fixture json");
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
    bonsai_wgpu::engine::argmax(x)
}
