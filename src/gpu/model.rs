//! Model weights on the GPU: Q1_0 matrices repacked into sign words + f16 scales (never
//! expanded), norms in f32. Shared by every [`crate::gpu::Session`] of the model.

use std::sync::Arc;

use crate::config::Qwen3Config;
use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::gpu::context::GpuContext;
use crate::gpu::op::{PipelineCache, storage_buffer_init};
use crate::gpu::ops::{ffn_gate_up, qkv_rope};
use crate::gpu::q1_0::Q1_0Weight;
use crate::quant::dequantize_row;

/// One transformer block's weights on the GPU.
pub struct GpuLayer {
    /// RMSNorm weight applied before attention: (n_embd) f32.
    pub attn_norm: wgpu::Buffer,
    /// Query, key and value projections as one weight, rows q | k | v
    /// ([`qkv_rope::fuse_weights`]): (q_dim + 2 * kv_dim, n_embd). Prefill reads each part
    /// through a row view; decode runs all of it in one dispatch.
    pub wqkv: Q1_0Weight,
    /// Per-head RMSNorm weight on queries (Qwen3 QK-norm), shared by all heads: (head_dim) f32.
    pub attn_q_norm: wgpu::Buffer,
    /// Per-head RMSNorm weight on keys (Qwen3 QK-norm), shared by all heads: (head_dim) f32.
    pub attn_k_norm: wgpu::Buffer,
    /// attn_norm | attn_q_norm | attn_k_norm in one binding for the decode kernel
    /// ([`qkv_rope::fuse_norms`]; a copy of the three above, 9 KiB per layer on 1.7B):
    /// (n_embd + 2 * head_dim) f32.
    pub attn_norms: wgpu::Buffer,
    /// Attention output projection: (n_embd, n_head * head_dim).
    pub wo: Q1_0Weight,
    /// RMSNorm weight applied before the feed-forward block: (n_embd) f32.
    pub ffn_norm: wgpu::Buffer,
    /// SwiGLU gate and up projections interleaved in pairs of rows
    /// ([`ffn_gate_up::interleave_weights`]): (2 * n_ff, n_embd).
    pub w_gate_up: Q1_0Weight,
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
        let values = |name: &str| read_f32(gguf, name);
        let upload = |name: &str, v: &[f32]| storage_buffer_init(&ctx, name, v);
        let data = |name: &str| gguf.tensor_data(name);
        let (k, n_ff) = (config.n_embd, config.n_ff);
        let layers = (0..config.n_layer)
            .map(|l| {
                let name = |w: &str| format!("blk.{l}.{w}.weight");
                let attn_norm = values(&name("attn_norm"))?;
                let q_norm = values(&name("attn_q_norm"))?;
                let k_norm = values(&name("attn_k_norm"))?;
                let qkv = qkv_rope::fuse_weights(
                    data(&name("attn_q"))?,
                    data(&name("attn_k"))?,
                    data(&name("attn_v"))?,
                );
                let gate_up = ffn_gate_up::interleave_weights(
                    data(&name("ffn_gate"))?,
                    data(&name("ffn_up"))?,
                    k,
                    n_ff,
                )?;
                let q_rows = config.q_dim() + 2 * config.kv_dim();
                Ok(GpuLayer {
                    attn_norm: upload(&name("attn_norm"), &attn_norm)?,
                    wqkv: Q1_0Weight::upload(&ctx, &name("attn_qkv"), &qkv, k, q_rows)?,
                    attn_norms: upload(
                        &name("attn_norms"),
                        &qkv_rope::fuse_norms(&attn_norm, &q_norm, &k_norm),
                    )?,
                    attn_q_norm: upload(&name("attn_q_norm"), &q_norm)?,
                    attn_k_norm: upload(&name("attn_k_norm"), &k_norm)?,
                    wo: q1(&name("attn_output"))?,
                    ffn_norm: upload(&name("ffn_norm"), &values(&name("ffn_norm"))?)?,
                    w_gate_up: Q1_0Weight::upload(
                        &ctx,
                        &name("ffn_gate_up"),
                        &gate_up,
                        k,
                        2 * n_ff,
                    )?,
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
            output_norm: upload("output_norm.weight", &values("output_norm.weight")?)?,
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
            .flat_map(|l| [&l.wqkv, &l.wo, &l.w_gate_up, &l.w_down])
            .chain(std::iter::once(&self.token_embd))
            .chain(self.output.as_ref())
            .map(Q1_0Weight::gpu_bytes)
            .sum();
        let norms: u64 = self
            .layers
            .iter()
            .flat_map(|l| {
                [
                    &l.attn_norm,
                    &l.attn_q_norm,
                    &l.attn_k_norm,
                    &l.attn_norms,
                    &l.ffn_norm,
                ]
            })
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
    Q1_0Weight::upload(ctx, name, gguf.tensor_data(name)?, k, n)
}

fn read_f32(gguf: &Gguf, name: &str) -> Result<Vec<f32>> {
    let info = gguf
        .tensor_info(name)
        .ok_or_else(|| Error::MissingTensor(name.into()))?;
    let mut values = vec![0.0f32; info.n_elements() as usize];
    dequantize_row(info.ggml_type, gguf.tensor_data(name)?, &mut values)?;
    Ok(values)
}
