//! Qwen3 hyperparameters read from GGUF metadata, and the tensor table checked against them.

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Gguf};
use crate::model::rope::{DEFAULT_BETA_FAST, DEFAULT_BETA_SLOW, DEFAULT_FREQ_BASE, RopeParams};
use crate::model::weights::tensor_table;

/// The only architecture this crate runs.
pub const ARCHITECTURE: &str = "qwen3";

/// Shape and numeric parameters of a Qwen3 model, all read from the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Qwen3Config {
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Hidden width of the SwiGLU feed-forward network.
    pub n_ff: usize,
    /// Number of query heads.
    pub n_head: usize,
    /// Number of key/value heads (GQA: `n_head % n_head_kv == 0`).
    pub n_head_kv: usize,
    /// Width of one attention head (`attention.key_length`).
    pub head_dim: usize,
    /// Vocabulary size (rows of `token_embd.weight`).
    pub n_vocab: usize,
    /// Context length the model was trained for (`context_length`).
    pub n_ctx_train: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Rotary embedding parameters, YaRN included.
    pub rope: RopeParams,
    /// True when the LM head reuses `token_embd.weight` (no `output.weight` in the file).
    pub tied_head: bool,
}

impl Qwen3Config {
    /// Reads the hyperparameters from `qwen3.*` metadata keys.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch = g.get_str("general.architecture")?;
        if arch != ARCHITECTURE {
            return Err(Error::UnsupportedArchitecture(arch.to_string()));
        }
        let key = |name: &str| format!("{ARCHITECTURE}.{name}");
        let usize_key = |name: &str| -> Result<usize> { Ok(g.get_u32(&key(name))? as usize) };

        let n_embd = usize_key("embedding_length")?;
        let n_head = usize_key("attention.head_count")?;
        let n_head_kv = match g.get(&key("attention.head_count_kv")) {
            Some(_) => usize_key("attention.head_count_kv")?,
            None => n_head,
        };
        let head_dim = match g.get(&key("attention.key_length")) {
            Some(_) => usize_key("attention.key_length")?,
            None if n_head > 0 => n_embd / n_head,
            None => 0,
        };
        if let Some(v) = g.get(&key("attention.value_length")) {
            if v.as_u64() != Some(head_dim as u64) {
                return Err(bad_key(
                    &key("attention.value_length"),
                    format!("must equal key_length {head_dim}"),
                ));
            }
        }
        let n_vocab = match g.tensor_info("token_embd.weight") {
            Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
            Some(_) => {
                return Err(Error::BadTensor {
                    name: "token_embd.weight".into(),
                    reason: "must be 2-D".into(),
                });
            }
            None => return Err(Error::MissingTensor("token_embd.weight".into())),
        };
        let cfg = Qwen3Config {
            n_layer: usize_key("block_count")?,
            n_embd,
            n_ff: usize_key("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            n_vocab,
            n_ctx_train: usize_key("context_length")?,
            rms_eps: g.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope: rope_params_from_gguf(g, head_dim)?,
            tied_head: g.tensor_info("output.weight").is_none(),
        };
        cfg.check_hyperparameters()?;
        Ok(cfg)
    }

    /// Width of all query heads together (`n_head * head_dim`; differs from n_embd in 4B/8B).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Query heads that share one key/value head.
    pub fn gqa_group(&self) -> usize {
        self.n_head / self.n_head_kv
    }

