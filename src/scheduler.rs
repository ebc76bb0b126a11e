//! Continuous batching: many requests over one [`BatchEngine`], interleaved token by token.
//!
//! Each [`Scheduler::step`]:
//! 1. admits queued requests to free slots, preferring the slot whose cached tokens share the
//!    longest prefix with the prompt (a client continuing a chat feeds only the new turn);
//! 2. drops requests whose cancel flag is set, queued or running;
//! 3. samples one token for every sequence that has logits, streams its text, and decodes the
//!    tokens of all sequences that go on in one [`BatchEngine::decode`] call;
//! 4. prefills one chunk (at most `prefill_chunk` tokens) of one new prompt, the one admitted
//!    first, so a long prompt costs running streams one chunk of latency per step, never its
//!    whole length.
//!
//! Cancellation is checked at every step for every request and before every prefill chunk. A
//! request's event callback returning `Break` (its client is gone) cancels it too.
//!
//! Per request the rules are [`crate::generate::generate`]'s: the penalty window starts with the
//! prompt, `max_tokens` counts sampled tokens (a stop token included), a stop string ends the
//! reply and is not emitted, and a slot's cache holds exactly its prompt then the fed reply.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::batch::BatchEngine;
use crate::error::Error;
use crate::generate::{StopMatcher, StopReason};
use crate::sampler::{Sampler, SamplerConfig};
use crate::text::detok::{Utf8Stream, Vocab};

/// Prompt tokens per prefill chunk when the caller does not choose.
pub const DEFAULT_PREFILL_CHUNK: usize = 128;
/// The window over which [`Stats::decode_tps`] is measured.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// One generation request.
pub struct Request {
    /// Prompt tokens (at least one, at most the engine's `n_ctx`).
    pub prompt: Vec<u32>,
    /// Sampling parameters.
    pub sampler: SamplerConfig,
    /// Most tokens to sample (a stop token included).
    pub max_tokens: usize,
    /// Strings that end the reply (not emitted).
    pub stop_strings: Vec<String>,
    /// Set to cancel; checked at every step and before every prefill chunk.
    pub cancel: Arc<AtomicBool>,
    /// Receives the request's events; `Break` cancels the request.
    pub on_event: Box<dyn FnMut(Event) -> ControlFlow<()> + Send>,
}

/// What a request hears from the scheduler, in this order: `Started`, `Text`s, then `Finished`
/// (or `Failed` at any point). A request cancelled while queued only gets `Finished`.
#[derive(Debug)]
pub enum Event {
    /// The request got a slot; `n_cached` prompt tokens were already in its cache.
    Started {
        /// The slot.
        slot: usize,
        /// Prompt tokens reused from the slot's cache.
        n_cached: usize,
    },
    /// Reply text (never splits a character, never holds a stop string).
    Text(String),
    /// The request ended.
    Finished(Finish),
    /// The request failed (bad prompt, engine error); nothing more follows.
    Failed(Error),
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    /// Why it stopped.
    pub reason: StopReason,
    /// Prompt tokens.
    pub n_prompt: usize,
    /// Prompt tokens reused from the slot's cache (not computed again).
    pub n_cached: usize,
    /// Tokens sampled (a stop token included).
    pub n_gen: usize,
}

/// Counters shared with whoever reports on the scheduler (e.g. a `/metrics` endpoint).
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests that got a slot.
    pub started: AtomicU64,
    /// Requests that ended (any reason, failures included).
    pub finished: AtomicU64,
    /// Requests cancelled (queued or running).
    pub cancelled: AtomicU64,
    /// Prompt tokens computed by prefill.
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens reused from slot caches.
    pub cached_tokens: AtomicU64,
    /// Tokens sampled.
    pub generated_tokens: AtomicU64,
    /// Decode steps run.
    pub decode_steps: AtomicU64,
    /// Requests holding a slot.
    pub active: AtomicUsize,
    /// Requests waiting for a slot.
    pub queued: AtomicUsize,
    /// (end of step, tokens decoded) of recent decode steps.
    recent: Mutex<VecDeque<(Instant, usize)>>,
}

