//! Causal GQA attention for a batch of query tokens over the KV cache, flash-attention style
//! (`shaders/attention_prefill.wgsl`). CPU reference: [`crate::cpu::ops::attention`] per token.

use crate::Result;
use crate::gpu::buffers::{StepParams, check_binding};
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, Op, PipelineCache, Shader};
use crate::gpu::kv_cache::{AttnDims, KvCache};

/// (token, head) rows per workgroup; must equal `ROWS` in the shader.
const PREFILL_ROWS: usize = 32;

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
    /// Query tokens it is built for (workgroups past `step.n_tokens` exit).
    pub max_tokens: usize,
}

/// One layer's prefill attention: a workgroup per (kv head, tile of query tokens).
#[derive(Clone, Debug)]
pub struct AttentionPrefill {
    /// The dispatch, sized for `max_tokens` tokens.
    pub kernel: Kernel,
    /// Query tokens per workgroup (the y dimension of the dispatch).
    pub tokens_per_workgroup: u32,
}

/// Query tokens per workgroup for this shape.
pub fn tokens_per_workgroup(dims: AttnDims) -> usize {
    (PREFILL_ROWS / dims.group()).max(1)
}

impl AttentionPrefill {
    /// Builds the kernel for up to `max_tokens` query tokens.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        b: &AttentionPrefillBindings<'_>,
    ) -> Result<AttentionPrefill> {
        let max_tokens = b.max_tokens;
        let dims = b.kv.dims;
        dims.check()?;
        let layer = b.kv.layer(b.layer)?;
        let rows = max_tokens.max(1) * dims.q_dim();
        check_binding(b.q, 4 * rows, "attention_prefill q")?;
        check_binding(b.out, 4 * rows, "attention_prefill out")?;
        let [kv_q8, scale_base] = b.kv.overrides();
        let kernel = Kernel::new(
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
                    kv_q8,
                    scale_base,
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
        )?;
        Ok(AttentionPrefill {
            kernel,
            tokens_per_workgroup: tokens_per_workgroup(dims) as u32,
        })
    }
}

/// Only the tiles of query tokens the step's `n_tokens` need.
impl Op for AttentionPrefill {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        let [kv_heads, max_tiles, _] = self.kernel.workgroups;
        let tiles = step.n_tokens.div_ceil(self.tokens_per_workgroup);
        self.kernel
            .dispatch_groups(pass, [kv_heads, tiles.min(max_tiles), 1]);
    }
}
