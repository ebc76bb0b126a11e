//! Device-resident generation on the GPU session against the step-by-step path on the same
//! session type: same tokens, same text, same stop reason, same cache length, and the same
//! logits afterwards (bit for bit: the kept positions were computed by the same kernels) and
//! for the next turn. Greedy and GPU-sampled.

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use bonsai_wgpu::Result;
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::generate::{GenerateOptions, GenerateOutcome, StopReason, generate};
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::{GpuContext, GpuModel, GpuOptions, Session, SessionOptions};
use bonsai_wgpu::sampler::SamplerConfig;
use bonsai_wgpu::text::detok::Vocab;
use bonsai_wgpu::text::tokenizer::Tokenizer;
use common::fixture;
use pollster::block_on;

/// The step-by-step path: the same session with device-resident generation hidden, so
/// `generate` samples on the host and feeds one token at a time.
struct StepByStep(Session);

impl Engine for StepByStep {
    fn n_vocab(&self) -> usize {
        self.0.n_vocab()
    }
    fn n_ctx(&self) -> usize {
        self.0.n_ctx()
    }
    fn n_past(&self) -> usize {
        self.0.n_past()
    }
    async fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        self.0.feed(tokens).await
    }
    async fn logits(&mut self) -> Result<Vec<f32>> {
        self.0.logits().await
    }
    async fn greedy(&mut self) -> Result<u32> {
        self.0.greedy().await
    }
    async fn top_k(&mut self, k: usize) -> Result<Vec<(u32, f32)>> {
        self.0.top_k(k).await
    }
    fn truncate(&mut self, n_past: usize) -> Result<()> {
        self.0.truncate(n_past)
    }
}

/// The tokenizer with chosen stop tokens (random weights rarely produce the real EOS).
struct Stops<'a>(&'a Tokenizer, Vec<u32>);

impl Vocab for Stops<'_> {
    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        self.0.token_bytes(id)
    }
    fn stop_tokens(&self) -> Vec<u32> {
        self.1.clone()
    }
}

struct Fixture {
    model: Arc<GpuModel>,
    tokenizer: Tokenizer,
}

fn load() -> Fixture {
    let gguf = Gguf::open(fixture("tiny-bonsai-dev.gguf")).expect("fixture");
    let ctx = block_on(GpuContext::new(&GpuOptions::default())).expect("GPU adapter");
    Fixture {
        model: GpuModel::load(Arc::new(ctx), &gguf).expect("load"),
        tokenizer: Tokenizer::from_gguf(&gguf).expect("tokenizer"),
    }
}

fn session(f: &Fixture) -> Session {
    let opts = SessionOptions {
        n_ctx: 32,
        ..SessionOptions::default()
    };
    Session::new(Arc::clone(&f.model), opts).expect("session")
}

const PROMPT: [u32; 5] = [785, 3974, 13876, 38835, 374];
const NEXT_TURN: [u32; 3] = [151645, 198, 151644];

