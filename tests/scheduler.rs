//! The continuous-batching scheduler on the CPU engine with tiny-bonsai-dev: a request's greedy
//! reply alone equals its reply among 15 others and equals plain `generate`; cancellation while
//! queued, during prefill and mid-stream frees the slot; a long prompt is prefilled in chunks
//! while another stream keeps decoding; a continued conversation reuses its slot's cache.

mod common;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bonsai_wgpu::batch::EnginePool;
use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::generate::{GenerateOptions, StopReason, generate};
use bonsai_wgpu::sampler::SamplerConfig;
use bonsai_wgpu::scheduler::{Event, Finish, Request, Scheduler, Stats};
use bonsai_wgpu::text::tokenizer::Tokenizer;

const N_CTX: usize = 512;
const CHUNK: usize = 16;
/// Most scheduler steps a test runs before it is declared hung.
const MAX_STEPS: usize = 10_000;

type Cpu = Scheduler<EnginePool<CpuSession>, Tokenizer>;

/// What one request heard.
#[derive(Debug, Default)]
struct Log {
    started: Option<usize>,
    text: String,
    /// Index of the scheduler step at which each text piece arrived.
    text_steps: Vec<usize>,
    finish: Option<Finish>,
    failed: Option<String>,
}

fn setup(slots: usize) -> (Cpu, Arc<Tokenizer>, Arc<Stats>) {
    let gguf = common::tiny_model();
    let tokenizer = Arc::new(Tokenizer::from_gguf(&gguf).unwrap());
    let model = CpuModel::from_gguf(&gguf).unwrap();
    let sessions = (0..slots)
        .map(|_| CpuSession::new(model.clone(), N_CTX).unwrap())
        .collect();
    let stats = Arc::new(Stats::default());
    let pool = EnginePool::new(sessions).unwrap();
    (
        Scheduler::new(pool, tokenizer.clone(), CHUNK, stats.clone()),
        tokenizer,
        stats,
    )
}

/// Queues a request whose events go to the returned log; `step` counts scheduler steps.
fn push(
    s: &mut Cpu,
    prompt: Vec<u32>,
    sampler: SamplerConfig,
    max_tokens: usize,
    step: &Arc<Mutex<usize>>,
) -> (Arc<Mutex<Log>>, Arc<AtomicBool>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let cancel = Arc::new(AtomicBool::new(false));
    let (l, st) = (log.clone(), step.clone());
    assert!(s.stats().try_enqueue(usize::MAX));
    s.push(Request {
        prompt,
        sampler,
        max_tokens,
        stop_strings: Vec::new(),
        cancel: cancel.clone(),
        on_event: Box::new(move |e| {
            let mut l = l.lock().unwrap();
            match e {
                Event::Started { n_cached, .. } => l.started = Some(n_cached),
                Event::Text(t) => {
                    l.text.push_str(&t);
                    let now = *st.lock().unwrap();
                    l.text_steps.push(now);
                }
                Event::Finished(f) => l.finish = Some(f),
                Event::Failed(e) => l.failed = Some(e.to_string()),
            }
            ControlFlow::Continue(())
        }),
    });
    (log, cancel)
}

fn run(s: &mut Cpu, step: &Arc<Mutex<usize>>) {
    for _ in 0..MAX_STEPS {
        if s.is_idle() {
            return;
        }
        pollster::block_on(s.step());
        *step.lock().unwrap() += 1;
    }
    panic!("scheduler still busy after {MAX_STEPS} steps");
}

fn prompts(tok: &Tokenizer, n: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            let text = format!(
                "<|im_start|>user\nRequest number {i}: tell me about the number {}.<|im_end|>\n<|im_start|>assistant\n",
                i * 7 + 3
            );
            tok.encode(&text, true).unwrap()
        })
        .collect()
}

