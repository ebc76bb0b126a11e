//! The CPU references of the forward pass's ops: plain f32, written to be read. The model
//! oracle ([`super::session`]) runs them, and each GPU op's test compares its kernel with them.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::model::rope::RopeParams;
use crate::quant::q1_0::{Q8Activations, dot_q1_0_q8};
use crate::quant::{dequantize_row, dot_row, is_matrix_type};

/// A weight matrix of `n` rows by `k` columns, as stored in GGUF (dims [k, n]): Q1_0 or Q2_0
/// (kept quantized), or F32 / F16 / BF16.
#[derive(Clone)]
pub struct Matrix {
    /// The element type of `data` (its own tensor's type, never the file's).
    pub ty: GgmlType,
    /// (n, k) weights in `ty`'s blocks: Q1_0 (n, k / 128) blocks, Q2_0 (n, k / 64).
    pub data: Vec<u8>,
    /// Input width (GGUF ne0).
    pub k: usize,
    /// Output rows (GGUF ne1).
    pub n: usize,
}

impl Matrix {
    /// The matrix `[k, n]` (n rows of k) of type `ty` held in `data`, checked against its shape.
    pub fn new(ty: GgmlType, data: Vec<u8>, k: usize, n: usize) -> Result<Matrix> {
        let want = ty.row_bytes(k as u64).and_then(|r| r.checked_mul(n as u64));
        if !is_matrix_type(ty) || want != Some(data.len() as u64) {
            return Err(Error::BadTensor {
                name: "Matrix".into(),
                reason: format!("{ty} [{k}, {n}] needs {want:?} bytes, got {}", data.len()),
            });
        }
        Ok(Matrix { ty, data, k, n })
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.n.max(1)
    }

    /// The stored bytes of row `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[i * rb..(i + 1) * rb]
    }

    /// Token embedding: row `token` decoded into `out` (k values).
    pub fn embed(&self, token: usize, out: &mut [f32]) {
        dequantize_row(self.ty, self.row(token), &mut out[..self.k])
            .expect("matrix rows are whole blocks (checked at load)");
    }

    /// `out[n] = W[n, k] . x[k]`, each row dotted in f32 by [`dot_row`] (its type's dot); large
    /// matrices (the LM head) are split across threads natively.
    pub fn matvec(&self, out: &mut [f32], x: &[f32]) {
        debug_assert_eq!(x.len(), self.k);
        debug_assert_eq!(out.len(), self.n);
        self.rows(out, |row| dot_row(self.ty, row, x));
    }

    /// `out[i] = dot(row i)` for every row, split across threads natively when the matrix is
    /// large (each row's value is its own, so the split does not change the results).
    fn rows(&self, out: &mut [f32], dot: impl Fn(&[u8]) -> f32 + Sync) {
        let rows = |first: usize, out: &mut [f32]| {
            for (i, o) in out.iter_mut().enumerate() {
                *o = dot(self.row(first + i));
            }
        };
        let threads = worker_threads();
        if threads < 2 || self.n * self.k < PARALLEL_MIN_WORK {
            return rows(0, out);
        }
        let chunk = self.n.div_ceil(threads);
        std::thread::scope(|scope| {
            for (c, part) in out.chunks_mut(chunk).enumerate() {
                let rows = &rows;
                scope.spawn(move || rows(c * chunk, part));
            }
        });
    }

    /// As [`Matrix::matvec`] in the arithmetic of the GPU's q8 path for Q1_0 weights (x
    /// quantized by [`Q8Activations`], integer sums per group of 32; see
    /// [`crate::quant::q1_0::dot_q1_0_q8`]); other types as [`Matrix::matvec`], as on the GPU.
    pub fn matvec_q8(&self, out: &mut [f32], x: &[f32]) {
        if self.ty != GgmlType::Q1_0 || !self.k.is_multiple_of(128) {
            return self.matvec(out, x);
        }
        let xq = Q8Activations::new(x);
        self.rows(out, |row| dot_q1_0_q8(row, &xq));
    }
}

/// Below this many multiply-adds an op stays on one thread (spawning costs more than it saves).
const PARALLEL_MIN_WORK: usize = 1 << 22;

/// Runs `f(i, &mut items[i])` for every item: natively the items are split across threads in
/// contiguous runs, which gives the same results as a loop because each item's work is its own
/// (the CPU reference runs a batch's tokens through a layer's per-token steps this way).
pub fn for_each_parallel<T: Send>(items: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
    let threads = worker_threads().min(items.len());
    if threads < 2 {
        for (i, item) in items.iter_mut().enumerate() {
            f(i, item);
        }
        return;
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        for (c, part) in items.chunks_mut(chunk).enumerate() {
            scope.spawn(move || {
                for (j, item) in part.iter_mut().enumerate() {
                    f(c * chunk + j, item);
                }
            });
        }
    });
}