    fn check_hyperparameters(&self) -> Result<()> {
        let k = |name: &str| format!("{ARCHITECTURE}.{name}");
        let positive = [
            (self.n_layer, "block_count"),
            (self.n_embd, "embedding_length"),
            (self.n_ff, "feed_forward_length"),
            (self.n_head, "attention.head_count"),
            (self.n_head_kv, "attention.head_count_kv"),
            (self.head_dim, "attention.key_length"),
            (self.n_ctx_train, "context_length"),
        ];
        for (value, name) in positive {
            if value == 0 {
                return Err(bad_key(&k(name), "must be positive".into()));
            }
        }
        if self.n_layer > 1024 || self.n_embd > 1 << 16 || self.n_ff > 1 << 18 {
            return Err(bad_key(
                &k("block_count"),
                "model dimensions are implausibly large".into(),
            ));
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return Err(bad_key(
                &k("attention.head_count_kv"),
                format!(
                    "{} query heads are not a multiple of {} kv heads",
                    self.n_head, self.n_head_kv
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim > 1024 {
            return Err(bad_key(
                &k("attention.key_length"),
                format!("{} must be even and <= 1024", self.head_dim),
            ));
        }
        if !(self.rms_eps > 0.0 && self.rms_eps < 1.0) {
            return Err(bad_key(
                &k("attention.layer_norm_rms_epsilon"),
                format!("{} out of range", self.rms_eps),
            ));
        }
        Ok(())
    }

    /// Checks that every tensor the forward pass reads ([`tensor_table`]) is present with the
    /// expected type and shape.
    pub fn validate_tensors(&self, g: &Gguf) -> Result<()> {
        for t in tensor_table(self) {
            check_tensor(g, &t.name, &t.dims, t.role.types())?;
        }
        Ok(())
    }
}

fn bad_key(key: &str, reason: String) -> Error {
    Error::BadKey {
        key: key.to_string(),
        reason,
    }
}

fn check_tensor(g: &Gguf, name: &str, dims: &[usize], types: &[GgmlType]) -> Result<()> {
    let info = g
        .tensor_info(name)
        .ok_or_else(|| Error::MissingTensor(name.to_string()))?;
    let got: Vec<usize> = info.dims.iter().map(|&x| x as usize).collect();
    if got != dims {
        return Err(Error::BadTensor {
            name: name.to_string(),
            reason: format!("shape {got:?}, expected {dims:?} (ne0 first)"),
        });
    }
    if !types.contains(&info.ggml_type) {
        return Err(Error::BadTensor {
            name: name.to_string(),
            reason: format!("type {:?}, expected one of {types:?}", info.ggml_type),
        });
    }
    Ok(())
}

/// Reads rotary parameters, YaRN included, the way llama.cpp's qwen3 loader does.
fn rope_params_from_gguf(g: &Gguf, head_dim: usize) -> Result<RopeParams> {
    let k = |name: &str| format!("{ARCHITECTURE}.{name}");
    let f32_or = |name: &str, default: f32| -> Result<f32> {
        match g.get(&k(name)) {
            Some(_) => g.get_f32(&k(name)),
            None => Ok(default),
        }
    };
    let freq_base = f32_or("rope.freq_base", DEFAULT_FREQ_BASE)?;
    let n_ctx_train = g.get_u32(&k("context_length"))? as usize;
    let scaling = match g.get(&k("rope.scaling.type")) {
        Some(_) => g.get_str(&k("rope.scaling.type"))?,
        None => "none",
    };
    let (freq_scale, ext_factor) = match scaling {
        "none" => (1.0, 0.0),
        "linear" => (1.0 / f32_or("rope.scaling.factor", 1.0)?, 0.0),
        "yarn" => {
            let factor = f32_or("rope.scaling.factor", 1.0)?;
            if !(factor >= 1.0 && factor.is_finite()) {
                return Err(bad_key(
                    &k("rope.scaling.factor"),
                    format!("{factor} must be >= 1"),
                ));
            }
            // llama.cpp: yarn_ext_factor defaults to 1 when the scaling type is yarn.
            (1.0 / factor, f32_or("rope.scaling.yarn_ext_factor", 1.0)?)
        }
        other => {
            return Err(bad_key(
                &k("rope.scaling.type"),
                format!("unsupported rope scaling `{other}`"),
            ));
        }
    };
    let n_ctx_orig = match g.get(&k("rope.scaling.original_context_length")) {
        Some(_) => g.get_u32(&k("rope.scaling.original_context_length"))? as usize,
        None => n_ctx_train,
    };
    if !(freq_base > 1.0 && freq_base.is_finite()) {
        return Err(bad_key(
            &k("rope.freq_base"),
            format!("{freq_base} out of range"),
        ));
    }
    Ok(RopeParams {
        n_rot: head_dim,
        freq_base,
        freq_scale,
        ext_factor,
        attn_factor: f32_or("rope.scaling.attn_factor", 1.0)?,
        beta_fast: f32_or("rope.scaling.yarn_beta_fast", DEFAULT_BETA_FAST)?,
        beta_slow: f32_or("rope.scaling.yarn_beta_slow", DEFAULT_BETA_SLOW)?,
        n_ctx_orig,
    })
}