#[test]
fn greedy_alone_equals_among_fifteen_others_and_generate() {
    const N: usize = 16;
    const MAX_TOKENS: usize = 8;
    let (mut alone, tok, _) = setup(1);
    let step = Arc::new(Mutex::new(0));
    let prompts = prompts(&tok, N);
    // Alone: a sample of the 16 (the CPU reference is slow); together: all 16 at once.
    const ALONE: [usize; 4] = [0, 5, 10, N - 1];
    let mut alone_text = Vec::new();
    for p in ALONE.iter().map(|&i| &prompts[i]) {
        let (log, _) = push(
            &mut alone,
            p.clone(),
            SamplerConfig::greedy(),
            MAX_TOKENS,
            &step,
        );
        run(&mut alone, &step);
        let log = log.lock().unwrap();
        assert_eq!(log.finish.as_ref().unwrap().reason, StopReason::MaxTokens);
        alone_text.push(log.text.clone());
    }

    let (mut together, _, stats) = setup(N);
    let logs: Vec<_> = prompts
        .iter()
        .map(|p| {
            push(
                &mut together,
                p.clone(),
                SamplerConfig::greedy(),
                MAX_TOKENS,
                &step,
            )
            .0
        })
        .collect();
    run(&mut together, &step);
    for log in &logs {
        assert_eq!(
            log.lock().unwrap().finish.as_ref().unwrap().n_gen,
            MAX_TOKENS
        );
    }
    for (j, &i) in ALONE.iter().enumerate() {
        let text = &logs[i].lock().unwrap().text;
        assert_eq!(*text, alone_text[j], "request {i}: alone vs among {N}");
    }
    assert_eq!(stats.active.load(Ordering::SeqCst), 0);
    assert_eq!(stats.queued.load(Ordering::SeqCst), 0);
    assert_eq!(
        stats.generated_tokens.load(Ordering::SeqCst),
        (N * MAX_TOKENS) as u64
    );

    // And both equal plain generate() on one engine.
    let gguf = common::tiny_model();
    let model = CpuModel::from_gguf(&gguf).unwrap();
    let options = GenerateOptions {
        sampler: SamplerConfig::greedy(),
        max_tokens: MAX_TOKENS,
        ..GenerateOptions::default()
    };
    for (j, &i) in ALONE.iter().enumerate().take(2) {
        let mut engine = CpuSession::new(model.clone(), N_CTX).unwrap();
        let out = pollster::block_on(generate(&mut engine, &*tok, &prompts[i], &options, |_| {
            ControlFlow::Continue(())
        }))
        .unwrap();
        assert_eq!(
            out.text, alone_text[j],
            "request {i}: scheduler vs generate"
        );
    }
}

#[test]
fn seeded_sampling_repeats_and_more_requests_than_slots_queue() {
    let (mut s, tok, stats) = setup(2);
    let step = Arc::new(Mutex::new(0));
    let p = prompts(&tok, 1).remove(0);
    let sampler = SamplerConfig {
        temperature: 1.0,
        seed: 42,
        ..SamplerConfig::default()
    };
    let logs: Vec<_> = (0..5)
        .map(|_| push(&mut s, p.clone(), sampler.clone(), 6, &step).0)
        .collect();
    assert_eq!(stats.queued.load(Ordering::SeqCst), 5);
    pollster::block_on(s.step());
    assert_eq!(stats.active.load(Ordering::SeqCst), 2, "two slots");
    assert_eq!(stats.queued.load(Ordering::SeqCst), 3);
    run(&mut s, &step);
    let first = logs[0].lock().unwrap().text.clone();
    for log in &logs {
        assert_eq!(log.lock().unwrap().text, first, "same seed, same text");
    }
}

#[test]
fn cancel_while_queued_during_prefill_and_mid_stream_frees_the_slot() {
    let (mut s, tok, stats) = setup(1);
    let step = Arc::new(Mutex::new(0));
    let long: Vec<u32> = tok
        .encode(
            &"The quick brown fox jumps over the lazy dog. ".repeat(20),
            false,
        )
        .unwrap();
    assert!(long.len() > 4 * CHUNK);
    // Running request (prefilling), and one queued behind it.
    let (running, cancel_running) = push(&mut s, long.clone(), SamplerConfig::greedy(), 50, &step);
    let (queued, cancel_queued) = push(&mut s, long.clone(), SamplerConfig::greedy(), 50, &step);
    pollster::block_on(s.step()); // admits `running`, prefills its first chunk
    assert_eq!(stats.active.load(Ordering::SeqCst), 1);
    cancel_queued.store(true, Ordering::SeqCst);
    pollster::block_on(s.step());
    assert_eq!(
        stats.queued.load(Ordering::SeqCst),
        0,
        "the queued request left the queue"
    );
    let reason = queued.lock().unwrap().finish.clone().unwrap().reason;
    assert_eq!(reason, StopReason::Cancelled);
    // Cancel during prefill: freed at the next step, long before the prompt is in.
    cancel_running.store(true, Ordering::SeqCst);
    pollster::block_on(s.step());
    assert!(
        s.is_idle(),
        "cancelled during prefill frees the slot at the next step"
    );
    assert_eq!(stats.active.load(Ordering::SeqCst), 0);
    let log = running.lock().unwrap();
    assert_eq!(log.finish.as_ref().unwrap().reason, StopReason::Cancelled);
    assert!(s.slot_tokens(0).len() < long.len(), "prefill stopped early");
    drop(log);

    // Mid-stream: the client's event sink goes away (returns Break).
    assert!(stats.try_enqueue(usize::MAX));
    let heard = Arc::new(Mutex::new(0usize));
    let h = heard.clone();
    s.push(Request {
        prompt: prompts(&tok, 1).remove(0),
        sampler: SamplerConfig::greedy(),
        max_tokens: 100,
        stop_strings: Vec::new(),
        cancel: Arc::new(AtomicBool::new(false)),
        on_event: Box::new(move |e| {
            let mut n = h.lock().unwrap();
            if matches!(e, Event::Text(_)) {
                *n += 1;
            }
            if *n >= 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }),
    });
    run(&mut s, &step);
    assert_eq!(*heard.lock().unwrap(), 3);
    assert_eq!(stats.active.load(Ordering::SeqCst), 0);
    assert_eq!(stats.cancelled.load(Ordering::SeqCst), 3);
}