#[cfg(not(target_arch = "wasm32"))]
fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(target_arch = "wasm32")]
fn worker_threads() -> usize {
    1
}

/// RMSNorm of each row of `x` (rows of `weight.len()` values):
/// `out = x * rsqrt(mean(x^2) + eps) * weight`, summed in f32.
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let n = weight.len();
    for (out, x) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
        let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / n as f32;
        let scale = 1.0 / (mean_sq + eps).sqrt();
        for ((o, &xi), &w) in out.iter_mut().zip(x).zip(weight) {
            *o = xi * scale * w;
        }
    }
}

/// RMSNorm in place over each `weight.len()`-wide row (head) of `x`.
pub fn rmsnorm_heads(x: &mut [f32], weight: &[f32], eps: f32) {
    let copy = x.to_vec();
    rmsnorm(x, &copy, weight, eps);
}

/// Qwen3's QK-norm and RoPE of one token at `pos`, in place: per-head RMSNorm of `q`
/// (n_head, head_dim) and `k` (n_head_kv, head_dim), then NEOX rotation of both.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope(
    q: &mut [f32],
    k: &mut [f32],
    q_norm: &[f32], // (head_dim)
    k_norm: &[f32], // (head_dim)
    eps: f32,
    pos: usize,
    rope: &RopeParams,
) {
    let head_dim = q_norm.len();
    rmsnorm_heads(q, q_norm, eps);
    rmsnorm_heads(k, k_norm, eps);
    rope_neox(q, head_dim, pos, rope);
    rope_neox(k, head_dim, pos, rope);
}

/// Causal GQA attention of one query token at position `n_kv - 1` over cache positions
/// `0..n_kv`: `q` is (n_head, head_dim), `k_cache` and `v_cache` are (>= n_kv, n_head_kv,
/// head_dim); query head `h` reads kv head `h / (n_head / n_head_kv)`. Writes `out`
/// (n_head, head_dim). The definition; [`causal_attention`] computes the same for many queries
/// at once, bit for bit (tested).
pub fn attention(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    n_kv: usize,
    n_head_kv: usize,
    head_dim: usize,
) {
    let kv_dim = n_head_kv * head_dim;
    let group = q.len() / head_dim / n_head_kv;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut att = vec![0.0f32; n_kv];
    for (h, (qh, oh)) in q
        .chunks_exact(head_dim)
        .zip(out.chunks_exact_mut(head_dim))
        .enumerate()
    {
        let kv_off = (h / group) * head_dim;
        for (t, a) in att.iter_mut().enumerate() {
            let k = &k_cache[t * kv_dim + kv_off..][..head_dim];
            *a = dot(qh, k) * scale;
        }
        softmax(&mut att);
        oh.fill(0.0);
        for (t, &a) in att.iter().enumerate() {
            let v = &v_cache[t * kv_dim + kv_off..][..head_dim];
            for (o, &vi) in oh.iter_mut().zip(v) {
                *o += a * vi;
            }
        }
    }
}

/// Causal GQA attention of the query tokens at `positions` (one row of `q` each, (n_q, n_head,
/// head_dim)) over the cache (`k_cache` and `v_cache` (>= positions.end, n_head_kv, head_dim)):
/// the query at position `p` attends to cache positions `0..=p`, and query head `h` reads kv
/// head `h / (n_head / n_head_kv)`. Per query and head:
/// `a_t = softmax_t(q . k_t / sqrt(head_dim))`, `out = sum_t a_t v_t`, summed over `t` in order.
/// Writes `out` (n_q, n_head, head_dim).
///
/// [`attention`]'s arithmetic, reordered for speed (the CPU reference's prefill): the queries
/// share each tile of cache rows while it is in the CPU's cache, and natively runs of queries
/// go to separate threads. Neither changes any query's operations or their order, so the result
/// is [`attention`]'s for each query, bit for bit (tested).
pub fn causal_attention(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    positions: Range<usize>,
    n_head_kv: usize,
    head_dim: usize,
) {
    let n_q = positions.len();
    if n_q == 0 {
        return;
    }
    let q_dim = q.len() / n_q;
    let threads = worker_threads().min(n_q);
    if threads < 2 || n_q * positions.end * q_dim < PARALLEL_MIN_WORK {
        return attention_tiled(out, q, k_cache, v_cache, positions, n_head_kv, head_dim);
    }
    let chunk = n_q.div_ceil(threads);
    std::thread::scope(|scope| {
        let parts = out.chunks_mut(chunk * q_dim).zip(q.chunks(chunk * q_dim));
        for (c, (out, q)) in parts.enumerate() {
            let first = positions.start + c * chunk;
            let positions = first..first + q.len() / q_dim;
            scope.spawn(move || {
                attention_tiled(out, q, k_cache, v_cache, positions, n_head_kv, head_dim);
            });
        }
    });
}

