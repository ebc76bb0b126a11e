//! Generation tests on a scripted engine: stop tokens, stop strings split across tokens, UTF-8
//! characters split across tokens, token limit, end of context, cancellation.

mod fake;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bonsai_wgpu::Error;
use bonsai_wgpu::generate::{GenerateOptions, GenerateOutcome, StopMatcher, StopReason, generate};
use bonsai_wgpu::sampler::SamplerConfig;
use bonsai_wgpu::text::detok::Utf8Stream;
use fake::{FakeVocab, ScriptedEngine};

const PROMPT: [u32; 3] = [1, 1, 1];

fn greedy(max_tokens: usize, stops: &[&str]) -> GenerateOptions {
    GenerateOptions {
        sampler: SamplerConfig::greedy(),
        max_tokens,
        stop_strings: stops.iter().map(|s| s.to_string()).collect(),
        cancel: None,
    }
}

/// Runs `reply` (token ids of `vocab`) through generate; returns the outcome and the pieces.
fn run(
    vocab: &FakeVocab,
    reply: &[u32],
    n_ctx: usize,
    options: &GenerateOptions,
) -> (GenerateOutcome, Vec<String>, ScriptedEngine) {
    let mut engine = ScriptedEngine::new(vocab.pieces.len(), n_ctx, reply.to_vec());
    let mut pieces = Vec::new();
    let outcome = pollster::block_on(generate(&mut engine, vocab, &PROMPT, options, |p| {
        pieces.push(p.to_string());
        ControlFlow::Continue(())
    }))
    .unwrap();
    (outcome, pieces, engine)
}

#[test]
fn stops_on_eos_and_keeps_cache_in_step() {
    let vocab = FakeVocab::new(&[b"x", b"Hel", b"lo", b" wor", b"ld"]);
    let (out, pieces, engine) = run(&vocab, &[2, 3, 4, 5], 64, &greedy(100, &[]));
    assert_eq!(out.stop_reason, StopReason::Eos);
    assert_eq!(out.text, "Hello world");
    assert_eq!(pieces.concat(), out.text);
    assert_eq!(out.tokens, [2, 3, 4, 5]);
    assert_eq!((out.n_prompt, out.n_gen), (3, 5));
    // Cache = prompt + generated tokens; the EOS is not fed.
    assert_eq!(engine.fed, [1, 1, 1, 2, 3, 4, 5]);
}

#[test]
fn stop_string_split_across_tokens_is_not_emitted() {
    let vocab = FakeVocab::new(&[b"x", b"foo", b" ST", b"OP", b"bar"]);
    let (out, pieces, _) = run(&vocab, &[2, 3, 4, 5], 64, &greedy(100, &["STOP"]));
    assert_eq!(out.stop_reason, StopReason::StopString("STOP".into()));
    assert_eq!(out.text, "foo ");
    assert_eq!(pieces.concat(), "foo ");
    assert!(pieces.iter().all(|p| !p.contains('S')), "{pieces:?}");
}

#[test]
fn held_back_prefix_is_released_when_it_is_not_a_stop() {
    let vocab = FakeVocab::new(&[b"x", b"a S", b"T", b"x"]);
    let (out, pieces, _) = run(&vocab, &[2, 3, 4], 64, &greedy(100, &["STOP"]));
    assert_eq!(out.stop_reason, StopReason::Eos);
    assert_eq!(out.text, "a STx");
    assert_eq!(pieces, ["a ", "STx"]);
}

#[test]
fn held_back_prefix_is_flushed_at_the_end() {
    let vocab = FakeVocab::new(&[b"x", b"end ST"]);
    let (out, pieces, _) = run(&vocab, &[2], 64, &greedy(100, &["STOP"]));
    assert_eq!(out.text, "end ST");
    assert_eq!(pieces.concat(), "end ST");
}

#[test]
fn stop_matcher_picks_earliest_stop() {
    let mut m = StopMatcher::new(&["world".into(), "lo w".into()]);
    assert_eq!(
        m.push("hello world"),
        ("hel".to_string(), Some("lo w".to_string()))
    );
}

#[test]
fn multibyte_characters_split_across_tokens_stream_whole() {
    // "é" = C3 A9; "😀" = F0 9F 98 80; "中" = E4 B8 AD.
    let vocab = FakeVocab::new(&[
        b"x",
        b"caf\xc3",
        b"\xa9 ",
        b"\xf0",
        b"\x9f\x98",
        b"\x80\xe4\xb8",
        b"\xad!",
    ]);
    let (out, pieces, _) = run(&vocab, &[2, 3, 4, 5, 6, 7], 64, &greedy(100, &[]));
    assert_eq!(out.text, "café 😀中!");
    assert_eq!(pieces.concat(), out.text);
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
}

