//! The CPU references of the forward pass's ops: plain f32, written to be read. The model
//! oracle ([`super::session`]) runs them, and each GPU op's test compares its kernel with them.

use crate::model::rope::RopeParams;
use crate::quant::q1_0::{self, dot_q1_0_f32};

/// A Q1_0 weight matrix of `n` rows by `k` columns, as stored in GGUF (dims [k, n]).
#[derive(Clone)]
pub struct Q1Matrix {
    /// (n, k / 128) Q1_0 blocks
    pub data: Vec<u8>,
    /// Input width (GGUF ne0).
    pub k: usize,
    /// Output rows (GGUF ne1).
    pub n: usize,
}

impl Q1Matrix {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        q1_0::row_bytes(self.k)
    }

    /// The Q1_0 bytes of row `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[i * rb..(i + 1) * rb]
    }

    /// `out[n] = W[n, k] . x[k]`; large matrices (the LM head) are split across threads natively.
    pub fn matvec(&self, out: &mut [f32], x: &[f32]) {
        debug_assert_eq!(x.len(), self.k);
        debug_assert_eq!(out.len(), self.n);
        let rows = |first: usize, out: &mut [f32]| {
            for (i, o) in out.iter_mut().enumerate() {
                *o = dot_q1_0_f32(self.row(first + i), x);
            }
        };
        let threads = worker_threads();
        if threads < 2 || self.n * self.k < PARALLEL_MIN_WEIGHTS {
            return rows(0, out);
        }
        let chunk = self.n.div_ceil(threads);
        std::thread::scope(|scope| {
            for (c, part) in out.chunks_mut(chunk).enumerate() {
                scope.spawn(move || rows(c * chunk, part));
            }
        });
    }
}

/// Below this many weights a matvec stays on one thread (spawning costs more than it saves).
const PARALLEL_MIN_WEIGHTS: usize = 1 << 22;

#[cfg(not(target_arch = "wasm32"))]
fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(target_arch = "wasm32")]
fn worker_threads() -> usize {
    1
}

/// out = x * rsqrt(mean(x^2) + eps) * weight
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (mean_sq + eps).sqrt();
    for ((o, &xi), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = xi * scale * w;
    }
}

/// RMSNorm in place over each `head_dim`-wide head of `x`.
pub fn rmsnorm_heads(x: &mut [f32], weight: &[f32], eps: f32) {
    for head in x.chunks_exact_mut(weight.len()) {
        let copy = head.to_vec();
        rmsnorm(head, &copy, weight, eps);
    }
}

/// In-place numerically stable softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// SiLU: x * sigmoid(x).
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Rotates every head of `x` in place; NEOX pairs dimension i with i + n_rot/2.
pub fn rope_neox(
    x: &mut [f32], /* (n_heads, head_dim) */
    head_dim: usize,
    pos: usize,
    p: &RopeParams,
) {
    let half = p.n_rot / 2;
    let cos_sin: Vec<(f32, f32)> = (0..half).map(|i| p.cos_sin(pos, 2 * i)).collect();
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(cos, sin)) in cos_sin.iter().enumerate() {
            let (x0, x1) = (head[i], head[i + half]);
            head[i] = x0 * cos - x1 * sin;
            head[i + half] = x0 * sin + x1 * cos;
        }
    }
}
