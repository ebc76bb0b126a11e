//! Export a Bonsai GGUF as a Hugging Face checkpoint that transformers, vLLM and sglang load
//! unchanged (native only): `config.json`, `generation_config.json`, `tokenizer.json`,
//! `tokenizer_config.json` (with the chat template) and safetensors weights, in one of two
//! exact formats ([`ExportFormat`]):
//!
//! - `hf-fp16`: every weight as float16. A Q1_0 weight is `±d` with `d` an f16, so f16 holds
//!   it exactly (bfloat16 would round `d`: that is why the checkpoint is float16). Norm
//!   weights (F32 in the GGUF) are rounded to f16; [`ExportReport`] gives the largest change.
//! - `awq`: every projection inside the blocks as AWQ int4 with group size 128 ([`awq`]),
//!   exact as well; embeddings, `lm_head` and norms as in `hf-fp16`.
//!
//! Everything that cannot be exported exactly (a weight type other than Q1_0, a tensor outside
//! the Qwen3 layout, a shape AWQ cannot pack, a RoPE setting HF cannot spell) is refused before
//! any file is written, naming the tensor or key. Weights are written one tensor at a time from
//! the memory-mapped GGUF, so the largest tensor is the most the export holds in memory.

pub mod awq;
pub mod hf_config;
pub mod names;
mod shards;
pub mod tensors;
pub mod tokenizer_json;

use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use shards::{INDEX_FILE, SINGLE_FILE};

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::model::config::Qwen3Config;
use crate::text::tokenizer::Tokenizer;

/// Largest shard written by default: 5 GB, as `transformers`' `save_pretrained`. A checkpoint
/// above it is split into `model-0000i-of-0000n.safetensors` with an index.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// The weight format of an exported checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// `hf-fp16`: every tensor float16 (the "unpacked" checkpoint).
    HfFp16,
    /// `awq`: block projections AWQ int4 (group 128, zero 8, GEMM layout), the rest float16.
    Awq,
}

impl FromStr for ExportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "hf-fp16" => Ok(ExportFormat::HfFp16),
            "awq" => Ok(ExportFormat::Awq),
            other => Err(Error::InvalidArgument(format!(
                "unknown export format `{other}` (hf-fp16 or awq)"
            ))),
        }
    }
}

/// How to export.
#[derive(Clone, Copy, Debug)]
pub struct ExportOptions {
    /// The weight format.
    pub format: ExportFormat,
    /// Largest safetensors file; more weights than this are sharded with an index.
    pub max_shard_bytes: u64,
}

impl ExportOptions {
    /// `format` with the default shard size.
    pub fn new(format: ExportFormat) -> Self {
        ExportOptions {
            format,
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
        }
    }
}

/// Where the weight writing is, reported after each tensor.
#[derive(Clone, Copy, Debug)]
pub struct ExportProgress<'a> {
    /// The HF name of the tensor just written.
    pub tensor: &'a str,
    /// Weight bytes written so far.
    pub done_bytes: u64,
    /// Weight bytes of the whole checkpoint.
    pub total_bytes: u64,
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct ExportReport {
    /// Every file written, JSON files first.
    pub files: Vec<PathBuf>,
    /// Tensors in the safetensors files.
    pub n_tensors: usize,
    /// Bytes of tensor data.
    pub weight_bytes: u64,
    /// Largest relative change `|f16(x) - x| / |x|` rounding made to a norm weight.
    pub max_norm_change: f32,
    /// The HF tensor where that change is (empty when no norm changed).
    pub max_norm_change_tensor: String,
}

/// Writes `value` as pretty JSON to `dir/name`.
fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> Result<PathBuf> {
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::InvalidArgument(format!("{name}: {e}")))?;
    write_file(&path, text.as_bytes())?;
    Ok(path)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Exports `gguf` into the directory `out` (created if needed; files there with the same
/// names are replaced). Every check runs before the first file is written. `progress` is
/// called after each tensor's bytes are written.
pub fn export_checkpoint(
    gguf: &Gguf,
    out: &Path,
    options: &ExportOptions,
    progress: &dyn Fn(&ExportProgress),
) -> Result<ExportReport> {
    let cfg = Qwen3Config::from_gguf(gguf)?;
    let tokenizer = Tokenizer::from_gguf(gguf)?;
    let planned = tensors::plan_tensors(gguf, &cfg, options.format)?;
    let (max_norm_change, max_norm_change_tensor) = tensors::max_norm_rounding(gguf, &planned)?;
    let config = hf_config::config_json(gguf, &cfg, &tokenizer, options.format)?;
    let generation = hf_config::generation_config_json(&tokenizer);
    let tokenizer_config =
        tokenizer_json::tokenizer_config_json(gguf, &tokenizer, cfg.n_ctx_train)?;
    let tokenizer_json = tokenizer_json::tokenizer_json(&tokenizer)?;

    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.display().to_string(),
        source,
    })?;
    let mut files = vec![
        write_json(out, "config.json", &config)?,
        write_json(out, "generation_config.json", &generation)?,
        write_json(out, "tokenizer_config.json", &tokenizer_config)?,
    ];
    let tokenizer_path = out.join("tokenizer.json");
    write_file(&tokenizer_path, tokenizer_json.as_bytes())?;
    files.push(tokenizer_path);
    files.extend(shards::write_shards(
        gguf,
        &planned,
        out,
        options.max_shard_bytes,
        "config.json",
        progress,
    )?);
    Ok(ExportReport {
        files,
        n_tensors: planned.len(),
        weight_bytes: planned.iter().map(|t| t.n_bytes() as u64).sum(),
        max_norm_change,
        max_norm_change_tensor,
    })
}
