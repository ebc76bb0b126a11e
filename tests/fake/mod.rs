//! Test doubles shared by the generation and chat tests: a scripted engine and a byte vocabulary.
#![allow(dead_code)]

use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::text::detok::Vocab;
use bonsai_wgpu::{Error, Result};

/// A vocabulary whose token `i` is `pieces[i]`; token 0 is the stop token.
pub struct FakeVocab {
    pub pieces: Vec<Vec<u8>>,
    /// Ids that are control tokens (markup, not text).
    pub control: Vec<u32>,
}

impl FakeVocab {
    /// Token 0 = stop ("<eos>"), then one token per given piece (ids 1..).
    pub fn new(pieces: &[&[u8]]) -> Self {
        let mut all = vec![b"<eos>".to_vec()];
        all.extend(pieces.iter().map(|p| p.to_vec()));
        Self {
            pieces: all,
            control: Vec::new(),
        }
    }
}

impl Vocab for FakeVocab {
    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        self.pieces.get(id as usize).cloned()
    }
    fn stop_tokens(&self) -> Vec<u32> {
        vec![0]
    }
    fn is_control(&self, id: u32) -> bool {
        self.control.contains(&id)
    }
}

/// An engine that, after the prompt, predicts `reply[i]` for the i-th generated position (then
/// `stop`, 0 unless changed), by putting logit 10 on it and 0 elsewhere.
pub struct ScriptedEngine {
    pub stop: u32,
    pub n_vocab: usize,
    pub n_ctx: usize,
    pub fed: Vec<u32>,
    pub reply: Vec<u32>,
    pub prompt_len: Option<usize>,
}

impl ScriptedEngine {
    pub fn new(n_vocab: usize, n_ctx: usize, reply: Vec<u32>) -> Self {
        Self {
            stop: 0,
            n_vocab,
            n_ctx,
            fed: Vec::new(),
            reply,
            prompt_len: None,
        }
    }

    fn next(&self) -> u32 {
        let i = self.fed.len() - self.prompt_len.unwrap_or(self.fed.len());
        self.reply.get(i).copied().unwrap_or(self.stop)
    }
}

impl Engine for ScriptedEngine {
    fn n_vocab(&self) -> usize {
        self.n_vocab
    }
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    fn n_past(&self) -> usize {
        self.fed.len()
    }
    async fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        if self.fed.len() + tokens.len() > self.n_ctx {
            return Err(Error::ContextOverflow {
                needed: self.fed.len() + tokens.len(),
                capacity: self.n_ctx,
            });
        }
        self.fed.extend_from_slice(tokens);
        if self.prompt_len.is_none() {
            self.prompt_len = Some(self.fed.len());
        }
        Ok(())
    }
    async fn logits(&mut self) -> Result<Vec<f32>> {
        let mut logits = vec![0.0; self.n_vocab];
        logits[self.next() as usize] = 10.0;
        Ok(logits)
    }
    async fn greedy(&mut self) -> Result<u32> {
        Ok(self.next())
    }
    async fn top_k(&mut self, k: usize) -> Result<Vec<(u32, f32)>> {
        let logits = self.logits().await?;
        let mut pairs: Vec<(u32, f32)> = logits
            .into_iter()
            .enumerate()
            .map(|(i, l)| (i as u32, l))
            .collect();
        pairs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        pairs.truncate(k);
        Ok(pairs)
    }
    fn truncate(&mut self, n_past: usize) -> Result<()> {
        self.fed.truncate(n_past);
        Ok(())
    }
}
