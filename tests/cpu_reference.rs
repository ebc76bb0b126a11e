//! The CPU reference forward pass against llama.cpp's outputs for tiny-bonsai-dev.

mod common;

use std::sync::Arc;

use bonsai_wgpu::cache_type::CacheType;
use bonsai_wgpu::cpu::ops::{attention, causal_attention};
use bonsai_wgpu::cpu::session::MAX_BATCH;
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

/// Logits bit for bit: batching changes which loop runs outside, never a token's arithmetic.
fn assert_same_bits(what: &str, got: &[f32], want: &[f32]) {
    let first = got
        .iter()
        .zip(want)
        .position(|(g, w)| g.to_bits() != w.to_bits());
    if let Some(i) = first {
        panic!("{what}: index {i}: got {}, want {}", got[i], want[i]);
    }
}

/// A prompt fed at once (one batch), in two pieces (the second batch over a cache that already
/// holds the first), and one token at a time (`forward`): the same logits to the last bit, for
/// the exact cache and both rounded ones.
#[test]
fn a_batch_computes_what_its_tokens_do_one_at_a_time() {
    let model = load_model();
    let fx = llama_fixture();
    let p = fx
        .prompts
        .iter()
        .max_by_key(|p| p.tokens.len())
        .expect("prompts");
    let tokens = &p.tokens;
    assert!(tokens.len() > 100 && tokens.len() <= MAX_BATCH);
    for cache_type in [None, Some(CacheType::F16), Some(CacheType::Q8_0)] {
        let session = || {
            CpuSession::with_cache_type(Arc::clone(&model), tokens.len(), cache_type)
                .expect("session")
        };
        let mut one_by_one = session();
        for &t in tokens {
            one_by_one.forward(t).expect("forward");
        }
        let want = pollster::block_on(one_by_one.logits()).expect("logits");

        let mut batch = session();
        pollster::block_on(batch.feed(tokens)).expect("feed");
        let got = pollster::block_on(batch.logits()).expect("logits");
        assert_same_bits(&format!("{cache_type:?}: one batch"), &got, &want);

        let mut pieces = session();
        pollster::block_on(pieces.feed(&tokens[..37])).expect("feed");
        pollster::block_on(pieces.feed(&tokens[37..])).expect("feed");
        let got = pollster::block_on(pieces.logits()).expect("logits");
        assert_same_bits(&format!("{cache_type:?}: two batches"), &got, &want);
    }
}

/// `causal_attention` over many queries (big enough to be split across threads, GQA 4:1, the
/// first query deep in the cache) equals `attention` run for each query alone, bit for bit.
#[test]
fn causal_attention_equals_one_query_at_a_time() {
    let (n_head, n_head_kv, head_dim) = (8, 2, 128);
    let (q_dim, kv_dim) = (n_head * head_dim, n_head_kv * head_dim);
    let positions = 300..430;
    let n_q = positions.len();
    // deterministic values in [-1, 1) that are not all alike
    let fill = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0)
            .collect()
    };
    let q = fill(n_q * q_dim, 1);
    let k = fill(positions.end * kv_dim, 2);
    let v = fill(positions.end * kv_dim, 3);
    let mut got = vec![0.0; n_q * q_dim];
    causal_attention(&mut got, &q, &k, &v, positions.clone(), n_head_kv, head_dim);
    for (i, pos) in positions.enumerate() {
        let mut want = vec![0.0; q_dim];
        let q = &q[i * q_dim..(i + 1) * q_dim];
        attention(&mut want, q, &k, &v, pos + 1, n_head_kv, head_dim);
        let got = &got[i * q_dim..(i + 1) * q_dim];
        assert_same_bits(&format!("query at position {pos}"), got, &want);
    }
}