#[test]
fn long_prompt_is_prefilled_in_chunks_while_a_stream_decodes() {
    let (mut s, tok, _) = setup(2);
    let step = Arc::new(Mutex::new(0));
    let (a, _) = push(
        &mut s,
        prompts(&tok, 1).remove(0),
        SamplerConfig::greedy(),
        200,
        &step,
    );
    // Let A start streaming.
    while a.lock().unwrap().text_steps.is_empty() {
        pollster::block_on(s.step());
        *step.lock().unwrap() += 1;
    }
    let long: Vec<u32> = tok
        .encode(&"Once upon a time there was a prompt. ".repeat(30), false)
        .unwrap();
    let chunks = long.len().div_ceil(CHUNK);
    let (b, _) = push(&mut s, long, SamplerConfig::greedy(), 2, &step);
    let from = *step.lock().unwrap();
    while b.lock().unwrap().finish.is_none() {
        pollster::block_on(s.step());
        *step.lock().unwrap() += 1;
    }
    let to = *step.lock().unwrap();
    // B took at least one step per chunk, and A kept streaming meanwhile (a token per step; a
    // few tokens of the random model decode to no text).
    assert!(
        to - from >= chunks,
        "{} steps for {chunks} chunks",
        to - from
    );
    let a_tokens = a
        .lock()
        .unwrap()
        .text_steps
        .iter()
        .filter(|&&t| t >= from && t < to)
        .count();
    assert!(
        2 * a_tokens >= to - from,
        "A streamed {a_tokens} pieces in the {} steps of B's prefill",
        to - from
    );
}

#[test]
fn continued_conversation_reuses_the_slot_cache() {
    let (mut s, tok, stats) = setup(2);
    let step = Arc::new(Mutex::new(0));
    let first = prompts(&tok, 1).remove(0);
    let (log, _) = push(&mut s, first.clone(), SamplerConfig::greedy(), 6, &step);
    run(&mut s, &step);
    assert_eq!(log.lock().unwrap().started, Some(0));
    // The next turn: the first prompt, the reply, then a new user turn.
    let reply = log.lock().unwrap().text.clone();
    let next_text = format!(
        "{reply}<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n"
    );
    let mut next = first.clone();
    next.extend(tok.encode(&next_text, true).unwrap());
    let (log2, _) = push(&mut s, next.clone(), SamplerConfig::greedy(), 6, &step);
    run(&mut s, &step);
    let n_cached = log2.lock().unwrap().started.unwrap();
    assert!(
        n_cached >= first.len(),
        "reused {n_cached} of {} tokens",
        first.len()
    );
    assert_eq!(stats.cached_tokens.load(Ordering::SeqCst), n_cached as u64);

    // Same reply as a fresh scheduler computing the whole prompt.
    let (mut fresh, _, _) = setup(1);
    let (log3, _) = push(&mut fresh, next, SamplerConfig::greedy(), 6, &step);
    run(&mut fresh, &step);
    assert_eq!(log3.lock().unwrap().started, Some(0));
    assert_eq!(log2.lock().unwrap().text, log3.lock().unwrap().text);
}

#[test]
fn prompt_longer_than_the_context_fails_with_both_numbers() {
    let (mut s, _, stats) = setup(1);
    let step = Arc::new(Mutex::new(0));
    let (log, _) = push(
        &mut s,
        vec![1; N_CTX + 1],
        SamplerConfig::greedy(),
        4,
        &step,
    );
    run(&mut s, &step);
    let failed = log.lock().unwrap().failed.clone().unwrap();
    assert!(
        failed.contains(&(N_CTX + 1).to_string()) && failed.contains(&N_CTX.to_string()),
        "{failed}"
    );
    assert_eq!(stats.queued.load(Ordering::SeqCst), 0);
}
