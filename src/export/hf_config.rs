//! `config.json` and `generation_config.json` of a `Qwen3ForCausalLM` checkpoint.

use serde_json::{Value, json};

use super::ExportFormat;
use super::awq::AWQ_GROUP_SIZE;
use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::model::config::{ARCHITECTURE, Qwen3Config};
use crate::text::tokenizer::Tokenizer;

/// The transformers release that introduced Qwen3 (written as `transformers_version`).
pub const TRANSFORMERS_VERSION: &str = "4.51.0";
/// Qwen3's recommended sampling (its `generation_config.json`, thinking mode).
const QWEN3_TEMPERATURE: f32 = 0.6;
const QWEN3_TOP_K: u32 = 20;
const QWEN3_TOP_P: f32 = 0.95;
/// The token that ends a document in Qwen's vocabulary: a second end of generation.
const END_OF_TEXT: &str = "<|endoftext|>";

/// An f32 as the shortest decimal that reads back as it (`1e-6`, not `9.99999997e-7`).
fn f32_json(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn bad_key(key: &str, reason: String) -> Error {
    Error::BadKey {
        key: key.to_string(),
        reason,
    }
}

/// HF's `rope_scaling`: null, linear, or YaRN with its factor and original context, read from
/// the GGUF keys. llama.cpp's YaRN with `attn_factor` 1 and `ext_factor` 1 is HF's YaRN with
/// defaults (attention factor `0.1 ln(factor) + 1`, ramp between `beta_fast` and `beta_slow`);
/// other values have no portable HF spelling and are refused.
fn rope_scaling(gguf: &Gguf, cfg: &Qwen3Config) -> Result<Value> {
    let key = |name: &str| format!("{ARCHITECTURE}.rope.scaling.{name}");
    let scaling = match gguf.get(&key("type")) {
        Some(_) => gguf.get_str(&key("type"))?,
        None => "none",
    };
    let factor = || -> Result<f32> {
        match gguf.get(&key("factor")) {
            Some(_) => gguf.get_f32(&key("factor")),
            None => Ok(1.0),
        }
    };
    let rope = &cfg.rope;
    Ok(match scaling {
        "none" => Value::Null,
        "linear" => json!({ "rope_type": "linear", "factor": f32_json(factor()?) }),
        "yarn" => {
            if rope.attn_factor != 1.0 {
                return Err(bad_key(
                    &key("attn_factor"),
                    format!("{} has no portable HF spelling (1 has)", rope.attn_factor),
                ));
            }
            if rope.ext_factor != 1.0 {
                return Err(bad_key(
                    &key("yarn_ext_factor"),
                    format!("{} has no HF spelling (1 has)", rope.ext_factor),
                ));
            }
            json!({
                "rope_type": "yarn",
                "factor": f32_json(factor()?),
                "original_max_position_embeddings": rope.n_ctx_orig,
                "beta_fast": f32_json(rope.beta_fast),
                "beta_slow": f32_json(rope.beta_slow),
            })
        }
        other => return Err(bad_key(&key("type"), format!("unsupported `{other}`"))),
    })
}

/// `config.json` for `Qwen3ForCausalLM` in float16, with AWQ's `quantization_config` for
/// [`ExportFormat::Awq`].
pub fn config_json(
    gguf: &Gguf,
    cfg: &Qwen3Config,
    tokenizer: &Tokenizer,
    format: ExportFormat,
) -> Result<Value> {
    let mut config = json!({
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": tokenizer.bos_id(),
        "eos_token_id": tokenizer.eos_id(),
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "hidden_size": cfg.n_embd,
        "initializer_range": 0.02,
        "intermediate_size": cfg.n_ff,
        "max_position_embeddings": cfg.n_ctx_train,
        "max_window_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_hidden_layers": cfg.n_layer,
        "num_key_value_heads": cfg.n_head_kv,
        "rms_norm_eps": f32_json(cfg.rms_eps),
        "rope_scaling": rope_scaling(gguf, cfg)?,
        "rope_theta": f32_json(cfg.rope.freq_base),
        "sliding_window": null,
        "tie_word_embeddings": cfg.tied_head,
        "torch_dtype": "float16",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": true,
        "use_sliding_window": false,
        "vocab_size": cfg.n_vocab,
    });
    if format == ExportFormat::Awq {
        config["quantization_config"] = json!({
            "quant_method": "awq",
            "bits": 4,
            "group_size": AWQ_GROUP_SIZE,
            "zero_point": true,
            "version": "gemm",
            "modules_to_not_convert": null,
        });
    }
    Ok(config)
}

/// `generation_config.json`: Qwen3's sampling defaults; generation ends at the GGUF's eos and
/// at `<|endoftext|>` (`[151645, 151643]` for Qwen3).
pub fn generation_config_json(tokenizer: &Tokenizer) -> Value {
    let mut eos = vec![tokenizer.eos_id()];
    if let Some(id) = tokenizer.token_id(END_OF_TEXT).filter(|&id| id != eos[0]) {
        eos.push(id);
    }
    json!({
        "bos_token_id": tokenizer.bos_id(),
        "do_sample": true,
        "eos_token_id": eos,
        "pad_token_id": tokenizer.pad_id(),
        "temperature": f32_json(QWEN3_TEMPERATURE),
        "top_k": QWEN3_TOP_K,
        "top_p": f32_json(QWEN3_TOP_P),
        "transformers_version": TRANSFORMERS_VERSION,
    })
}