impl Stats {
    /// Counts one more queued request unless `limit` are queued already (then `false`: reject).
    pub fn try_enqueue(&self, limit: usize) -> bool {
        self.queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q < limit).then_some(q + 1)
            })
            .is_ok()
    }

    /// Aggregate decode tokens per second over the last few seconds (0 when idle).
    pub fn decode_tps(&self) -> f64 {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        while recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            recent.pop_front();
        }
        let tokens: usize = recent.iter().map(|(_, n)| n).sum();
        match recent.front() {
            Some((first, _)) if tokens > 0 => {
                let span = now.duration_since(*first).max(Duration::from_millis(100));
                tokens as f64 / span.as_secs_f64()
            }
            _ => 0.0,
        }
    }

    fn record_decode(&self, tokens: usize) {
        self.decode_steps.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.push_back((Instant::now(), tokens));
        if recent.len() > 4096 {
            recent.pop_front();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Prompt tokens are still to be fed.
    Prefill,
    /// The slot's logits belong to its last token: sample next.
    Ready,
}

struct Job {
    request: Request,
    /// The prompt tokens not found in the slot's cache; `fed` of them are in by now.
    pending: Vec<u32>,
    fed: usize,
    phase: Phase,
    sampler: Sampler,
    utf8: Utf8Stream,
    stops: StopMatcher,
    n_prompt: usize,
    n_cached: usize,
    n_gen: usize,
    /// Admission order: the earliest prompt is prefilled first.
    order: u64,
}

impl Job {
    fn cancelled(&self) -> bool {
        self.request.cancel.load(Ordering::Relaxed)
    }

    fn emit(&mut self, event: Event) -> ControlFlow<()> {
        (self.request.on_event)(event)
    }
}

#[derive(Default)]
struct Slot {
    /// The tokens in this slot's KV cache, position by position.
    cached: Vec<u32>,
    job: Option<Job>,
    last_used: u64,
}

/// Runs requests on a [`BatchEngine`]; see the module docs.
pub struct Scheduler<B, V: ?Sized> {
    engine: B,
    vocab: Arc<V>,
    stop_tokens: Vec<u32>,
    slots: Vec<Slot>,
    queue: VecDeque<Request>,
    prefill_chunk: usize,
    stats: Arc<Stats>,
    clock: u64,
}

impl<B: BatchEngine, V: Vocab + ?Sized> Scheduler<B, V> {
    /// A scheduler over `engine`'s slots; prompts are fed `prefill_chunk` tokens per step.
    pub fn new(engine: B, vocab: Arc<V>, prefill_chunk: usize, stats: Arc<Stats>) -> Self {
        let slots = (0..engine.n_slots()).map(|_| Slot::default()).collect();
        Self {
            stop_tokens: vocab.stop_tokens(),
            engine,
            vocab,
            slots,
            queue: VecDeque::new(),
            prefill_chunk: prefill_chunk.max(1),
            stats,
            clock: 0,
        }
    }

    /// The counters this scheduler updates.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The engine.
    pub fn engine(&self) -> &B {
        &self.engine
    }

    /// Queues a request. The caller counts it in [`Stats::queued`] first
    /// ([`Stats::try_enqueue`]); the scheduler uncounts it when it leaves the queue.
    pub fn push(&mut self, request: Request) {
        self.queue.push_back(request);
    }

    /// Whether nothing is queued or running.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.slots.iter().all(|s| s.job.is_none())
    }

    /// The tokens cached in each slot (for tests and diagnostics).
    pub fn slot_tokens(&self, slot: usize) -> &[u32] {
        self.slots.get(slot).map_or(&[], |s| &s.cached)
    }

    /// One round: admit, cancel, one decode step for every generating sequence, one prefill
    /// chunk. Engine failures fail the requests involved, not the scheduler.
    pub async fn step(&mut self) {
        self.drop_cancelled_queued();
        self.admit();
        self.decode_step().await;
        self.prefill_step().await;
    }

    fn drop_cancelled_queued(&mut self) {
        let mut kept = VecDeque::with_capacity(self.queue.len());
        while let Some(mut request) = self.queue.pop_front() {
            if request.cancel.load(Ordering::Relaxed) {
                self.stats.queued.fetch_sub(1, Ordering::SeqCst);
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                self.stats.finished.fetch_add(1, Ordering::Relaxed);
                let _ = (request.on_event)(Event::Finished(Finish {
                    reason: StopReason::Cancelled,
                    n_prompt: request.prompt.len(),
                    n_cached: 0,
                    n_gen: 0,
                }));
            } else {
                kept.push_back(request);
            }
        }
        self.queue = kept;
    }

    fn admit(&mut self) {
        while !self.queue.is_empty() {
            let free: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots[i].job.is_none())
                .collect();
            if free.is_empty() {
                return;
            }
            let Some(mut request) = self.queue.pop_front() else {
                return;
            };
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            let n_ctx = self.engine.n_ctx();
            let prompt = std::mem::take(&mut request.prompt);
            if prompt.is_empty() || prompt.len() > n_ctx {
                let error = if prompt.is_empty() {
                    Error::InvalidArgument("the prompt is empty".into())
                } else {
                    Error::ContextOverflow {
                        needed: prompt.len(),
                        capacity: n_ctx,
                    }
                };
                self.stats.finished.fetch_add(1, Ordering::Relaxed);
                let _ = (request.on_event)(Event::Failed(error));
                continue;
            }
            let common = |slot: usize| {
                self.slots[slot]
                    .cached
                    .iter()
                    .zip(&prompt)
                    .take_while(|(a, b)| a == b)
                    .count()
            };
            // Longest shared prefix first, then the least recently used slot.
            let slot = free
                .iter()
                .copied()
                .max_by_key(|&s| (common(s), std::cmp::Reverse(self.slots[s].last_used)))
                .unwrap_or(free[0]);
            // At least the last prompt token is fed again: its logits are needed.
            let n_cached = common(slot).min(prompt.len() - 1);
            if let Err(e) = self.engine.truncate(slot, n_cached) {
                self.stats.finished.fetch_add(1, Ordering::Relaxed);
                let _ = (request.on_event)(Event::Failed(e));
                continue;
            }
            self.clock += 1;
            let mut sampler = Sampler::new(request.sampler.clone());
            for &id in &prompt {
                sampler.accept(id);
            }
            let stops = StopMatcher::new(&request.stop_strings);
            let s = &mut self.slots[slot];
            s.cached.truncate(n_cached);
            s.last_used = self.clock;
            let mut job = Job {
                request,
                pending: prompt[n_cached..].to_vec(),
                fed: 0,
                phase: Phase::Prefill,
                sampler,
                utf8: Utf8Stream::new(),
                stops,
                n_prompt: prompt.len(),
                n_cached,
                n_gen: 0,
                order: self.clock,
            };
            self.stats.started.fetch_add(1, Ordering::Relaxed);
            self.stats.active.fetch_add(1, Ordering::SeqCst);
            self.stats
                .cached_tokens
                .fetch_add(n_cached as u64, Ordering::Relaxed);
            let flow = job.emit(Event::Started { slot, n_cached });
            self.slots[slot].job = Some(job);
            if flow.is_break() {
                self.finish(slot, StopReason::Cancelled);
            }
        }
    }

    /// Ends `slot`'s job: flushes held-back text (unless cancelled) and reports.
    fn finish(&mut self, slot: usize, reason: StopReason) {
        let Some(mut job) = self.slots[slot].job.take() else {
            return;
        };
        let mut reason = reason;
        if reason != StopReason::Cancelled && !matches!(reason, StopReason::StopString(_)) {
            let (mut tail, stop) = job.stops.push(&job.utf8.finish());
            match stop {
                Some(stop) => reason = StopReason::StopString(stop),
                None => tail.push_str(&job.stops.finish()),
            }
            if !tail.is_empty() {
                let _ = job.emit(Event::Text(tail));
            }
        }
        if reason == StopReason::Cancelled {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.finished.fetch_add(1, Ordering::Relaxed);
        self.stats.active.fetch_sub(1, Ordering::SeqCst);
        let finish = Finish {
            reason,
            n_prompt: job.n_prompt,
            n_cached: job.n_cached,
            n_gen: job.n_gen,
        };
        let _ = job.emit(Event::Finished(finish));
    }

    /// Fails `slot`'s job with `error` and empties the slot's cache (its state is unknown).
    fn fail(&mut self, slot: usize, error: Error) {
        let s = &mut self.slots[slot];
        s.cached.clear();
        let _ = self.engine.truncate(slot, 0);
        if let Some(mut job) = s.job.take() {
            self.stats.finished.fetch_add(1, Ordering::Relaxed);
            self.stats.active.fetch_sub(1, Ordering::SeqCst);
            let _ = job.emit(Event::Failed(error));
        }
    }

    fn fail_all(&mut self, slots: &[usize], error: &Error) {
        for &slot in slots {
            self.fail(slot, Error::Gpu(error.to_string()));
        }
    }

    /// Samples one token for every ready sequence, then decodes all that go on at once.
    async fn decode_step(&mut self) {
        let n_ctx = self.engine.n_ctx();
        let mut requests = Vec::new();
        for slot in 0..self.slots.len() {
            let n_past = self.engine.n_past(slot);
            let Some(job) = self.slots[slot].job.as_ref() else {
                continue;
            };
            if job.phase != Phase::Ready {
                continue;
            }
            let end = if job.cancelled() {
                Some(StopReason::Cancelled)
            } else if job.n_gen >= job.request.max_tokens {
                Some(StopReason::MaxTokens)
            } else if n_past >= n_ctx {
                Some(StopReason::ContextFull)
            } else {
                None
            };
            match end {
                Some(reason) => self.finish(slot, reason),
                None => requests.push((slot, job.sampler.request(self.engine.n_vocab()))),
            }
        }
        if requests.is_empty() {
            return;
        }
        let slots: Vec<usize> = requests.iter().map(|r| r.0).collect();
        let candidates = match self.engine.candidates(&requests).await {
            Ok(c) => c,
            Err(e) => return self.fail_all(&slots, &e),
        };
        let mut batch = Vec::with_capacity(slots.len());
        for (&slot, candidates) in slots.iter().zip(candidates) {
            let Some(job) = self.slots[slot].job.as_mut() else {
                continue;
            };
            let id = match candidates.sample(&mut job.sampler) {
                Ok(id) => id,
                Err(e) => {
                    self.fail(slot, e);
                    continue;
                }
            };
            job.n_gen += 1;
            self.stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
            if self.stop_tokens.contains(&id) {
                self.finish(slot, StopReason::Eos);
                continue;
            }
            job.sampler.accept(id);
            let piece = job.utf8.push_token(&*self.vocab, id);
            let (text, stop) = job.stops.push(&piece);
            let mut flow = ControlFlow::Continue(());
            if !text.is_empty() {
                flow = job.emit(Event::Text(text));
            }
            if let Some(stop) = stop {
                self.finish(slot, StopReason::StopString(stop));
            } else if flow.is_break() {
                self.finish(slot, StopReason::Cancelled);
            } else {
                batch.push((slot, id));
            }
        }
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.engine.decode(&batch).await {
            let slots: Vec<usize> = batch.iter().map(|b| b.0).collect();
            return self.fail_all(&slots, &e);
        }
        self.stats.record_decode(batch.len());
        for &(slot, id) in &batch {
            self.slots[slot].cached.push(id);
        }
    }

    /// Feeds one chunk of the earliest-admitted prompt that is still being prefilled.
    async fn prefill_step(&mut self) {
        let next = (0..self.slots.len())
            .filter_map(|s| {
                let job = self.slots[s].job.as_ref()?;
                (job.phase == Phase::Prefill).then_some((job.order, s))
            })
            .min();
        let Some((_, slot)) = next else {
            return;
        };
        let Some(job) = self.slots[slot].job.as_ref() else {
            return;
        };
        if job.cancelled() {
            return self.finish(slot, StopReason::Cancelled);
        }
        let end = (job.fed + self.prefill_chunk).min(job.pending.len());
        let chunk = job.pending[job.fed..end].to_vec();
        if let Err(e) = self.engine.prefill(slot, &chunk).await {
            return self.fail(slot, e);
        }
        self.stats
            .prompt_tokens
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        let s = &mut self.slots[slot];
        s.cached.extend_from_slice(&chunk);
        if let Some(job) = s.job.as_mut() {
            job.fed = end;
            if job.fed == job.pending.len() {
                job.phase = Phase::Ready;
            }
        }
    }
}
