//! Weights of the CPU reference, read from GGUF: Q1_0 / Q2_0 matrices kept quantized (F32 /
//! F16 / BF16 ones as stored), norms in f32.

use std::sync::Arc;

use crate::config::Qwen3Config;
use crate::cpu::math::Q1Matrix;
use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::quant::{dequantize_row, is_matrix_type};

/// Weights of one transformer block.
#[derive(Clone)]
pub struct LayerWeights {
    /// RMSNorm weight applied before attention: (n_embd).
    pub attn_norm: Vec<f32>,
    /// Query projection: (n_head * head_dim, n_embd).
    pub wq: Q1Matrix,
    /// Key projection: (n_head_kv * head_dim, n_embd).
    pub wk: Q1Matrix,
    /// Value projection: (n_head_kv * head_dim, n_embd).
    pub wv: Q1Matrix,
    /// Per-head RMSNorm weight on queries (Qwen3 QK-norm), shared by all heads: (head_dim).
    pub attn_q_norm: Vec<f32>,
    /// Per-head RMSNorm weight on keys (Qwen3 QK-norm), shared by all heads: (head_dim).
    pub attn_k_norm: Vec<f32>,
    /// Attention output projection: (n_embd, n_head * head_dim).
    pub wo: Q1Matrix,
    /// RMSNorm weight applied before the feed-forward block: (n_embd).
    pub ffn_norm: Vec<f32>,
    /// SwiGLU gate projection: (n_ff, n_embd).
    pub w_gate: Q1Matrix,
    /// SwiGLU up projection: (n_ff, n_embd).
    pub w_up: Q1Matrix,
    /// SwiGLU down projection: (n_embd, n_ff).
    pub w_down: Q1Matrix,
}

/// A Qwen3 model for the CPU reference forward pass.
#[derive(Clone)]
pub struct CpuModel {
    /// Hyperparameters read from the GGUF metadata.
    pub config: Qwen3Config,
    /// Token embedding table, one row per token: (n_vocab, n_embd).
    pub token_embd: Q1Matrix,
    /// The transformer blocks, in order (`config.n_layer` of them).
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm weight: (n_embd).
    pub output_norm: Vec<f32>,
    /// LM head projecting to logits: (n_vocab, n_embd); None when tied to token_embd.
    pub output: Option<Q1Matrix>,
}

impl CpuModel {
    /// Reads the config and every weight from `gguf`, checking types and shapes first.
    pub fn from_gguf(gguf: &Gguf) -> Result<Arc<CpuModel>> {
        let config = Qwen3Config::from_gguf(gguf)?;
        config.validate_tensors(gguf)?;
        let layers = (0..config.n_layer)
            .map(|l| {
                let name = |w: &str| format!("blk.{l}.{w}.weight");
                Ok(LayerWeights {
                    attn_norm: f32_vector(gguf, &name("attn_norm"))?,
                    wq: q1_matrix(gguf, &name("attn_q"))?,
                    wk: q1_matrix(gguf, &name("attn_k"))?,
                    wv: q1_matrix(gguf, &name("attn_v"))?,
                    attn_q_norm: f32_vector(gguf, &name("attn_q_norm"))?,
                    attn_k_norm: f32_vector(gguf, &name("attn_k_norm"))?,
                    wo: q1_matrix(gguf, &name("attn_output"))?,
                    ffn_norm: f32_vector(gguf, &name("ffn_norm"))?,
                    w_gate: q1_matrix(gguf, &name("ffn_gate"))?,
                    w_up: q1_matrix(gguf, &name("ffn_up"))?,
                    w_down: q1_matrix(gguf, &name("ffn_down"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let output = match config.tied_head {
            true => None,
            false => Some(q1_matrix(gguf, "output.weight")?),
        };
        Ok(Arc::new(CpuModel {
            token_embd: q1_matrix(gguf, "token_embd.weight")?,
            output_norm: f32_vector(gguf, "output_norm.weight")?,
            layers,
            output,
            config,
        }))
    }

    /// The LM head: `output.weight`, or `token_embd.weight` when tied.
    pub fn head(&self) -> &Q1Matrix {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }
}

fn q1_matrix(gguf: &Gguf, name: &str) -> Result<Q1Matrix> {
    let info = gguf
        .tensor_info(name)
        .ok_or_else(|| Error::MissingTensor(name.into()))?;
    if !is_matrix_type(info.ggml_type) || info.dims.len() != 2 {
        return Err(Error::BadTensor {
            name: name.into(),
            reason: format!(
                "expected a 2-D matrix, got {} {:?}",
                info.ggml_type, info.dims
            ),
        });
    }
    Ok(Q1Matrix {
        ty: info.ggml_type,
        data: gguf.tensor_data(name)?.to_vec(),
        k: info.dims[0] as usize,
        n: info.dims[1] as usize,
    })
}

fn f32_vector(gguf: &Gguf, name: &str) -> Result<Vec<f32>> {
    let info = gguf
        .tensor_info(name)
        .ok_or_else(|| Error::MissingTensor(name.into()))?;
    let mut out = vec![0.0; info.n_elements() as usize];
    dequantize_row(info.ggml_type, gguf.tensor_data(name)?, &mut out)?;
    Ok(out)
}
