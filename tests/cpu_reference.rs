//! The CPU reference forward pass against llama.cpp's outputs for tiny-bonsai-dev.

mod common;

use std::sync::Arc;

use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::gguf::Gguf;
use common::*;

fn load_model() -> Arc<CpuModel> {
    let gguf = Gguf::open(fixture("tiny-bonsai-dev.gguf")).expect("open fixture");
    CpuModel::from_gguf(&gguf).expect("load model")
}

/// Runs one prompt, then llama.cpp's greedy continuation (teacher-forced); checks every argmax
/// where llama.cpp is confident and the last prompt position's logits. Returns that cosine.
fn check_prompt(model: &Arc<CpuModel>, p: &LlamaPrompt, strict: bool) -> f64 {
    let n_ctx = p.tokens.len() + p.greedy.len() + 1;
    let mut session = CpuSession::new(Arc::clone(model), n_ctx).expect("session");
    let mut mismatches = Vec::new();
    let mut last_cos = 0.0;
    for (i, &tok) in p.tokens.iter().enumerate() {
        let logits = session.forward(tok).expect("forward");
        let got = argmax(logits);
        if p.prompt_margin[i] > LLAMA_MARGIN_MIN && got != p.prompt_argmax[i] {
            mismatches.push(format!(
                "prompt pos {i}: got {got}, want {}",
                p.prompt_argmax[i]
            ));
        }
        if i + 1 == p.tokens.len() {
            last_cos = cosine(logits, &llama_logits(p));
        }
    }
    // teacher-forced greedy: step j predicts greedy[j], then llama.cpp's token is fed
    let mut logits = pollster::block_on(session.logits()).expect("logits");
    for (j, &want) in p.greedy.iter().enumerate() {
        let got = argmax(&logits);
        if p.greedy_margin[j] > LLAMA_MARGIN_MIN && got != want {
            mismatches.push(format!("greedy step {j}: got {got}, want {want}"));
        }
        logits = session.forward(want).expect("forward").to_vec();
    }
    if strict {
        assert!(
            mismatches.is_empty(),
            "prompt {:?}: argmax mismatches: {mismatches:#?}",
            p.text
        );
        assert!(
            last_cos >= LLAMA_COSINE_MIN,
            "prompt {:?}: last-position cosine {last_cos:.6} < {LLAMA_COSINE_MIN}",
            p.text
        );
    }
    last_cos
}

#[test]
fn cpu_reference_matches_llama_cpp() {
    let model = load_model();
    let fx = llama_fixture();
    assert_eq!(fx.n_vocab, model.config.n_vocab);
    for p in &fx.prompts {
        let cos = check_prompt(&model, p, true);
        eprintln!("{} tokens: cosine {cos:.6}", p.tokens.len());
    }
}

/// The parity test must be able to fail: without YaRN the logits move far off (fixtures README).
#[test]
fn parity_check_detects_missing_yarn() {
    let model = load_model();
    let mut no_yarn = (*model).clone();
    no_yarn.config.rope.ext_factor = 0.0;
    no_yarn.config.rope.freq_scale = 1.0;
    let fx = llama_fixture();
    let p = fx
        .prompts
        .iter()
        .find(|p| p.tokens.len() > 100)
        .expect("long prompt");
    let cos = check_prompt(&Arc::new(no_yarn), p, false);
    assert!(
        cos < LLAMA_COSINE_MIN,
        "dropping YaRN should break parity, got cosine {cos:.6}"
    );
}
