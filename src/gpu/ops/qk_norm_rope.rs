//! Per-head RMSNorm of q and k, NEOX RoPE (YaRN) and the KV cache write, for a batch of tokens
//! (`shaders/qk_norm_rope.wgsl`). CPU reference: [`crate::cpu::ops::qk_norm_rope`].

use crate::Result;
use crate::gpu::buffers::{StepParams, check_binding};
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, Op, PipelineCache, Shader};
use crate::gpu::kv_cache::KvCache;

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
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Tokens it is built for (the step's `n_tokens` are processed, at most these).
    pub max_tokens: usize,
}

/// One layer's QK-norm + RoPE + cache write, one workgroup per (head, token).
#[derive(Clone, Debug)]
pub struct QkNormRope {
    /// The dispatch, sized for `max_tokens` tokens.
    pub kernel: Kernel,
}

impl QkNormRope {
    /// Builds the kernel for up to `max_tokens` tokens per step. Rows past `step.n_tokens` exit, so
    /// one kernel serves every batch size up to `max_tokens`, decode included.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        b: &QkNormRopeBindings<'_>,
    ) -> Result<QkNormRope> {
        let (eps, max_tokens) = (b.eps, b.max_tokens);
        let dims = b.kv.dims;
        dims.check()?;
        let layer = b.kv.layer(b.layer)?;
        let t = max_tokens.max(1);
        check_binding(b.q, 4 * t * dims.q_dim(), "qk_norm_rope q")?;
        check_binding(b.k, 4 * t * dims.kv_dim(), "qk_norm_rope k")?;
        check_binding(b.v, 4 * t * dims.kv_dim(), "qk_norm_rope v")?;
        check_binding(b.q_norm, 4 * dims.head_dim, "qk_norm_rope q_norm")?;
        check_binding(b.k_norm, 4 * dims.head_dim, "qk_norm_rope k_norm")?;
        let [kv_q8, scale_base] = b.kv.overrides();
        let overrides = [
            ("HEAD_DIM", dims.head_dim as f64),
            ("N_ROT", b.kv.n_rot as f64),
            ("N_HEAD", dims.n_head as f64),
            ("N_HEAD_KV", dims.n_head_kv as f64),
            ("EPS", eps as f64),
            kv_q8,
            scale_base,
        ];
        let kernel = Kernel::new(
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
        )?;
        Ok(QkNormRope { kernel })
    }
}

/// The step's `n_tokens` tokens (at most the built count).
impl Op for QkNormRope {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        let [heads, max_tokens, _] = self.kernel.workgroups;
        self.kernel
            .dispatch_groups(pass, [heads, step.n_tokens.min(max_tokens), 1]);
    }
}
