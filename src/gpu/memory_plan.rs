//! The memory plan: every byte a session will allocate, computed before anything is allocated
//! and checked against the adapter's limits, so a context that cannot fit is a clear error
//! naming the numbers and the largest context that does fit, never a device loss or an
//! out-of-memory crash half way through loading.
//!
//! What it counts (the buffers of [`crate::gpu::Session`] and its model):
//! - **weights**: the model's GPU buffers (Q1_0 repacked to the same size as in the file, f32
//!   norms): [`weight_bytes_of_gguf`] before loading, [`crate::gpu::GpuModel::weight_bytes`] after;
//! - **KV cache**: [`KvCache::layer_bytes`] per layer and per K/V, per token
//!   `2 * n_layer * n_head_kv * row bytes` (f16: `2 * head_dim`; q8_0: `head_dim + 2 * head_dim
//!   / 32`), plus the RoPE table (`n_ctx * n_rot / 2` `vec2<f32>`);
//! - **activations**: `max_batch` rows of x, xb, q, k, v, hb, hb2 and the token ids, plus the
//!   logits and the fused decode's q|k|v and sums of squares of x;
//! - **scratch**: decode attention's per-chunk partials, the sampling kernels' partials and the
//!   read-back buffers.
//!
//! Checks: every buffer that is one storage binding (a layer's K or V, the RoPE table, the
//! decode partials, the widest activation) against `min(max_storage_buffer_binding_size,
//! max_buffer_size)`, and the total against the memory the platform reports available, where it
//! reports one: CPU adapters (lavapipe, WARP) allocate from system RAM, read from
//! `/proc/meminfo` on Linux. wgpu reports no GPU memory size, so on GPUs and in browsers the
//! total is printed but not checked.

use std::fmt;

use crate::cache_type::CacheType;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Gguf};
use crate::gpu::context::GpuContext;
use crate::gpu::kv_cache::{AttnDims, KvCache};
use crate::gpu::ops::attention_decode::decode_chunk;
use crate::gpu::ops::topk::MAX_K;
use crate::gpu::session::{RING, SessionOptions};
use crate::model::config::Qwen3Config;

/// What the device allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Largest single buffer that is bound whole: `min(max_storage_buffer_binding_size,
    /// max_buffer_size)`.
    pub max_binding: u64,
    /// Memory the platform reports available for the device's buffers, if it reports one.
    pub available: Option<u64>,
}

impl MemoryLimits {
    /// The limits of `ctx`'s device.
    pub fn of(ctx: &GpuContext) -> MemoryLimits {
        MemoryLimits {
            max_binding: ctx.max_binding_bytes(),
            available: available_memory(ctx.info.device_type),
        }
    }
}

/// System RAM available now, for CPU adapters whose buffers live there (Linux only).
fn available_memory(device_type: wgpu::DeviceType) -> Option<u64> {
    #[cfg(all(target_os = "linux", not(target_arch = "wasm32")))]
    if device_type == wgpu::DeviceType::Cpu {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        return Some(kib * 1024);
    }
    let _ = device_type;
    None
}

/// The sizes of a session's buffers for one context length and cache type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Context length (KV cache positions).
    pub n_ctx: usize,
    /// How K and V are stored.
    pub cache_type: CacheType,
    /// Tokens per prefill submit (rows of the batched activations).
    pub max_batch: usize,
    /// Model weights on the device.
    pub weights: u64,
    /// K and V of one token over all layers.
    pub kv_per_token: u64,
    /// The whole KV cache: `n_ctx * kv_per_token`.
    pub kv: u64,
    /// The RoPE table.
    pub rope: u64,
    /// Activation buffers.
    pub activations: u64,
    /// Decode partials, sampling partials and read-back buffers.
    pub scratch: u64,
    /// The largest buffer that must fit one storage binding, and what it is.
    pub largest_binding: (u64, &'static str),
    /// Positions per decode attention chunk (sizes the decode partials).
    pub decode_chunk: usize,
}

/// Bytes of the model's weights on the GPU, from the file's tensor table (Q1_0 matrices keep
/// their size when repacked, norms become f32), so the plan can be made before loading.
pub fn weight_bytes_of_gguf(gguf: &Gguf) -> u64 {
    gguf.tensors()
        .iter()
        .map(|t| match t.ggml_type {
            GgmlType::Q1_0 => t.n_bytes,
            _ => t.n_elements() * 4,
        })
        .sum()
}

impl MemoryPlan {
    /// The plan of a session with `opts` of the model `cfg` (weights of `weights` bytes) on
    /// `ctx`'s device.
    pub fn for_device(
        ctx: &GpuContext,
        cfg: &Qwen3Config,
        weights: u64,
        opts: &SessionOptions,
    ) -> MemoryPlan {
        Self::new(
            cfg,
            weights,
            opts.n_ctx,
            opts.max_batch,
            opts.cache_type,
            decode_chunk(ctx),
        )
    }

