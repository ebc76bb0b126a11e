//! Text generation on any [`Engine`]: feed a prompt, then sample, stream and feed one token at a
//! time until a stop token, a stop string, the token limit, the end of the context, or a cancel.
//!
//! The cache invariant: when [`generate`] returns, the engine's cache holds what it held before,
//! then `prompt_tokens`, then exactly [`GenerateOutcome::tokens`] (a stop token that ended the reply
//! is neither returned nor fed), so a caller can continue or truncate precisely.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::engine::Engine;
use crate::sampler::{Sampler, SamplerConfig};
use crate::text::detok::{Detokenizer, Vocab};
use crate::{Error, Result};

/// Prompt tokens fed per [`Engine::feed`] call, so a cancel is noticed during long prompts.
const PROMPT_CHUNK: usize = 512;
/// GPU-resident steps kept queued: step n+1 is submitted before step n's token is read.
const QUEUE_DEPTH: usize = 2;

/// How to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Sampling parameters (a fresh [`Sampler`] seeded from them per call).
    pub sampler: SamplerConfig,
    /// Most tokens to sample (the stop token included).
    pub max_tokens: usize,
    /// Strings that end the reply; the stop string itself is not emitted or returned.
    pub stop_strings: Vec<String>,
    /// Set to `true` (e.g. from a Ctrl-C handler) to stop at the next token; never reset here.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            sampler: SamplerConfig::default(),
            max_tokens: 512,
            stop_strings: Vec::new(),
            cancel: None,
        }
    }
}

/// Why generation stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-turn / end-of-text token.
    Eos,
    /// This stop string appeared in the output.
    StopString(String),
    /// `max_tokens` were sampled.
    MaxTokens,
    /// The KV cache is full.
    ContextFull,
    /// The callback returned `Break` or the cancel flag was set.
    Cancelled,
}

/// The result of one [`generate`] call.
#[derive(Clone, Debug)]
pub struct GenerateOutcome {
    /// Generated tokens, all of them fed to the cache (no stop token).
    pub tokens: Vec<u32>,
    /// The text streamed to the callback, concatenated (no stop string).
    pub text: String,
    /// Why generation stopped.
    pub stop_reason: StopReason,
    /// Prompt tokens fed.
    pub n_prompt: usize,
    /// Tokens sampled (including a stop token that ended the reply).
    pub n_gen: usize,
    /// Time from the start until the first token's candidates were read back: engines may queue
    /// prompt work asynchronously (GPU), and the first read-back is where it is waited for.
    /// Zero on wasm, which has no clock here.
    pub prompt_time: Duration,
    /// Time after that: feeding each generated token and reading back the next (zero on wasm).
    pub gen_time: Duration,
}

impl GenerateOutcome {
    /// Prompt tokens per second (0 when not measured).
    pub fn prompt_tps(&self) -> f64 {
        rate(self.n_prompt, self.prompt_time)
    }

    /// Generated tokens per second: forward passes over generated tokens (`tokens.len()`) per
    /// second of `gen_time` (0 when not measured).
    pub fn gen_tps(&self) -> f64 {
        rate(self.tokens.len(), self.gen_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

/// A stopwatch that is a no-op on wasm (where `std::time::Instant` panics).
pub(crate) struct Stopwatch {
    #[cfg(not(target_arch = "wasm32"))]
    start: std::time::Instant,
}

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Self {
            #[cfg(not(target_arch = "wasm32"))]
            start: std::time::Instant::now(),
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        #[cfg(not(target_arch = "wasm32"))]
        return self.start.elapsed();
        #[cfg(target_arch = "wasm32")]
        return Duration::ZERO;
    }
}

/// Finds stop strings in streamed text and holds back any tail that could begin one.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds `text`; returns the text safe to emit now and the stop string if one completed
    /// (then everything from the stop string on is dropped).
    pub fn push(&mut self, text: &str) -> (String, Option<String>) {
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|pos| (pos, s)))
            .min_by_key(|&(pos, s)| (pos, std::cmp::Reverse(s.len())));
        if let Some((pos, stop)) = first {
            let stop = stop.clone();
            let out = self.held[..pos].to_string();
            self.held.clear();
            return (out, Some(stop));
        }
        let keep = self.partial_suffix_len();
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, None)
    }

    /// Length in bytes of the longest suffix of `held` that is a proper prefix of a stop string.
    fn partial_suffix_len(&self) -> usize {
        let mut best = 0;
        for (start, _) in self.held.char_indices() {
            let tail = &self.held[start..];
            if self
                .stops
                .iter()
                .any(|s| s.len() > tail.len() && s.starts_with(tail))
            {
                best = best.max(tail.len());
            }
        }
        best
    }

    /// Ends the stream: what was held back is emitted after all.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Feeds `prompt_tokens`, then samples up to `options.max_tokens` tokens, streaming text pieces to `on_piece`.