fn run<E: Engine>(
    engine: &mut E,
    vocab: &dyn Vocab,
    prompt: &[u32],
    options: &GenerateOptions,
    break_after: Option<usize>,
) -> GenerateOutcome {
    let mut pieces = 0;
    block_on(generate(engine, vocab, prompt, options, |_| {
        pieces += 1;
        match break_after {
            Some(n) if pieces >= n => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }))
    .expect("generate")
}

/// Generates with both paths on fresh sessions and checks every observable result.
fn check_same(
    f: &Fixture,
    what: &str,
    vocab: &dyn Vocab,
    options: &GenerateOptions,
    break_after: Option<usize>,
) -> GenerateOutcome {
    let mut resident = session(f);
    let mut stepped = StepByStep(session(f));
    let a = run(&mut resident, vocab, &PROMPT, options, break_after);
    let b = run(&mut stepped, vocab, &PROMPT, options, break_after);
    eprintln!(
        "{what}: {:?} after {} tokens",
        a.stop_reason,
        a.tokens.len()
    );
    assert_eq!(a.tokens, b.tokens, "{what}: tokens");
    assert_eq!(a.text, b.text, "{what}: text");
    assert_eq!(a.stop_reason, b.stop_reason, "{what}: stop reason");
    assert_eq!(a.n_gen, b.n_gen, "{what}: tokens sampled");
    assert_eq!(resident.n_past(), stepped.n_past(), "{what}: cache length");
    // The logits of the last kept position, then after a next turn.
    let la = block_on(resident.logits()).expect("logits");
    let lb = block_on(stepped.logits()).expect("logits");
    assert!(la == lb, "{what}: logits after the reply differ");
    if resident.n_past() + NEXT_TURN.len() > resident.n_ctx() {
        return a; // a full context takes no next turn
    }
    block_on(resident.feed(&NEXT_TURN)).expect("feed");
    block_on(stepped.feed(&NEXT_TURN)).expect("feed");
    let la = block_on(resident.logits()).expect("logits");
    let lb = block_on(stepped.logits()).expect("logits");
    assert!(la == lb, "{what}: next-turn logits differ");
    a
}

fn options(sampler: SamplerConfig, max_tokens: usize, stops: &[String]) -> GenerateOptions {
    GenerateOptions {
        sampler,
        max_tokens,
        stop_strings: stops.to_vec(),
        cancel: None,
    }
}

#[test]
fn greedy_resident_generation_equals_step_by_step() {
    let f = load();
    let none = Stops(&f.tokenizer, vec![]);
    let greedy = SamplerConfig::greedy();
    let base = check_same(
        &f,
        "max tokens",
        &none,
        &options(greedy.clone(), 12, &[]),
        None,
    );
    assert_eq!(base.stop_reason, StopReason::MaxTokens);
    assert_eq!(base.tokens.len(), 12);
    // A stop token in the middle of the reply: steps queued after it are rolled back.
    let eos = Stops(&f.tokenizer, vec![base.tokens[5]]);
    let first = base
        .tokens
        .iter()
        .position(|&t| t == base.tokens[5])
        .unwrap();
    let out = check_same(
        &f,
        "stop token",
        &eos,
        &options(greedy.clone(), 12, &[]),
        None,
    );
    assert_eq!(out.stop_reason, StopReason::Eos);
    assert_eq!(out.tokens, base.tokens[..first]);
    // A stop string made of the text of tokens 3 and 4.
    let text = |ids: &[u32]| f.tokenizer.decode(ids, false).expect("decode");
    let stop = text(&base.tokens[3..5]);
    if !stop.trim().is_empty() {
        let out = check_same(
            &f,
            "stop string",
            &none,
            &options(greedy.clone(), 12, &[stop]),
            None,
        );
        assert!(matches!(out.stop_reason, StopReason::StopString(_)));
    }
    // The callback stops the reply; and the end of the context.
    check_same(
        &f,
        "callback",
        &none,
        &options(greedy.clone(), 12, &[]),
        Some(3),
    );
    let out = check_same(&f, "context", &none, &options(greedy, 100, &[]), None);
    assert_eq!(out.stop_reason, StopReason::ContextFull);
}

#[test]
fn sampled_generation_is_gpu_resident_and_seeded() {
    let f = load();
    let none = Stops(&f.tokenizer, vec![]);
    let sampler = SamplerConfig {
        temperature: 1.5,
        repeat_penalty: 1.3,
        presence_penalty: 0.2,
        frequency_penalty: 0.1,
        ..SamplerConfig::default()
    };
    let opts = options(sampler.clone(), 16, &[]);
    let mut first = session(&f);
    let a = run(&mut first, &none, &PROMPT, &opts, None);
    let stats = first.decode_stats();
    assert_eq!(stats.steps, 16, "every token came from a queued step");
    let mut second = session(&f);
    let b = run(&mut second, &none, &PROMPT, &opts, None);
    assert_eq!(a.tokens, b.tokens, "same seed, same tokens");
    assert_eq!(a.text, b.text);
    let other = options(SamplerConfig { seed: 7, ..sampler }, 16, &[]);
    let c = run(&mut session(&f), &none, &PROMPT, &other, None);
    assert_ne!(a.tokens, c.tokens, "another seed, other tokens");
    // After a sampled reply the logits are the plain (unpenalised) ones of the last position,
    // as the step-by-step path leaves them.
    let mut stepped = StepByStep(session(&f));
    block_on(stepped.feed(&PROMPT)).unwrap();
    for &t in &a.tokens {
        block_on(stepped.feed(&[t])).unwrap(); // decode steps, as the reply was computed
    }
    let want = block_on(stepped.logits()).unwrap();
    let got = block_on(first.logits()).unwrap();
    assert!(got == want, "logits after a sampled reply");
}