/// Cache rows (keys, then values) that [`causal_attention`]'s queries use in turn while the rows
/// are in the CPU's cache: 64 rows of a 128-wide head are 32 KiB.
const KV_TILE: usize = 64;

/// [`causal_attention`] on one thread.
fn attention_tiled(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    positions: Range<usize>,
    n_head_kv: usize,
    head_dim: usize,
) {
    let n_q = positions.len();
    let q_dim = q.len() / n_q;
    let kv_dim = n_head_kv * head_dim;
    let group = q_dim / head_dim / n_head_kv;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let n_kv = positions.end; // the last query's view
    // cache positions query i attends to: 0..seen(i)
    let seen = |i: usize| positions.start + i + 1;
    let mut att = vec![0.0f32; n_q * n_kv]; // (n_q, n_kv): scores, then weights
    for h in 0..q_dim / head_dim {
        let (q_off, kv_off) = (h * head_dim, (h / group) * head_dim);
        for t0 in (0..n_kv).step_by(KV_TILE) {
            for i in 0..n_q {
                let qh = &q[i * q_dim + q_off..][..head_dim];
                let scores = &mut att[i * n_kv..][..seen(i)];
                for t in t0..(t0 + KV_TILE).min(seen(i)) {
                    let k = &k_cache[t * kv_dim + kv_off..][..head_dim];
                    scores[t] = dot(qh, k) * scale;
                }
            }
        }
        for i in 0..n_q {
            softmax(&mut att[i * n_kv..][..seen(i)]);
            out[i * q_dim + q_off..][..head_dim].fill(0.0);
        }
        for t0 in (0..n_kv).step_by(KV_TILE) {
            for i in 0..n_q {
                let oh = &mut out[i * q_dim + q_off..][..head_dim];
                for t in t0..(t0 + KV_TILE).min(seen(i)) {
                    let a = att[i * n_kv + t];
                    let v = &v_cache[t * kv_dim + kv_off..][..head_dim];
                    for (o, &vi) in oh.iter_mut().zip(v) {
                        *o += a * vi;
                    }
                }
            }
        }
    }
}

/// Dot product of two equal-length f32 slices, summed in 8 interleaved lanes (so the compiler
/// can vectorize it; a single running sum cannot be reordered). The CPU reference's attention
/// scores use it: over 11k positions a scalar loop dominates the whole forward pass.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
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

/// The SwiGLU gate in place: `hb = silu(hb) * hb2`.
pub fn silu_mul(hb: &mut [f32], hb2: &[f32]) {
    for (g, &u) in hb.iter_mut().zip(hb2) {
        *g = silu(*g) * u;
    }
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

/// Greedy sampling's rule, the same on the CPU and the GPU (`argmax.wgsl`): the index of the
/// largest value, the lowest index on ties; NaN and -inf never win (`u32::MAX` when nothing
/// does). GPUs may assume finite floats, so only finite logits are held to it there.
pub fn argmax(logits: &[f32]) -> u32 {
    let (mut best, mut best_i) = (-f32::MAX, u32::MAX);
    for (i, &v) in logits.iter().enumerate() {
        if v > best || (v == best && (i as u32) < best_i) {
            (best, best_i) = (v, i as u32);
        }
    }
    best_i
}

/// The `k` largest logits as (value, index), largest first, with [`argmax`]'s rules (ties: lower
/// index first; NaN and -inf never chosen), padded with `(-f32::MAX, u32::MAX)` to `k` entries:
/// the layout `topk.wgsl` leaves in its result buffers.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(f32, u32)> {
    let mut cands: Vec<(f32, u32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (v, i as u32))
        .filter(|&(v, _)| v >= -f32::MAX)
        .collect();
    let by_value = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if k > 0 && k < cands.len() {
        cands.select_nth_unstable_by(k - 1, by_value);
        cands.truncate(k);
    }
    cands.sort_by(by_value);
    cands.truncate(k);
    cands.resize(k, (-f32::MAX, u32::MAX));
    cands
}