///
/// `prompt_tokens` may be empty to continue from the engine's current logits (they must belong to
/// position `n_past - 1`, i.e. no [`Engine::truncate`] since the last feed). A cancel while the
/// prompt is fed stops between chunks: [`GenerateOutcome::n_prompt`] says how much went in.
///
/// Errors: the prompt does not fit in the context ([`Error::ContextOverflow`]), nothing to
/// predict from (empty cache and empty prompt), or an engine failure. Running into the end of the
/// context *while generating* is not an error: it stops with [`StopReason::ContextFull`].
pub async fn generate<E, V>(
    engine: &mut E,
    vocab: &V,
    prompt_tokens: &[u32],
    options: &GenerateOptions,
    mut on_piece: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<GenerateOutcome>
where
    E: Engine,
    V: Vocab + ?Sized,
{
    let needed = engine.n_past() + prompt_tokens.len();
    if needed > engine.n_ctx() {
        return Err(Error::ContextOverflow {
            needed,
            capacity: engine.n_ctx(),
        });
    }
    if needed == 0 {
        return Err(Error::InvalidArgument(
            "generate needs a prompt: the cache is empty and no prompt tokens were given".into(),
        ));
    }
    let cancelled = || {
        options
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    };
    let mut outcome = GenerateOutcome {
        tokens: Vec::new(),
        text: String::new(),
        stop_reason: StopReason::Cancelled,
        n_prompt: 0,
        n_gen: 0,
        prompt_time: Duration::ZERO,
        gen_time: Duration::ZERO,
    };

    let clock = Stopwatch::start();
    for chunk in prompt_tokens.chunks(PROMPT_CHUNK) {
        if cancelled() {
            outcome.prompt_time = clock.elapsed();
            return Ok(outcome);
        }
        engine.feed(chunk).await?;
        outcome.n_prompt += chunk.len();
    }
    let prompt_clock = clock;
    outcome.prompt_time = prompt_clock.elapsed();
    let mut clock = Stopwatch::start();
    let stop_tokens = vocab.stop_tokens();
    let mut detok = Detokenizer::new(vocab);
    let mut stops = StopMatcher::new(&options.stop_strings);
    let mut emit = |text: &str, outcome: &mut GenerateOutcome| -> ControlFlow<()> {
        if text.is_empty() {
            return ControlFlow::Continue(());
        }
        outcome.text.push_str(text);
        on_piece(text)
    };

    // What happens to a chosen token, the same for both loops below.
    enum Next {
        Continue,
        Stop(StopReason),
        /// A stop string completed: the text before it was emitted; return at once.
        StopString(String),
    }
    let mut take = |id: u32, outcome: &mut GenerateOutcome| -> Next {
        if outcome.n_gen == 0 {
            outcome.prompt_time = prompt_clock.elapsed();
            clock = Stopwatch::start();
        }
        outcome.n_gen += 1;
        if stop_tokens.contains(&id) {
            return Next::Stop(StopReason::Eos);
        }
        outcome.tokens.push(id);
        let (text, stop) = stops.push(&detok.push(id));
        let flow = emit(&text, outcome);
        match (stop, flow.is_break()) {
            (Some(stop), _) => Next::StopString(stop),
            (None, true) => Next::Stop(StopReason::Cancelled),
            (None, false) => Next::Continue,
        }
    };

    let reason = if engine.begin_queued(&options.sampler, prompt_tokens).await? {
        // GPU-resident: the engine chooses and feeds tokens by itself; keep QUEUE_DEPTH steps
        // queued and act on each token as it arrives. Steps queued past a stop are rolled back
        // by end_queued, so the cache ends as the step-by-step loop below leaves it.
        let base = engine.n_past();
        let mut queued = 0;
        let mut result = Ok(());
        let reason = loop {
            if cancelled() {
                break StopReason::Cancelled;
            }
            while queued < QUEUE_DEPTH
                && outcome.n_gen + queued < options.max_tokens
                && engine.n_past() < engine.n_ctx()
            {
                if let Err(e) = engine.queue_step() {
                    result = Err(e);
                    break;
                }
                queued += 1;
            }
            if result.is_err() {
                break StopReason::Cancelled;
            }
            if queued == 0 {
                break match outcome.n_gen >= options.max_tokens {
                    true => StopReason::MaxTokens,
                    false => StopReason::ContextFull,
                };
            }
            let id = match engine.next_queued().await {
                Ok(id) => id,
                Err(e) => {
                    result = Err(e);
                    break StopReason::Cancelled;
                }
            };
            queued -= 1;
            match take(id, &mut outcome) {
                Next::Continue => {}
                Next::Stop(reason) => break reason,
                Next::StopString(stop) => break StopReason::StopString(stop),
            }
        };
        engine.end_queued(base + outcome.tokens.len()).await?;
        result?;
        if let StopReason::StopString(_) = reason {
            outcome.stop_reason = reason;
            outcome.gen_time = clock.elapsed();
            return Ok(outcome);
        }
        reason
    } else {
        let mut sampler = Sampler::new(options.sampler.clone());
        for &id in prompt_tokens {
            sampler.accept(id);
        }
        loop {
            if cancelled() {
                break StopReason::Cancelled;
            }
            if outcome.n_gen >= options.max_tokens {
                break StopReason::MaxTokens;
            }
            if engine.n_past() >= engine.n_ctx() {
                break StopReason::ContextFull;
            }
            let id = sampler.sample_engine(engine).await?;
            if !stop_tokens.contains(&id) {
                sampler.accept(id);
                engine.feed(&[id]).await?;
            }
            match take(id, &mut outcome) {
                Next::Continue => {}
                Next::Stop(reason) => break reason,
                Next::StopString(stop) => {
                    outcome.stop_reason = StopReason::StopString(stop);
                    outcome.gen_time = clock.elapsed();
                    return Ok(outcome);
                }
            }
        }
    };
    // Not a stop string: flush the unfinished character and anything held back as a prefix.
    let (text, stop) = stops.push(&detok.finish());
    let mut tail = text;
    if stop.is_none() {
        tail.push_str(&stops.finish());
    }
    let _ = emit(&tail, &mut outcome);
    outcome.stop_reason = match stop {
        Some(stop) => StopReason::StopString(stop),
        None => reason,
    };
    outcome.gen_time = clock.elapsed();
    Ok(outcome)
}
