//! Per-head RMSNorm of q and k, NEOX RoPE (YaRN) and the KV cache write, for a batch of tokens
//! (`shaders/qk_norm_rope.wgsl`).

use crate::Result;
use crate::cpu::ops::rope_neox;
use crate::gpu::buffers::check_binding;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader};
use crate::gpu::kv_cache::{AttnDims, KvCache};
use crate::model::rope::RopeParams;

/// The buffers one layer's kernel binds.
pub struct QkNormRopeBindings<'a> {
    /// `StepParams` uniform: n_tokens, pos.
    pub step: &'a wgpu::Buffer,
    /// Queries: (max_tokens, n_head, head_dim) f32, normalised and rotated in place.
    pub q: &'a wgpu::Buffer,
    /// Keys: (max_tokens, n_head_kv, head_dim) f32, normalised, rotated and written to the cache.
    pub k: &'a wgpu::Buffer,
    /// Values: (max_tokens, n_head_kv, head_dim) f32, copied to the cache.
    pub v: &'a wgpu::Buffer,
    /// attn_q_norm weight: (head_dim) f32.
    pub q_norm: &'a wgpu::Buffer,
    /// attn_k_norm weight: (head_dim) f32.
    pub k_norm: &'a wgpu::Buffer,
    /// RoPE table + this layer's cache.
    pub kv: &'a KvCache,
    /// Layer index into `kv.layers`.
    pub layer: usize,
}

/// Builds the kernel for up to `max_tokens` tokens per step. Rows past `step.n_tokens` exit, so
/// one kernel serves every batch size up to `max_tokens`.
pub fn build(
    ctx: &GpuContext,
    cache: &PipelineCache,
    eps: f32,
    max_tokens: usize,
    b: &QkNormRopeBindings<'_>,
) -> Result<Kernel> {
    let dims = b.kv.dims;
    dims.check()?;
    let layer = b.kv.layer(b.layer)?;
    let t = max_tokens.max(1);
    check_binding(b.q, 4 * t * dims.q_dim(), "qk_norm_rope q")?;
    check_binding(b.k, 4 * t * dims.kv_dim(), "qk_norm_rope k")?;
    check_binding(b.v, 4 * t * dims.kv_dim(), "qk_norm_rope v")?;
    check_binding(b.q_norm, 4 * dims.head_dim, "qk_norm_rope q_norm")?;
    check_binding(b.k_norm, 4 * dims.head_dim, "qk_norm_rope k_norm")?;
    let overrides = [
        ("HEAD_DIM", dims.head_dim as f64),
        ("N_ROT", b.kv.n_rot as f64),
        ("N_HEAD", dims.n_head as f64),
        ("N_HEAD_KV", dims.n_head_kv as f64),
        ("EPS", eps as f64),
    ];
    Kernel::new(
        ctx,
        cache,
        KernelSpec {
            label: format!("qk_norm_rope[{}]", b.layer),
            shader: Shader::QkNormRope,
            entry: "main",
            overrides: &overrides,
            bindings: &[
                b.step.as_entire_binding(),
                b.q.as_entire_binding(),
                b.k.as_entire_binding(),
                b.v.as_entire_binding(),
                b.q_norm.as_entire_binding(),
                b.k_norm.as_entire_binding(),
                b.kv.rope.as_entire_binding(),
                layer.k.as_entire_binding(),
                layer.v.as_entire_binding(),
            ],
            workgroups: [
                (dims.n_head + dims.n_head_kv) as u32,
                max_tokens.max(1) as u32,
                1,
            ],
        },
    )
}

/// CPU reference: normalises and rotates `q` (n_tokens, n_head, head_dim) in place and returns
/// the rotated `k` (n_tokens, n_head_kv, head_dim); token `t` is at position `pos + t`.
#[allow(clippy::too_many_arguments)]
pub fn run_cpu(
    dims: AttnDims,
    rope: &RopeParams,
    eps: f32,
    pos: usize,
    q: &mut [f32],
    k: &[f32],
    q_norm: &[f32],
    k_norm: &[f32],
) -> Vec<f32> {
    let d = dims.head_dim;
    let norm = |x: &mut [f32], w: &[f32]| {
        for head in x.chunks_exact_mut(d) {
            let ss: f32 = head.iter().map(|v| v * v).sum();
            let scale = 1.0 / (ss / d as f32 + eps).sqrt();
            for (v, w) in head.iter_mut().zip(w) {
                *v = *v * scale * w;
            }
        }
    };
    let mut k = k.to_vec();
    let n_tokens = q.len() / dims.q_dim();
    for t in 0..n_tokens {
        let qt = &mut q[t * dims.q_dim()..(t + 1) * dims.q_dim()];
        norm(qt, q_norm);
        rope_neox(qt, d, pos + t, rope);
        let kt = &mut k[t * dims.kv_dim()..(t + 1) * dims.kv_dim()];
        norm(kt, k_norm);
        rope_neox(kt, d, pos + t, rope);
    }
    k
}
