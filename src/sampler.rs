//! Token sampling with llama.cpp's chain: penalties -> top-k -> top-p -> min-p -> temperature ->
//! draw, over `(id, logit)` candidates, with a seeded RNG that gives the same tokens for the same
//! seed on every platform (native and wasm).
//!
//! # Reading back only K candidates
//!
//! A GPU engine can cut the vocabulary to its `K` largest logits on the device, so only a few
//! numbers cross the bus per token ([`Engine::top_k`]). The result is *exactly* the sample the full
//! logits would give whenever this holds:
//!
//! * penalties only lower logits (`repeat_penalty >= 1`, `presence_penalty >= 0`,
//!   `frequency_penalty >= 0`), and
//! * `K >= top_k + P`, where `P` is the number of distinct tokens in the penalty window.
//!
//! Why: every token outside the read-back set has a raw logit `<= L_K` (the K-th largest) and a
//! penalty can only lower it further. At most `P` of the `K` read-back tokens are penalised, so at
//! least `top_k` of them keep a logit `>= L_K`: the `top_k` best tokens after penalties all lie in
//! the read-back set (up to ties at `L_K`, whose order is arbitrary anyway). Top-p, min-p and
//! temperature then only look at those `top_k` tokens. [`Sampler::request`] computes this `K`;
//! when no `K` is exact (`top_k == 0`, or a penalty that can raise logits) it asks for the full
//! logits, and greedy decoding without penalties asks the engine for its argmax alone.

use std::collections::{HashMap, VecDeque};

use crate::batch::Candidates;
use crate::engine::Engine;
use crate::{Error, Result};

/// Sampling parameters. Defaults are llama.cpp's (`temperature 0.8, top_k 40, top_p 0.95,
/// min_p 0.05`, penalties off, window 64). `temperature <= 0` means greedy (argmax after
/// penalties).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; `<= 0` selects the most likely token (greedy).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables the cut.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest prefix whose probability reaches `top_p`; 1 disables.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the best token's; 0 disables.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens by this; 1 disables.
    pub repeat_penalty: f32,
    /// Subtract this from the logit of every token seen in the window; 0 disables.
    pub presence_penalty: f32,
    /// Subtract this times the token's count in the window; 0 disables.
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at; 0 disables penalties.
    pub penalty_last_n: usize,
    /// Seed of the random number generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0x5eed_b0a5,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding (argmax), no penalties.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Whether the chain always picks the most likely token.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Whether any penalty changes logits.
    pub fn penalties_active(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }

    /// Whether a penalty can raise a logit (then no read-back cut is exact).
    fn penalties_can_raise(&self) -> bool {
        self.penalties_active()
            && (self.repeat_penalty < 1.0
                || self.presence_penalty < 0.0
                || self.frequency_penalty < 0.0)
    }
}

/// What the sampler needs from the engine for the next token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidateRequest {
    /// Only the argmax ([`Engine::greedy`]).
    Greedy,
    /// The `K` largest logits ([`Engine::top_k`]); exact, see the module docs.
    TopK(usize),
    /// All logits ([`Engine::logits`]).
    Full,
}

/// PCG32 (O'Neill's `pcg32_random_r`, XSH-RR): small, fast and identical on every platform.
#[derive(Clone, Debug)]
pub struct Pcg32 {
    state: u64,
    inc: u64,
}

impl Pcg32 {
    const MULT: u64 = 6_364_136_223_846_793_005;

    /// Seeds the generator like `pcg32_srandom_r(seed, stream)`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = Self {
            state: 0,
            inc: (stream << 1) | 1,
        };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(seed);
        rng.next_u32();
        rng
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(Self::MULT).wrapping_add(self.inc);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        let bits = ((self.next_u32() as u64) << 32) | self.next_u32() as u64;
        (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seeded sampler: the chain of [`SamplerConfig`] plus the penalty window of recent tokens.
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Pcg32,
    history: VecDeque<u32>,
}

impl Sampler {
    /// A sampler with an empty penalty window and the RNG seeded from `config.seed`.
    pub fn new(config: SamplerConfig) -> Self {
        let rng = Pcg32::new(config.seed, 0xb0a5);
        Self {
            history: VecDeque::with_capacity(config.penalty_last_n),
            config,
            rng,
        }
    }

    /// The parameters this sampler was built with.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Records a token (prompt or generated) in the penalty window.
    pub fn accept(&mut self, id: u32) {
        if self.config.penalty_last_n == 0 {
            return;
        }
        if self.history.len() == self.config.penalty_last_n {
            self.history.pop_front();
        }
        self.history.push_back(id);
    }

    /// Empties the penalty window (the RNG keeps its state).
    pub fn clear_history(&mut self) {
        self.history.clear();
    }

