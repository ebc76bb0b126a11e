//! Which GGUF tensor becomes which Hugging Face tensor, and what kind of weight it is.

use crate::model::config::Qwen3Config;

/// What a tensor is, which decides how each format stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightKind {
    /// A Q1_0 projection inside a block (q, k, v, o, gate, up, down): AWQ packs it.
    Linear,
    /// `token_embd` or `output` (Q1_0): FP16 in every format, as AWQ checkpoints keep them.
    Embedding,
    /// An RMSNorm weight (F32 in Bonsai files): rounded to f16.
    Norm,
}

/// One tensor of the checkpoint: its GGUF source, its HF name without the `.weight` suffix,
/// and its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMapping {
    /// The GGUF tensor name (`blk.0.attn_q.weight`).
    pub gguf: String,
    /// The HF module path (`model.layers.0.self_attn.q_proj`); the tensor adds `.weight`
    /// (or AWQ's `.qweight`, `.qzeros`, `.scales`).
    pub hf_module: String,
    /// How the tensor is stored.
    pub kind: WeightKind,
}

/// Per block: GGUF suffix, HF module under `model.layers.N`, kind; in HF's module order.
const LAYER_TENSORS: [(&str, &str, WeightKind); 11] = [
    ("attn_norm", "input_layernorm", WeightKind::Norm),
    ("attn_q", "self_attn.q_proj", WeightKind::Linear),
    ("attn_k", "self_attn.k_proj", WeightKind::Linear),
    ("attn_v", "self_attn.v_proj", WeightKind::Linear),
    ("attn_output", "self_attn.o_proj", WeightKind::Linear),
    ("attn_q_norm", "self_attn.q_norm", WeightKind::Norm),
    ("attn_k_norm", "self_attn.k_norm", WeightKind::Norm),
    ("ffn_norm", "post_attention_layernorm", WeightKind::Norm),
    ("ffn_gate", "mlp.gate_proj", WeightKind::Linear),
    ("ffn_up", "mlp.up_proj", WeightKind::Linear),
    ("ffn_down", "mlp.down_proj", WeightKind::Linear),
];

/// Every tensor of a Qwen3 checkpoint in HF order: the embedding, each block, the final norm
/// and, when the head is not tied, `lm_head`. HF (like GGUF) stores a weight as `[out, in]`
/// rows of `in`, so no tensor is transposed; Qwen3's NEOX RoPE is HF's `rotate_half`, so q and
/// k are not permuted either.
pub fn qwen3_tensors(cfg: &Qwen3Config) -> Vec<TensorMapping> {
    let map = |gguf: String, hf_module: String, kind| TensorMapping {
        gguf,
        hf_module,
        kind,
    };
    let mut out = vec![map(
        "token_embd.weight".into(),
        "model.embed_tokens".into(),
        WeightKind::Embedding,
    )];
    for l in 0..cfg.n_layer {
        for (gguf, hf, kind) in LAYER_TENSORS {
            out.push(map(
                format!("blk.{l}.{gguf}.weight"),
                format!("model.layers.{l}.{hf}"),
                kind,
            ));
        }
    }
    out.push(map(
        "output_norm.weight".into(),
        "model.norm".into(),
        WeightKind::Norm,
    ));
    if !cfg.tied_head {
        out.push(map(
            "output.weight".into(),
            "lm_head".into(),
            WeightKind::Embedding,
        ));
    }
    out
}
