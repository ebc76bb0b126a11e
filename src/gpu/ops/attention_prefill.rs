//! Causal GQA attention for a batch of query tokens over the KV cache, flash-attention style
//! (`shaders/attention_prefill.wgsl`), and the naive CPU reference shared with decode.

use crate::Result;
use crate::gpu::buffers::check_binding;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader};
use crate::gpu::kv_cache::{AttnDims, KvCache};

/// (token, head) rows per workgroup; must equal `ROWS` in the shader.
const PREFILL_ROWS: usize = 16;

/// The buffers one layer's prefill attention binds.
pub struct AttentionPrefillBindings<'a> {
    /// `StepParams` uniform: n_tokens, pos (first query position).
    pub step: &'a wgpu::Buffer,
    /// Queries: (max_tokens, n_head, head_dim) f32, normalised and rotated.
    pub q: &'a wgpu::Buffer,
    /// The cache, already holding the batch's own keys and values.
    pub kv: &'a KvCache,
    /// Layer index into `kv.layers`.
    pub layer: usize,
    /// Attention output: (max_tokens, n_head, head_dim) f32.
    pub out: &'a wgpu::Buffer,
}

/// Query tokens per workgroup for this shape.
pub fn tokens_per_workgroup(dims: AttnDims) -> usize {
    (PREFILL_ROWS / dims.group()).max(1)
}

/// Builds the kernel for up to `max_tokens` query tokens; workgroups past `step.n_tokens` exit.
pub fn build(
    ctx: &GpuContext,
    cache: &PipelineCache,
    max_tokens: usize,
    b: &AttentionPrefillBindings<'_>,
) -> Result<Kernel> {
    let dims = b.kv.dims;
    dims.check()?;
    let layer = b.kv.layer(b.layer)?;
    let rows = max_tokens.max(1) * dims.q_dim();
    check_binding(b.q, 4 * rows, "attention_prefill q")?;
    check_binding(b.out, 4 * rows, "attention_prefill out")?;
    Kernel::new(
        ctx,
        cache,
        KernelSpec {
            label: format!("attention_prefill[{}]", b.layer),
            shader: Shader::AttentionPrefill,
            entry: "main",
            overrides: &[
                ("HEAD_DIM", dims.head_dim as f64),
                ("N_HEAD_KV", dims.n_head_kv as f64),
                ("GROUP", dims.group() as f64),
                ("SCALE", dims.scale() as f64),
            ],
            bindings: &[
                b.step.as_entire_binding(),
                b.q.as_entire_binding(),
                layer.k.as_entire_binding(),
                layer.v.as_entire_binding(),
                b.out.as_entire_binding(),
            ],
            workgroups: [
                dims.n_head_kv as u32,
                max_tokens.max(1).div_ceil(tokens_per_workgroup(dims)) as u32,
                1,
            ],
        },
    )
}

/// CPU reference: naive causal softmax attention. `q` is (n_tokens, n_head, head_dim) for tokens at
/// positions `pos..pos + n_tokens`; `k`, `v` are (>= pos + n_tokens, n_head_kv, head_dim). Query
/// head `h` uses kv head `h / (n_head / n_head_kv)`. Returns (n_tokens, n_head, head_dim).
pub fn run_cpu(dims: AttnDims, q: &[f32], k: &[f32], v: &[f32], pos: usize) -> Vec<f32> {
    let d = dims.head_dim;
    let n_tokens = q.len() / dims.q_dim();
    let mut out = vec![0.0f32; q.len()];
    let mut att = Vec::new();
    for t in 0..n_tokens {
        let n_kv = pos + t + 1;
        for h in 0..dims.n_head {
            let kvh = h / dims.group();
            let qh = &q[(t * dims.n_head + h) * d..][..d];
            att.clear();
            for p in 0..n_kv {
                let kp = &k[(p * dims.n_head_kv + kvh) * d..][..d];
                let s: f32 = qh.iter().zip(kp).map(|(a, b)| a * b).sum();
                att.push(s * dims.scale());
            }
            let max = att.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for a in att.iter_mut() {
                *a = (*a - max).exp();
                sum += *a;
            }
            let oh = &mut out[(t * dims.n_head + h) * d..][..d];
            for (p, a) in att.iter().enumerate() {
                let vp = &v[(p * dims.n_head_kv + kvh) * d..][..d];
                for (o, x) in oh.iter_mut().zip(vp) {
                    *o += a / sum * x;
                }
            }
        }
    }
    out
}
