//! The interface generation and chat drive: a model plus its KV cache, fed tokens, asked for logits.
//!
//! Implemented by the CPU reference ([`crate::cpu::CpuSession`]) and the GPU session.

use crate::error::{Error, Result};
use crate::sampler::SamplerConfig;

/// A model with its KV cache. Positions are implicit: each fed token goes at `n_past()`.
#[allow(async_fn_in_trait)]
pub trait Engine {
    /// Vocabulary size: the length of [`Engine::logits`].
    fn n_vocab(&self) -> usize;
    /// KV cache capacity in tokens.
    fn n_ctx(&self) -> usize;
    /// Tokens already in the cache.
    fn n_past(&self) -> usize;
    /// Appends `tokens` to the cache; [`crate::Error::ContextOverflow`] if they would not fit.
    async fn feed(&mut self, tokens: &[u32]) -> Result<()>;
    /// Logits at the last fed position (`n_vocab` floats).
    async fn logits(&mut self) -> Result<Vec<f32>>;
    /// Argmax of the last position's logits (lowest id on ties).
    async fn greedy(&mut self) -> Result<u32>;
    /// The `k` largest logits of the last position as (id, logit), largest first.
    async fn top_k(&mut self, k: usize) -> Result<Vec<(u32, f32)>>;
    /// Forgets cache entries at positions `>= n_past`.
    fn truncate(&mut self, n_past: usize) -> Result<()>;
    /// Empties the cache.
    fn reset(&mut self) {
        let _ = self.truncate(0);
    }

    /// Starts device-resident generation when this engine can run `config` on the device:
    /// from then on each [`Engine::queue_step`] feeds the token the device chose from the last
    /// logits and chooses the next one there, so the host never sits between two steps.
    /// `history` fills the penalty window (the prompt, as [`crate::sampler::Sampler::accept`]
    /// would see it). Returns `false` and changes nothing when unsupported (the default): the
    /// caller then samples on the host.
    async fn begin_queued(&mut self, config: &SamplerConfig, history: &[u32]) -> Result<bool> {
        let _ = (config, history);
        Ok(false)
    }

    /// Queues one device-resident step (after [`Engine::begin_queued`]): it feeds the token
    /// chosen from the last position's logits (`n_past` grows by one) and chooses the next.
    /// Does not wait.
    fn queue_step(&mut self) -> Result<()> {
        Err(not_queued())
    }

    /// Waits for the oldest queued step and returns the token it fed.
    async fn next_queued(&mut self) -> Result<u32> {
        Err(not_queued())
    }

    /// Ends device-resident generation: waits for the steps still queued, then cuts the cache
    /// back to `n_past` (the tokens the caller keeps), so the cache and the logits are those of
    /// the step-by-step path that stopped there.
    async fn end_queued(&mut self, n_past: usize) -> Result<()> {
        let _ = n_past;
        Err(not_queued())
    }
}

fn not_queued() -> Error {
    Error::InvalidArgument("this engine has no device-resident generation".into())
}

/// The check every [`Engine::truncate`] starts with: a cache holding `cached` tokens can be cut
/// back to `n_past <= cached`, never extended.
pub fn check_truncate(n_past: usize, cached: usize) -> Result<()> {
    if n_past > cached {
        return Err(Error::InvalidArgument(format!(
            "cannot truncate to {n_past}: only {cached} tokens are cached"
        )));
    }
    Ok(())
}

/// The `k` largest entries of `logits` as (id, logit), largest first, lowest id first on ties.
pub fn top_k_of(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(ids.len());
    let by_logit = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    if k < ids.len() && k > 0 {
        ids.select_nth_unstable_by(k - 1, by_logit);
    }
    ids.truncate(k);
    ids.sort_by(by_logit);
    ids.into_iter()
        .map(|id| (id, logits[id as usize]))
        .collect()
}

/// Index of the largest logit, lowest on ties (NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}
