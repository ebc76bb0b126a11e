//! GPU-resident generation (queued steps, the token ring, rollback past a stop) against the
//! step-by-step path on the same session type: same tokens, text, stop reason and cache length,
//! and afterwards the same logits, the same greedy choice and the same next-turn logits, bit for
//! bit (the kept positions were computed by the same kernels). Greedy and GPU-sampled, Q1_0 and
//! Q2_0 weights, f16 and q8_0 caches; and every kernel built checked gives the same result.

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use bonsai_wgpu::Result;
use bonsai_wgpu::cache_type::CacheType;
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::generate::{GenerateOptions, GenerateOutcome, StopReason, generate};
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::{DecodePlan, GpuContext, GpuModel, GpuOptions, Session, SessionOptions};
use bonsai_wgpu::sampler::SamplerConfig;
use bonsai_wgpu::text::detok::Vocab;
use bonsai_wgpu::text::tokenizer::Tokenizer;
use common::fixture;
use pollster::block_on;

/// The step-by-step path: the same session with GPU-resident generation hidden (the trait's
/// default `begin_queued` says no), so `generate` samples on the host, one feed per token.
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
    cache_type: CacheType,
    decode_plan: DecodePlan,
}

fn load_with(file: &str, cache_type: CacheType, opts: &GpuOptions) -> Fixture {
    let gguf = Gguf::open(fixture(file)).expect("fixture");
    let ctx = block_on(GpuContext::new(opts)).expect("GPU adapter");
    Fixture {
        model: GpuModel::load(Arc::new(ctx), &gguf).expect("load"),
        tokenizer: Tokenizer::from_gguf(&gguf).expect("tokenizer"),
        cache_type,
        decode_plan: DecodePlan::default(),
    }
}

fn load(file: &str, cache_type: CacheType) -> Fixture {
    load_with(file, cache_type, &GpuOptions::default())
}

/// Small enough that "context" runs into the end of the cache.
const N_CTX: usize = 32;

fn session(f: &Fixture) -> Session {
    let opts = SessionOptions {
        n_ctx: N_CTX,
        cache_type: f.cache_type,
        decode_plan: f.decode_plan,
        ..SessionOptions::default()
    };
    Session::new(Arc::clone(&f.model), opts).expect("session")
}

const PROMPT: [u32; 5] = [785, 3974, 13876, 38835, 374];
const NEXT_TURN: [u32; 3] = [151645, 198, 151644];

