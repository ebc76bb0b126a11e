//! Decode step D1 (`shaders/qkv_rope.wgsl`): `xb = rmsnorm(x) * attn_norm` folded into one
//! matvec over the q|k|v rows, then per head QK-norm, NEOX RoPE (YaRN table) and the KV cache
//! write, in the epilogue of the workgroup that owns the head.

use crate::Error;
use crate::Result;
use crate::gpu::buffers::check_binding;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader};
use crate::gpu::kv_cache::{AttnDims, KvCache};
use crate::gpu::ops::fused::{RowPlan, WG, check_input, single_part};
use crate::gpu::ops::{matvec_q1_0, qk_norm_rope, rmsnorm};
use crate::gpu::q1_0::Q1_0Weight;
use crate::model::rope::RopeParams;

/// The q|k|v weight as one tensor: the rows of `wq`, then `wk`, then `wv` (GGUF Q1_0 bytes, rows
/// are contiguous), so one dispatch covers all three and workgroup `h` owns head `h`.
pub fn fuse_weights(wq: &[u8], wk: &[u8], wv: &[u8]) -> Vec<u8> {
    [wq, wk, wv].concat()
}

/// The three norm weights the kernel reads, in one buffer (WebGPU allows 8 storage buffers per
/// kernel): `attn_norm (n_embd) | attn_q_norm (head_dim) | attn_k_norm (head_dim)`.
pub fn fuse_norms(attn_norm: &[f32], q_norm: &[f32], k_norm: &[f32]) -> Vec<f32> {
    [attn_norm, q_norm, k_norm].concat()
}

/// The buffers one layer's kernel binds.
pub struct QkvRopeBindings<'a> {
    /// `StepParams` uniform: `pos` of the token.
    pub step: &'a wgpu::Buffer,
    /// Residual stream: (n_embd) f32.
    pub x: &'a wgpu::Buffer,
    /// [`fuse_norms`] of the layer: (n_embd + 2 * head_dim) f32.
    pub norms: &'a wgpu::Buffer,
    /// [`fuse_weights`] of the layer: (q_dim + 2 * kv_dim, n_embd).
    pub w: &'a Q1_0Weight,
    /// Queries out, normalised and rotated: (n_head, head_dim) f32.
    pub q: &'a wgpu::Buffer,
    /// RoPE table and the cache written at `step.pos`.
    pub kv: &'a KvCache,
    /// Layer index into `kv.layers`.
    pub layer: usize,
}

/// Builds layer `b.layer`'s kernel; errors name the buffer or shape that does not fit.
pub fn build(
    ctx: &GpuContext,
    cache: &PipelineCache,
    eps: f32,
    b: &QkvRopeBindings<'_>,
) -> Result<Kernel> {
    let dims = b.kv.dims;
    dims.check()?;
    let hd = dims.head_dim;
    // A workgroup owns one head of rows: head_dim / 4 row groups must divide the 256 threads.
    if !(hd / 4).is_power_of_two() || hd / 4 > WG as usize {
        return Err(Error::InvalidArgument(format!(
            "qkv_rope: head_dim {hd} must be 4 times a power of two (fused decode)"
        )));
    }
    let n_heads = dims.n_head + 2 * dims.n_head_kv;
    if b.w.n != n_heads * hd {
        return Err(Error::InvalidArgument(format!(
            "qkv_rope: {} has {} rows, q|k|v needs {}",
            b.w.name,
            b.w.n,
            n_heads * hd
        )));
    }
    let part = single_part(b.w)?;
    let layer = b.kv.layer(b.layer)?;
    check_input(b.w, b.x, "qkv_rope x")?;
    check_binding(b.norms, 4 * (b.w.k + 2 * hd), "qkv_rope norms")?;
    check_binding(b.q, 4 * dims.q_dim(), "qkv_rope q")?;
    // Subgroups when their row count divides a head; else the tree over one head of rows.
    let plan = match RowPlan::new(ctx, b.w.k) {
        p if p.subgroup.is_some() && hd.is_multiple_of(p.rows_per_wg as usize) => p,
        _ => RowPlan {
            subgroup: None,
            rows_per_wg: hd as u32,
        },
    };
    let mut overrides = plan.overrides();
    overrides.extend([
        ("K", b.w.k as f64),
        ("N", b.w.n as f64),
        ("HEAD_DIM", hd as f64),
        ("N_ROT", b.kv.n_rot as f64),
        ("N_HEAD", dims.n_head as f64),
        ("N_HEAD_KV", dims.n_head_kv as f64),
        ("EPS", eps as f64),
    ]);
    Kernel::new(
        ctx,
        cache,
        KernelSpec {
            label: format!("qkv_rope[{}]", b.layer),
            shader: plan.shader(Shader::QkvRope),
            entry: "main",
            overrides: &overrides,
            bindings: &[
                b.step.as_entire_binding(),
                b.x.as_entire_binding(),
                b.norms.as_entire_binding(),
                part.signs.as_entire_binding(),
                part.scales.as_entire_binding(),
                b.kv.rope.as_entire_binding(),
                b.q.as_entire_binding(),
                layer.k.as_entire_binding(),
                layer.v.as_entire_binding(),
            ],
            workgroups: [n_heads as u32, 1, 1],
        },
    )
}

/// CPU reference, composed of the unfused references: returns `(q, k, v)` of the token at `pos`
/// (q and k normalised and rotated) for GGUF Q1_0 weights `wq`, `wk`, `wv` of row length
/// `x.len()`.
#[allow(clippy::too_many_arguments)]
pub fn run_cpu(
    dims: AttnDims,
    rope: &RopeParams,
    eps: f32,
    pos: usize,
    x: &[f32],
    norms: [&[f32]; 3],
    wq: &[u8],
    wk: &[u8],
    wv: &[u8],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [attn_norm, q_norm, k_norm] = norms;
    let n_embd = x.len();
    let mut xb = vec![0.0; n_embd];
    rmsnorm::run_cpu(x, attn_norm, eps, &mut xb);
    let mut q = vec![0.0; dims.q_dim()];
    let mut k = vec![0.0; dims.kv_dim()];
    let mut v = vec![0.0; dims.kv_dim()];
    matvec_q1_0::run_cpu(wq, n_embd, q.len(), &xb, &mut q, false);
    matvec_q1_0::run_cpu(wk, n_embd, k.len(), &xb, &mut k, false);
    matvec_q1_0::run_cpu(wv, n_embd, v.len(), &xb, &mut v, false);
    let k = qk_norm_rope::run_cpu(dims, rope, eps, pos, &mut q, &k, q_norm, k_norm);
    (q, k, v)
}
