//! The inference engine interface that generation and chat code drive.

use crate::Result;

/// What generation/chat code drives; implemented by `cpu::CpuSession` and `gpu::Session`.
#[allow(async_fn_in_trait)]
pub trait Engine {
    /// Vocabulary size (length of `logits()`).
    fn n_vocab(&self) -> usize;
    /// KV cache capacity in tokens.
    fn n_ctx(&self) -> usize;
    /// Tokens already in the cache.
    fn n_past(&self) -> usize;
    /// Appends tokens to the cache; `ContextOverflow` if they won't fit.
    async fn feed(&mut self, tokens: &[u32]) -> Result<()>;
    /// Logits of the last fed position, `n_vocab` floats.
    async fn logits(&mut self) -> Result<Vec<f32>>;
    /// Argmax of the last position (GPU: on device).
    async fn greedy(&mut self) -> Result<u32>;
    /// The `k` largest `(id, logit)` pairs, descending (GPU: on device).
    async fn top_k(&mut self, k: usize) -> Result<Vec<(u32, f32)>>;
    /// Drops cache entries at positions `>= n_past`.
    fn truncate(&mut self, n_past: usize) -> Result<()>;
    /// Empties the cache.
    fn reset(&mut self) {
        let _ = self.truncate(0);
    }
}