#[test]
fn invalid_leftover_bytes_become_replacement_character() {
    let vocab = FakeVocab::new(&[b"x", b"ok", b"\xf0\x9f"]);
    let (out, _, _) = run(&vocab, &[2, 3], 64, &greedy(100, &[]));
    assert_eq!(out.text, "ok\u{FFFD}");
    let mut s = Utf8Stream::new();
    assert_eq!(s.push(b"a\xffb\xc3"), "a\u{FFFD}b");
    assert!(s.has_pending());
    assert_eq!(s.push(b"\xa9"), "é");
}

#[test]
fn max_tokens_stops_with_reason() {
    let vocab = FakeVocab::new(&[b"x", b"a"]);
    let (out, _, engine) = run(&vocab, &[2; 10], 64, &greedy(4, &[]));
    assert_eq!(out.stop_reason, StopReason::MaxTokens);
    assert_eq!(out.text, "aaaa");
    assert_eq!(engine.fed.len(), PROMPT.len() + 4);
}

#[test]
fn end_of_context_is_a_stop_reason_not_an_error() {
    let vocab = FakeVocab::new(&[b"x", b"a"]);
    let (out, _, engine) = run(&vocab, &[2; 10], PROMPT.len() + 3, &greedy(100, &[]));
    assert_eq!(out.stop_reason, StopReason::ContextFull);
    assert_eq!(out.text, "aaa");
    assert_eq!(engine.fed.len(), engine.n_ctx);
}

#[test]
fn prompt_longer_than_context_is_an_error() {
    let vocab = FakeVocab::new(&[b"x"]);
    let mut engine = ScriptedEngine::new(2, 2, vec![]);
    let r = pollster::block_on(generate(
        &mut engine,
        &vocab,
        &PROMPT,
        &greedy(4, &[]),
        |_| ControlFlow::Continue(()),
    ));
    assert!(
        matches!(
            r,
            Err(Error::ContextOverflow {
                needed: 3,
                capacity: 2
            })
        ),
        "{r:?}"
    );
}

#[test]
fn callback_break_cancels() {
    let vocab = FakeVocab::new(&[b"x", b"a"]);
    let mut engine = ScriptedEngine::new(3, 64, vec![2; 10]);
    let out = pollster::block_on(generate(
        &mut engine,
        &vocab,
        &PROMPT,
        &greedy(100, &[]),
        |_| ControlFlow::Break(()),
    ))
    .unwrap();
    assert_eq!(out.stop_reason, StopReason::Cancelled);
    assert_eq!(out.text, "a");
}

#[test]
fn cancel_flag_stops_generation() {
    let vocab = FakeVocab::new(&[b"x", b"a"]);
    let flag = Arc::new(AtomicBool::new(false));
    let options = GenerateOptions {
        cancel: Some(flag.clone()),
        ..greedy(100, &[])
    };
    let mut engine = ScriptedEngine::new(3, 64, vec![2; 10]);
    let mut n = 0;
    let out = pollster::block_on(generate(&mut engine, &vocab, &PROMPT, &options, |_| {
        n += 1;
        if n == 3 {
            flag.store(true, Ordering::Relaxed);
        }
        ControlFlow::Continue(())
    }))
    .unwrap();
    assert_eq!(out.stop_reason, StopReason::Cancelled);
    assert_eq!(out.text, "aaa");
}

#[test]
fn control_tokens_are_not_streamed_as_text() {
    let mut vocab = FakeVocab::new(&[b"x", b"a", b"<|im_start|>", b"b"]);
    vocab.control = vec![3];
    let (out, pieces, _) = run(&vocab, &[2, 3, 4], 64, &greedy(100, &[]));
    assert_eq!(out.text, "ab");
    assert_eq!(pieces.concat(), "ab");
    assert_eq!(out.tokens, [2, 3, 4]);
}

#[test]
fn sampled_generation_is_reproducible_per_seed() {
    // A high temperature flattens the scripted logits: the seed decides the tokens.
    let vocab = FakeVocab::new(&[b"a", b"b", b"c", b"d", b"e", b"f", b"g"]);
    let run_seed = |seed| {
        let mut engine = ScriptedEngine::new(vocab.pieces.len(), 64, vec![1; 40]);
        let options = GenerateOptions {
            sampler: SamplerConfig {
                temperature: 50.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                seed,
                ..SamplerConfig::default()
            },
            max_tokens: 30,
            stop_strings: vec![],
            cancel: None,
        };
        pollster::block_on(generate(&mut engine, &vocab, &PROMPT, &options, |_| {
            ControlFlow::Continue(())
        }))
        .unwrap()
        .tokens
    };
    assert_eq!(run_seed(5), run_seed(5));
    assert_ne!(run_seed(5), run_seed(6));
}