    /// How often each token occurs in the penalty window.
    fn counts(&self) -> HashMap<u32, u32> {
        let mut counts = HashMap::new();
        for &id in &self.history {
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    }

    /// What to read back from an engine with `n_vocab` tokens for the next draw to be exact.
    pub fn request(&self, n_vocab: usize) -> CandidateRequest {
        let cfg = &self.config;
        let penalties = cfg.penalties_active();
        if cfg.is_greedy() && !penalties {
            return CandidateRequest::Greedy;
        }
        if cfg.penalties_can_raise() {
            return CandidateRequest::Full;
        }
        let keep = if cfg.is_greedy() { 1 } else { cfg.top_k };
        if keep == 0 {
            return CandidateRequest::Full;
        }
        let n_penalised = if penalties { self.counts().len() } else { 0 };
        let k = keep.saturating_add(n_penalised);
        if k >= n_vocab {
            CandidateRequest::Full
        } else {
            CandidateRequest::TopK(k)
        }
    }

    /// Applies llama.cpp's repetition, frequency and presence penalties in place.
    pub fn apply_penalties(&self, candidates: &mut [(u32, f32)]) {
        let cfg = &self.config;
        if !cfg.penalties_active() {
            return;
        }
        let counts = self.counts();
        for (id, logit) in candidates.iter_mut() {
            let Some(&count) = counts.get(id) else {
                continue;
            };
            if *logit <= 0.0 {
                *logit *= cfg.repeat_penalty;
            } else {
                *logit /= cfg.repeat_penalty;
            }
            *logit -= count as f32 * cfg.frequency_penalty + cfg.presence_penalty;
        }
    }

    /// The probabilities the chain leaves, most likely first: `(id, p)` with `p` summing to 1.
    /// Greedy configs give the single best token with probability 1.
    pub fn distribution(&self, mut candidates: Vec<(u32, f32)>) -> Result<Vec<(u32, f64)>> {
        let cfg = &self.config;
        candidates.retain(|(_, logit)| !logit.is_nan());
        if candidates.is_empty() {
            return Err(Error::InvalidArgument(
                "sampler got no candidates (empty or all NaN logits)".into(),
            ));
        }
        self.apply_penalties(&mut candidates);
        // Descending by logit; ties by id so the order is deterministic.
        let by_logit_desc =
            |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if cfg.top_k > 0 && cfg.top_k < candidates.len() {
            candidates.select_nth_unstable_by(cfg.top_k - 1, by_logit_desc);
            candidates.truncate(cfg.top_k);
        }
        candidates.sort_unstable_by(by_logit_desc);
        if cfg.is_greedy() {
            return Ok(vec![(candidates[0].0, 1.0)]);
        }
        if cfg.top_p < 1.0 {
            let probs = softmax(&candidates, 1.0);
            let mut cum = 0.0;
            let mut keep = candidates.len();
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= cfg.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            candidates.truncate(keep);
        }
        if cfg.min_p > 0.0 {
            let threshold = candidates[0].1 as f64 + (cfg.min_p as f64).ln();
            let keep = candidates
                .iter()
                .take_while(|(_, logit)| *logit as f64 >= threshold)
                .count()
                .max(1);
            candidates.truncate(keep);
        }
        let probs = softmax(&candidates, cfg.temperature);
        Ok(candidates.iter().map(|c| c.0).zip(probs).collect())
    }

    /// Runs the chain on `candidates` and draws one token (does not [`accept`](Self::accept) it).
    pub fn sample(&mut self, candidates: Vec<(u32, f32)>) -> Result<u32> {
        let dist = self.distribution(candidates)?;
        if dist.len() == 1 {
            return Ok(dist[0].0);
        }
        let u = self.rng.next_f64();
        let mut cum = 0.0;
        for &(id, p) in &dist {
            cum += p;
            if u < cum {
                return Ok(id);
            }
        }
        Ok(dist[dist.len() - 1].0)
    }

    /// Runs the chain on a full logits vector (index = token id) and draws one token.
    pub fn sample_logits(&mut self, logits: &[f32]) -> Result<u32> {
        let candidates = logits
            .iter()
            .enumerate()
            .map(|(id, &logit)| (id as u32, logit))
            .collect();
        self.sample(candidates)
    }

    /// Draws the next token from `engine`'s last position, reading back only what
    /// [`request`](Self::request) says is needed. Does not accept the token.
    pub async fn sample_engine<E: Engine>(&mut self, engine: &mut E) -> Result<u32> {
        let request = self.request(engine.n_vocab());
        Candidates::read(engine, request).await?.sample(self)
    }
}

/// Softmax of `logits / temperature` in f64 (candidates sorted descending, so the first is max).
fn softmax(candidates: &[(u32, f32)], temperature: f32) -> Vec<f64> {
    let t = temperature as f64;
    let max = candidates[0].1 as f64 / t;
    if !max.is_finite() {
        // Every logit is -inf (or +inf ties): no preference left, so all are equally likely.
        return vec![1.0 / candidates.len() as f64; candidates.len()];
    }
    let mut probs: Vec<f64> = candidates
        .iter()
        .map(|&(_, logit)| (logit as f64 / t - max).exp())
        .collect();
    let sum: f64 = probs.iter().sum();
    for p in &mut probs {
        *p /= sum;
    }
    probs
}