    /// The plan of a session of the model `cfg` whose weights take `weights` bytes, with decode
    /// attention in chunks of `decode_chunk` positions.
    pub fn new(
        cfg: &Qwen3Config,
        weights: u64,
        n_ctx: usize,
        max_batch: usize,
        cache_type: CacheType,
        decode_chunk: usize,
    ) -> MemoryPlan {
        let dims = AttnDims::from_config(cfg);
        let n_ctx_u = n_ctx as u64;
        let layer_kv = KvCache::layer_bytes(dims, n_ctx, cache_type);
        let kv_per_token = 2 * cfg.n_layer as u64 * KvCache::layer_bytes(dims, 1, cache_type);
        let rope = n_ctx_u * (cfg.rope.n_rot as u64 / 2) * 8;
        let rows = max_batch.clamp(1, n_ctx.max(1)) as u64;
        let widest_row = cfg.n_ff.max(cfg.q_dim()).max(cfg.n_embd) as u64 * 4;
        let row_floats = 1 // token id
            + cfg.n_embd // x
            + cfg.n_embd.max(cfg.q_dim()) // xb
            + cfg.q_dim()
            + 2 * cfg.kv_dim()
            + 2 * cfg.n_ff; // hb, hb2
        let logits = cfg.n_vocab as u64 * 4;
        // x_last, the fused decode's q|k|v and x's sums of squares (one per 4 values).
        let single = cfg.n_embd + cfg.q_dim() + 2 * cfg.kv_dim() + cfg.n_embd.div_ceil(4);
        let activations = rows * row_floats as u64 * 4 + single as u64 * 4 + logits;
        let chunks = n_ctx.div_ceil(decode_chunk).max(1) as u64;
        let part_o = cfg.n_head as u64 * chunks * cfg.head_dim as u64 * 4;
        let part_ml = cfg.n_head as u64 * chunks * 8;
        // top-k's first stage keeps MAX_K (value, id) pairs per 2048 logits; argmax 8 bytes
        let sampling = (cfg.n_vocab as u64).div_ceil(2048) * (MAX_K as u64 * 8 + 8) * 2;
        // logits, top-k and token read-backs; the logits snapshot and token ring of
        // GPU-resident generation (gpu/session/queued.rs)
        let readbacks = 2 * logits + MAX_K as u64 * 8 + 4 + RING as u64 * 4;
        let largest_binding = [
            (layer_kv, "one layer's K or V cache"),
            (rope, "the RoPE table"),
            (part_o, "decode attention partials"),
            (rows * widest_row, "the widest activation"),
            (logits, "the logits"),
        ]
        .into_iter()
        .max_by_key(|&(b, _)| b)
        .unwrap_or((0, "nothing"));
        MemoryPlan {
            n_ctx,
            cache_type,
            max_batch: rows as usize,
            weights,
            kv_per_token,
            kv: n_ctx_u * kv_per_token,
            rope,
            activations,
            scratch: part_o + part_ml + sampling + readbacks,
            largest_binding,
            decode_chunk,
        }
    }

    /// Every byte of the plan.
    pub fn total(&self) -> u64 {
        self.weights + self.kv + self.rope + self.activations + self.scratch
    }

    /// Why this plan does not fit `limits`, as (what, needed, allowed), or `None` when it fits.
    pub fn overflow(&self, limits: &MemoryLimits) -> Option<(&'static str, u64, u64)> {
        let (largest, _) = self.largest_binding;
        if largest > limits.max_binding {
            return Some((
                "max_storage_buffer_binding_size",
                largest,
                limits.max_binding,
            ));
        }
        match limits.available {
            Some(avail) if self.total() > avail => Some(("available memory", self.total(), avail)),
            _ => None,
        }
    }

    /// Checks the plan against `limits`; the error names the buffer or total that overflows,
    /// both numbers and the largest context (up to `n_ctx_max`) that fits with the same options
    /// (0 when not even one token does).
    pub fn check(&self, limits: &MemoryLimits, cfg: &Qwen3Config) -> Result<()> {
        let Some((what, needed, allowed)) = self.overflow(limits) else {
            return Ok(());
        };
        let what = match what {
            "max_storage_buffer_binding_size" => {
                format!(
                    "{} (max_storage_buffer_binding_size)",
                    self.largest_binding.1
                )
            }
            other => format!("the total ({other})"),
        };
        Err(Error::ContextTooLarge {
            n_ctx: self.n_ctx,
            cache_type: self.cache_type,
            what,
            needed,
            allowed,
            max_n_ctx: self.largest_fitting(limits, cfg),
        })
    }

    /// The largest context up to the model's trained length whose plan (same weights, batch,
    /// cache type and chunk) fits `limits`; 0 when none does.
    pub fn largest_fitting(&self, limits: &MemoryLimits, cfg: &Qwen3Config) -> usize {
        let fits = |n: usize| {
            MemoryPlan::new(
                cfg,
                self.weights,
                n,
                self.max_batch,
                self.cache_type,
                self.decode_chunk,
            )
            .overflow(limits)
            .is_none()
        };
        // every buffer grows with n_ctx, so "fits" is monotone: binary search
        let (mut lo, mut hi) = (0usize, cfg.n_ctx_train);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// The plan as one line for logs, with the limits it was checked against.
    pub fn describe(&self, limits: &MemoryLimits) -> String {
        let avail = match limits.available {
            Some(a) => format!("{} available", bytes(a)),
            None => "available memory not reported".into(),
        };
        format!(
            "{self}; largest binding {} ({}) of {} allowed; {avail}",
            bytes(self.largest_binding.0),
            self.largest_binding.1,
            bytes(limits.max_binding)
        )
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory plan: weights {} + KV {} ({} tokens x {} {}) + RoPE {} + activations {} \
             (batch {}) + scratch {} = {}",
            bytes(self.weights),
            bytes(self.kv),
            self.n_ctx,
            bytes(self.kv_per_token),
            self.cache_type,
            bytes(self.rope),
            bytes(self.activations),
            self.max_batch,
            bytes(self.scratch),
            bytes(self.total())
        )
    }
}

/// Bytes in binary units with three significant digits (`1.50 GiB`, `112 KiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    match (u, v) {
        (0, _) => format!("{n} B"),
        (_, v) if v >= 100.0 => format!("{v:.0} {}", UNITS[u]),
        (_, v) if v >= 10.0 => format!("{v:.1} {}", UNITS[u]),
        _ => format!("{v:.2} {}", UNITS[u]),
    }
}
