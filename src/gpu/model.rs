//! Model weights on the GPU: Q1_0 / Q2_0 matrices repacked into code words + f16 scales (never
//! expanded), F32 / F16 / BF16 matrices (mixed-type files) as f32 rows, norms in f32. Each
//! tensor's own type decides. Shared by every [`crate::gpu::Session`] of the model.

use std::sync::Arc;

use crate::config::Qwen3Config;
use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::gpu::context::GpuContext;
use crate::gpu::op::{PipelineCache, storage_buffer_init};
use crate::gpu::q1_0::Q1_0Weight;
use crate::quant::dequantize_row;

/// One transformer block's weights on the GPU.
pub struct GpuLayer {
    /// RMSNorm weight applied before attention: (n_embd) f32.
    pub attn_norm: wgpu::Buffer,
    /// Query projection: (n_head * head_dim, n_embd).
    pub wq: Q1_0Weight,
    /// Key projection: (n_head_kv * head_dim, n_embd).
    pub wk: Q1_0Weight,
    /// Value projection: (n_head_kv * head_dim, n_embd).
    pub wv: Q1_0Weight,
    /// Per-head RMSNorm weight on queries (Qwen3 QK-norm), shared by all heads: (head_dim) f32.
    pub attn_q_norm: wgpu::Buffer,
    /// Per-head RMSNorm weight on keys (Qwen3 QK-norm), shared by all heads: (head_dim) f32.
    pub attn_k_norm: wgpu::Buffer,
    /// Attention output projection: (n_embd, n_head * head_dim).
    pub wo: Q1_0Weight,
    /// RMSNorm weight applied before the feed-forward block: (n_embd) f32.
    pub ffn_norm: wgpu::Buffer,
    /// SwiGLU gate projection: (n_ff, n_embd).
    pub w_gate: Q1_0Weight,
    /// SwiGLU up projection: (n_ff, n_embd).
    pub w_up: Q1_0Weight,
    /// SwiGLU down projection: (n_embd, n_ff).
    pub w_down: Q1_0Weight,
}

/// A Qwen3 model loaded onto a GPU.
pub struct GpuModel {
    /// The device the weights live on.
    pub ctx: Arc<GpuContext>,
    /// Hyperparameters read from the GGUF metadata.
    pub config: Qwen3Config,
    /// Compiled compute pipelines, shared by every session of this model.
    pub pipelines: PipelineCache,
    /// Token embedding table, one row per token: (n_vocab, n_embd).
    pub token_embd: Q1_0Weight,
    /// The transformer blocks, in order (`config.n_layer` of them).
    pub layers: Vec<GpuLayer>,
    /// Final RMSNorm weight: (n_embd) f32.
    pub output_norm: wgpu::Buffer,
    /// LM head projecting to logits: (n_vocab, n_embd); None when tied to token_embd.
    pub output: Option<Q1_0Weight>,
}

impl GpuModel {
    /// Checks the file against the Qwen3 layout and uploads every weight. Weight memory on the
    /// GPU equals the Q1_0 bytes in the file (plus f32 norms).
    // On wasm32 wgpu's handles are neither Send nor Sync (one JavaScript thread); the Arc only
    // shares ownership between sessions there.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    pub fn load(ctx: Arc<GpuContext>, gguf: &Gguf) -> Result<Arc<GpuModel>> {
        let config = Qwen3Config::from_gguf(gguf)?;
        config.validate_tensors(gguf)?;
        let q1 = |name: &str| upload_q1_0(&ctx, gguf, name);
        let norm = |name: &str| upload_f32(&ctx, gguf, name);
        let layers = (0..config.n_layer)
            .map(|l| {
                let name = |w: &str| format!("blk.{l}.{w}.weight");
                Ok(GpuLayer {
                    attn_norm: norm(&name("attn_norm"))?,
                    wq: q1(&name("attn_q"))?,
                    wk: q1(&name("attn_k"))?,
                    wv: q1(&name("attn_v"))?,
                    attn_q_norm: norm(&name("attn_q_norm"))?,
                    attn_k_norm: norm(&name("attn_k_norm"))?,
                    wo: q1(&name("attn_output"))?,
                    ffn_norm: norm(&name("ffn_norm"))?,
                    w_gate: q1(&name("ffn_gate"))?,
                    w_up: q1(&name("ffn_up"))?,
                    w_down: q1(&name("ffn_down"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let output = match config.tied_head {
            true => None,
            false => Some(q1("output.weight")?),
        };
        let model = GpuModel {
            token_embd: q1("token_embd.weight")?,
            output_norm: norm("output_norm.weight")?,
            layers,
            output,
            config,
            pipelines: PipelineCache::new(),
            ctx,
        };
        model.ctx.take_error()?;
        Ok(Arc::new(model))
    }

    /// The LM head: `output.weight`, or `token_embd.weight` when tied.
    pub fn head(&self) -> &Q1_0Weight {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        let q1: u64 = self
            .layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down])
            .chain(std::iter::once(&self.token_embd))
            .chain(self.output.as_ref())
            .map(Q1_0Weight::gpu_bytes)
            .sum();
        let norms: u64 = self
            .layers
            .iter()
            .flat_map(|l| [&l.attn_norm, &l.attn_q_norm, &l.attn_k_norm, &l.ffn_norm])
            .chain(std::iter::once(&self.output_norm))
            .map(wgpu::Buffer::size)
            .sum();
        q1 + norms
    }
}

fn upload_q1_0(ctx: &GpuContext, gguf: &Gguf, name: &str) -> Result<Q1_0Weight> {
    let info = gguf
        .tensor_info(name)
        .ok_or_else(|| Error::MissingTensor(name.into()))?;
    let (k, n) = (info.dims[0] as usize, info.dims[1] as usize);
    let bytes = gguf.tensor_data(name)?;
    Q1_0Weight::upload_as(
        ctx,
        info.ggml_type,
        name,
        bytes,
        k,
        n,
        ctx.max_binding_bytes(),
    )
}

fn upload_f32(ctx: &GpuContext, gguf: &Gguf, name: &str) -> Result<wgpu::Buffer> {
    let info = gguf
        .tensor_info(name)
        .ok_or_else(|| Error::MissingTensor(name.into()))?;
    let mut values = vec![0.0f32; info.n_elements() as usize];
    dequantize_row(info.ggml_type, gguf.tensor_data(name)?, &mut values)?;
    storage_buffer_init(ctx, name, &values)
}