fn run<E: Engine>(
    engine: &mut E,
    vocab: &dyn Vocab,
    options: &GenerateOptions,
    break_after: Option<usize>,
) -> GenerateOutcome {
    let mut pieces = 0;
    block_on(generate(engine, vocab, &PROMPT, options, |_| {
        pieces += 1;
        match break_after {
            Some(n) if pieces >= n => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }))
    .expect("generate")
}

/// What is read after a reply: the logits and greedy choice first (they may have to be
/// recomputed after a rollback), or the next turn straight away (it must not need them).
#[derive(Clone, Copy)]
enum After {
    ReadFirst,
    NextTurn,
}

/// Generates with both paths on fresh sessions and checks every observable result.
fn check_same(
    f: &Fixture,
    what: &str,
    vocab: &dyn Vocab,
    options: &GenerateOptions,
    break_after: Option<usize>,
    after: After,
) -> GenerateOutcome {
    let mut resident = session(f);
    let mut stepped = StepByStep(session(f));
    let a = run(&mut resident, vocab, options, break_after);
    let b = run(&mut stepped, vocab, options, break_after);
    eprintln!(
        "{what}: {:?} after {} tokens, {:?}",
        a.stop_reason,
        a.tokens.len(),
        resident.decode_stats().per_token()
    );
    assert_eq!(a.tokens, b.tokens, "{what}: tokens");
    assert_eq!(a.text, b.text, "{what}: text");
    assert_eq!(a.stop_reason, b.stop_reason, "{what}: stop reason");
    assert_eq!(a.n_gen, b.n_gen, "{what}: tokens sampled");
    assert_eq!(resident.n_past(), stepped.n_past(), "{what}: cache length");
    if let After::ReadFirst = after {
        let la = block_on(resident.logits()).expect("logits");
        let lb = block_on(stepped.logits()).expect("logits");
        assert!(la == lb, "{what}: logits after the reply differ");
        let ga = block_on(resident.greedy()).expect("greedy");
        let gb = block_on(stepped.greedy()).expect("greedy");
        assert_eq!(ga, gb, "{what}: greedy choice after the reply");
    }
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

/// Greedy: every way a reply ends, and each rollback case (none, back to the prompt's end,
/// part of the reply).
fn check_greedy_stops(f: &Fixture, full: bool) {
    use After::{NextTurn, ReadFirst};
    let none = Stops(&f.tokenizer, vec![]);
    let greedy = || options(SamplerConfig::greedy(), 12, &[]);
    let base = check_same(f, "max tokens", &none, &greedy(), None, ReadFirst);
    assert_eq!(base.stop_reason, StopReason::MaxTokens);
    assert_eq!(base.tokens.len(), 12);
    // A stop token in the middle of the reply: the steps queued after it are rolled back.
    let stop = base.tokens[5];
    let first = base.tokens.iter().position(|&t| t == stop).unwrap();
    let eos = Stops(&f.tokenizer, vec![stop]);
    let out = check_same(f, "stop token", &eos, &greedy(), None, ReadFirst);
    assert_eq!(out.stop_reason, StopReason::Eos);
    assert_eq!(out.tokens, base.tokens[..first]);
    // The first token is a stop token: back to where generation began.
    let eos = Stops(&f.tokenizer, vec![base.tokens[0]]);
    let out = check_same(f, "first token stops", &eos, &greedy(), None, ReadFirst);
    assert!(out.tokens.is_empty());
    if !full {
        return;
    }
    let eos = Stops(&f.tokenizer, vec![stop]);
    check_same(f, "stop token, next turn", &eos, &greedy(), None, NextTurn);
    // A stop string made of the text of tokens 3 and 4.
    let text = f
        .tokenizer
        .decode(&base.tokens[3..5], false)
        .expect("decode");
    if !text.trim().is_empty() {
        let opts = options(SamplerConfig::greedy(), 12, &[text]);
        let out = check_same(f, "stop string", &none, &opts, None, ReadFirst);
        assert!(matches!(out.stop_reason, StopReason::StopString(_)));
    }
    // The callback stops the reply; the end of the context.
    check_same(f, "callback", &none, &greedy(), Some(3), ReadFirst);
    let opts = options(SamplerConfig::greedy(), 100, &[]);
    let out = check_same(f, "context", &none, &opts, None, ReadFirst);
    assert_eq!(out.stop_reason, StopReason::ContextFull);
    assert_eq!(out.tokens.len(), N_CTX - PROMPT.len());
}

#[test]
fn greedy_resident_generation_equals_step_by_step() {
    check_greedy_stops(&load("tiny-bonsai-dev.gguf", CacheType::F16), true);
}

/// The unfused decode plan (the default is the fused one) feeds its argmax into the next step
/// the same way.
#[test]
fn greedy_resident_generation_with_the_unfused_plan() {
    for cache_type in [CacheType::F16, CacheType::Q8_0] {
        let mut f = load("tiny-bonsai-dev.gguf", cache_type);
        f.decode_plan = DecodePlan::Unfused;
        check_greedy_stops(&f, false);
    }
}

#[test]
fn greedy_resident_generation_with_q8_0_cache_and_ternary_weights() {
    check_greedy_stops(&load("tiny-bonsai-dev.gguf", CacheType::Q8_0), false);
    check_greedy_stops(&load("tiny-ternary-dev.gguf", CacheType::F16), false);
}

#[test]
fn resident_greedy_needs_no_host_wait_between_steps() {
    let f = load("tiny-bonsai-dev.gguf", CacheType::F16);
    let none = Stops(&f.tokenizer, vec![]);
    let mut s = session(&f);
    let out = run(
        &mut s,
        &none,
        &options(SamplerConfig::greedy(), 10, &[]),
        None,
    );
    assert_eq!(out.tokens.len(), 10);
    let stats = s.decode_stats();
    assert_eq!(stats.steps, 10, "one queued step per token");
    assert_eq!(stats.passes, 10, "one compute pass per step");
    // Only the last step, with nothing queued behind it, is waited for idle.
    assert_eq!(stats.host_waits, 1, "{stats:?}");
    // Step by step: a wait per token.
    let mut s = StepByStep(session(&f));
    run(
        &mut s,
        &none,
        &options(SamplerConfig::greedy(), 10, &[]),
        None,
    );
    assert_eq!(s.0.decode_stats().host_waits, 10);
}

#[test]
fn sampled_generation_is_gpu_resident_and_seeded() {
    let f = load("tiny-bonsai-dev.gguf", CacheType::F16);
    let none = Stops(&f.tokenizer, vec![]);
    let sampler = SamplerConfig {
        temperature: 1.5,
        repeat_penalty: 1.3,
        presence_penalty: 0.2,
        frequency_penalty: 0.1,
        ..SamplerConfig::default()
    };
    let opts = options(sampler.clone(), 12, &[]);
    let mut first = session(&f);
    let a = run(&mut first, &none, &opts, None);
    assert_eq!(
        first.decode_stats().steps,
        12,
        "every token came from a queued step"
    );
    let mut second = session(&f);
    let b = run(&mut second, &none, &opts, None);
    assert_eq!(a.tokens, b.tokens, "same seed, same tokens");
    assert_eq!(a.text, b.text);
    let other = options(SamplerConfig { seed: 7, ..sampler }, 12, &[]);
    let c = run(&mut session(&f), &none, &other, None);
    assert_ne!(a.tokens, c.tokens, "another seed, other tokens");
    // After a sampled reply the logits are the plain (unpenalised) ones of the last position,
    // as a step-by-step reply of the same tokens leaves them.
    let mut stepped = session(&f);
    block_on(stepped.feed(&PROMPT)).unwrap();
    for &t in &a.tokens {
        block_on(stepped.feed(&[t])).unwrap(); // decode steps, as the reply was computed
    }
    let want = block_on(stepped.logits()).unwrap();
    let got = block_on(first.logits()).unwrap();
    assert!(got == want, "logits after a sampled reply");
    // A stop token mid-reply rolls the sampled steps back too.
    let eos = Stops(&f.tokenizer, vec![a.tokens[4]]);
    let first = a.tokens.iter().position(|&t| t == a.tokens[4]).unwrap();
    let mut s = session(&f);
    let out = run(&mut s, &eos, &opts, None);
    assert_eq!(out.tokens, a.tokens[..first]);
    assert_eq!(s.n_past(), PROMPT.len() + first);
    let mut stepped = session(&f);
    block_on(stepped.feed(&PROMPT)).unwrap();
    for &t in &out.tokens {
        block_on(stepped.feed(&[t])).unwrap();
    }
    assert!(block_on(s.logits()).unwrap() == block_on(stepped.logits()).unwrap());
}

/// The trusted (unchecked) kernels and every kernel built with wgpu's runtime checks generate
/// the same tokens and logits: the checks only clamp indices that are in range anyway.
#[test]
fn checked_shaders_generate_the_same() {
    let mut results = Vec::new();
    for checked in [false, true] {
        let opts = GpuOptions {
            checked_shaders: checked,
            ..GpuOptions::default()
        };
        let f = load_with("tiny-bonsai-dev.gguf", CacheType::F16, &opts);
        assert_eq!(f.model.ctx.checked_shaders, checked || env_checked());
        let none = Stops(&f.tokenizer, vec![]);
        let mut s = session(&f);
        let out = run(
            &mut s,
            &none,
            &options(SamplerConfig::greedy(), 6, &[]),
            None,
        );
        results.push((out.tokens, block_on(s.logits()).expect("logits")));
    }
    assert_eq!(results[0].0, results[1].0, "tokens");
    assert!(
        results[0].1 == results[1].1,
        "checked and trusted kernels differ"
    );
}

fn env_checked() -> bool {
    std::env::var("BONSAI_CHECKED_SHADERS").is_ok_and(|v| !v.trim().is_empty() && v.trim() != "0")
}
