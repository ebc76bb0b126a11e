//! Many sequences over one model: the interface a continuous-batching scheduler drives.
//!
//! A [`BatchEngine`] holds `n_slots` sequences, each with its own KV cache of `n_ctx` tokens,
//! over one set of weights. Per step the scheduler asks for one token of every generating
//! sequence ([`BatchEngine::decode`]) and a chunk of one new prompt ([`BatchEngine::prefill`]),
//! then reads back what each sequence's sampler needs ([`BatchEngine::candidates`]).
//!
//! [`EnginePool`] implements it over one [`Engine`] per slot (CPU sessions, or GPU
//! [`crate::gpu::Session`]s sharing one `Arc<GpuModel>`): correct and weight-sharing in memory,
//! but each slot's decode is its own forward pass, so the weights are read once per slot per step.

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::sampler::{CandidateRequest, Sampler};

/// What [`BatchEngine::candidates`] read back for one sequence, as its sampler asked.
#[derive(Clone, Debug, PartialEq)]
pub enum Candidates {
    /// The argmax ([`CandidateRequest::Greedy`]).
    Argmax(u32),
    /// The `K` largest logits as (id, logit), largest first ([`CandidateRequest::TopK`]).
    TopK(Vec<(u32, f32)>),
    /// All logits, index = token id ([`CandidateRequest::Full`]).
    Logits(Vec<f32>),
}

impl Candidates {
    /// Reads what `request` asks of `engine`'s last position.
    pub async fn read<E: Engine>(engine: &mut E, request: CandidateRequest) -> Result<Self> {
        Ok(match request {
            CandidateRequest::Greedy => Candidates::Argmax(engine.greedy().await?),
            CandidateRequest::TopK(k) => Candidates::TopK(engine.top_k(k).await?),
            CandidateRequest::Full => Candidates::Logits(engine.logits().await?),
        })
    }

    /// Draws the next token from these candidates with `sampler` (does not accept it).
    pub fn sample(self, sampler: &mut Sampler) -> Result<u32> {
        match self {
            Candidates::Argmax(id) => Ok(id),
            Candidates::TopK(c) => sampler.sample(c),
            Candidates::Logits(l) => sampler.sample_logits(&l),
        }
    }
}

/// `n_slots` sequences with their own KV caches over one model. Positions are implicit: a token
/// fed to a slot goes at that slot's `n_past`.
#[allow(async_fn_in_trait)]
pub trait BatchEngine {
    /// Number of sequence slots.
    fn n_slots(&self) -> usize;
    /// Vocabulary size.
    fn n_vocab(&self) -> usize;
    /// KV cache capacity of each slot, in tokens.
    fn n_ctx(&self) -> usize;
    /// Tokens in `slot`'s cache.
    fn n_past(&self, slot: usize) -> usize;
    /// Forgets `slot`'s cache entries at positions `>= n_past`.
    fn truncate(&mut self, slot: usize, n_past: usize) -> Result<()>;
    /// Appends prompt `tokens` to `slot`'s cache; afterwards its logits are those of the last.
    async fn prefill(&mut self, slot: usize, tokens: &[u32]) -> Result<()>;
    /// One decode step: appends one token to each listed `(slot, token)` (distinct slots);
    /// afterwards each listed slot's logits are those of its new token.
    async fn decode(&mut self, batch: &[(usize, u32)]) -> Result<()>;
    /// Reads back, for each `(slot, request)`, what the request asks of that slot's logits.
    async fn candidates(
        &mut self,
        requests: &[(usize, CandidateRequest)],
    ) -> Result<Vec<Candidates>>;
}

/// A [`BatchEngine`] made of one [`Engine`] per slot, stepped one after another.
pub struct EnginePool<E> {
    pub(crate) engines: Vec<E>,
}

impl<E: Engine> EnginePool<E> {
    /// A pool over `engines` (at least one; all with the same vocabulary and context size).
    pub fn new(engines: Vec<E>) -> Result<Self> {
        let Some(first) = engines.first() else {
            return Err(Error::InvalidArgument(
                "an engine pool needs at least one slot".into(),
            ));
        };
        let (n_vocab, n_ctx) = (first.n_vocab(), first.n_ctx());
        if engines
            .iter()
            .any(|e| e.n_vocab() != n_vocab || e.n_ctx() != n_ctx)
        {
            return Err(Error::InvalidArgument(
                "the engines of a pool differ in vocabulary or context size".into(),
            ));
        }
        Ok(Self { engines })
    }

    /// The engine of one slot.
    pub fn engine(&self, slot: usize) -> Option<&E> {
        self.engines.get(slot)
    }

    /// The engine of one slot, or an error naming the slot count.
    pub(crate) fn slot(&mut self, slot: usize) -> Result<&mut E> {
        let n = self.engines.len();
        self.engines.get_mut(slot).ok_or_else(|| {
            Error::InvalidArgument(format!("slot {slot} does not exist ({n} slots)"))
        })
    }
}

impl<E: Engine> BatchEngine for EnginePool<E> {
    fn n_slots(&self) -> usize {
        self.engines.len()
    }

    fn n_vocab(&self) -> usize {
        self.engines[0].n_vocab()
    }

    fn n_ctx(&self) -> usize {
        self.engines[0].n_ctx()
    }

    fn n_past(&self, slot: usize) -> usize {
        self.engines.get(slot).map_or(0, Engine::n_past)
    }

    fn truncate(&mut self, slot: usize, n_past: usize) -> Result<()> {
        self.slot(slot)?.truncate(n_past)
    }

    async fn prefill(&mut self, slot: usize, tokens: &[u32]) -> Result<()> {
        self.slot(slot)?.feed(tokens).await
    }

    async fn decode(&mut self, batch: &[(usize, u32)]) -> Result<()> {
        for &(slot, token) in batch {
            self.slot(slot)?.feed(&[token]).await?;
        }
        Ok(())
    }

    async fn candidates(
        &mut self,
        requests: &[(usize, CandidateRequest)],
    ) -> Result<Vec<Candidates>> {
        let mut out = Vec::with_capacity(requests.len());
        for &(slot, request) in requests {
            out.push(Candidates::read(self.slot(slot)?, request).await?);
        }
        Ok(out)
    }
}
