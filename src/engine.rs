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
    /// Argmax of the last position's logits, by [`crate::cpu::ops::argmax`]'s rule (lowest id on
    /// ties, NaN and -inf never chosen; an error when no logit qualifies).
    async fn greedy(&mut self) -> Result<u32>;
    /// The `k` largest logits of the last position as (id, logit), largest first, by
    /// [`crate::cpu::ops::top_k`]'s rule.
    async fn top_k(&mut self, k: usize) -> Result<Vec<(u32, f32)>>;
    /// Forgets cache entries at positions `>= n_past`.
    fn truncate(&mut self, n_past: usize) -> Result<()>;
    /// Empties the cache.
    fn reset(&mut self) {
        let _ = self.truncate(0);
    }

    /// Starts GPU-resident generation when this engine can run `config` on the device: from
    /// then on each [`Engine::queue_step`] feeds the token the device chose from the last
    /// logits and chooses the next one there, so the host never sits between two steps.
    /// `history` fills the penalty window (the prompt, as [`crate::sampler::Sampler::accept`]
    /// would see it). Returns `false` and changes nothing when unsupported (the default): the
    /// caller then samples on the host with [`crate::sampler::Sampler`].
    async fn begin_queued(&mut self, config: &SamplerConfig, history: &[u32]) -> Result<bool> {
        let _ = (config, history);
        Ok(false)
    }

    /// Queues one GPU-resident step (after [`Engine::begin_queued`]): it feeds the token chosen
    /// from the last position's logits (`n_past` grows by one) and chooses the next. Does not
    /// wait.
    fn queue_step(&mut self) -> Result<()> {
        Err(not_queued())
    }

    /// Waits for the oldest queued step and returns the token it fed.
    async fn next_queued(&mut self) -> Result<u32> {
        Err(not_queued())
    }

    /// Ends GPU-resident generation: waits for the steps still queued, then cuts the cache back
    /// to `n_past` (the tokens the caller keeps), so the cache, the logits and the next choice
    /// are those of the step-by-step path that stopped there.
    async fn end_queued(&mut self, n_past: usize) -> Result<()> {
        let _ = n_past;
        Err(not_queued())
    }
}

fn not_queued() -> Error {
    Error::InvalidArgument("this engine has no GPU-resident generation".into())
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

/// The token [`crate::cpu::ops::argmax`] (or its GPU kernel) chose, or an error when it chose
/// none: every logit was NaN or -inf.
pub fn check_argmax(id: u32, n_vocab: usize) -> Result<u32> {
    if id as usize >= n_vocab {
        return Err(Error::InvalidArgument(format!(
            "greedy: no finite logit to choose (argmax returned {id})"
        )));
    }
    Ok(id)
}

/// [`crate::cpu::ops::top_k`]'s (value, index) pairs as [`Engine::top_k`] returns them:
/// (id, logit), the padding (ids past the vocabulary) left out.
pub fn candidates(pairs: &[(f32, u32)], n_vocab: usize) -> Vec<(u32, f32)> {
    pairs
        .iter()
        .filter(|&&(_, id)| (id as usize) < n_vocab)
        .map(|&(v, id)| (id, v))
        .collect()
}
