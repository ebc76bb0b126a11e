//! Synthetic Bonsai models: GGUF files with the exact tensor table and metadata of PrismML's
//! Bonsai 1.7B / 4B / 8B (Qwen3, Q1_0 weights) filled with random weights, for benchmarks and
//! tests where the real files cannot be downloaded.
//!
//! Weights are random sign bits with block scales around `1/sqrt(K)` (so every projection of a
//! unit-RMS input has unit-RMS output) and norms near 1, which keeps activations finite through
//! all layers. The tokenizer (`tokenizer.*` keys) is copied from another GGUF file. Tensor data is
//! generated while the file is written, so even the 8B file (~1.2 GB) never sits in memory.

use std::io::Write;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Gguf, GgufValue, GgufWriter};
use crate::model::config::Qwen3Config;
use crate::model::rope::RopeParams;
use crate::model::weights::{TensorRole, tensor_table};
use crate::quant::q1_0::{BlockQ1_0, QK1_0};

/// Vocabulary of every Bonsai model (rows of `token_embd.weight`, entries of `tokenizer.ggml.tokens`).
pub const BONSAI_N_VOCAB: usize = 151_669;
/// `general.file_type` of Bonsai files (mostly Q1_0).
pub const FILE_TYPE_Q1_0: u32 = 41;
/// Q1_0 blocks generated per write call (~72 KiB).
const BLOCKS_PER_CHUNK: usize = 4096;
/// Block scale of linear weights in units of `1/sqrt(K)`: unit-RMS input gives unit-RMS output.
const LINEAR_SCALE: f32 = 1.0;
/// Block scale of `token_embd` / `output` in units of `1/sqrt(n_embd)`: logits of std ~2, as
/// trained LMs have, so softmax is neither flat nor one-hot.
const EMBED_SCALE: f32 = 2.0;
/// Each block scale is the nominal one times a factor uniform in `1 ± SCALE_SPREAD`.
const SCALE_SPREAD: f32 = 0.25;
/// Norm weights are uniform in `1 ± NORM_SPREAD`.
const NORM_SPREAD: f32 = 0.1;

/// Which model to imitate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SynthShape {
    /// The shape of the tiny-bonsai-dev fixture: 2 layers, n_embd 256 (for tests).
    Tiny,
    /// Bonsai-1.7B: 28 layers, n_embd 2048, tied head.
    Bonsai1_7B,
    /// Bonsai-4B: 36 layers, n_embd 2560, tied head.
    Bonsai4B,
    /// Bonsai-8B: 36 layers, n_embd 4096, separate `output.weight`.
    Bonsai8B,
}

/// Hyperparameters of a [`SynthShape`], as written to the file's `qwen3.*` keys.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthParams {
    /// `general.name`.
    pub name: &'static str,
    /// `block_count`: transformer blocks.
    pub n_layer: usize,
    /// `embedding_length`: width of the residual stream.
    pub n_embd: usize,
    /// `feed_forward_length`: hidden width of the SwiGLU block.
    pub n_ff: usize,
    /// `attention.head_count`: query heads.
    pub n_head: usize,
    /// `attention.head_count_kv`: key/value heads.
    pub n_head_kv: usize,
    /// `attention.key_length` and `attention.value_length`: dimension of one head.
    pub head_dim: usize,
    /// Vocabulary size: rows of `token_embd.weight` and tokens of the tokenizer.
    pub n_vocab: usize,
    /// `context_length`.
    pub n_ctx_train: usize,
    /// `rope.freq_base`: RoPE base frequency.
    pub freq_base: f32,
    /// YaRN `rope.scaling.factor`.
    pub yarn_factor: f32,
    /// `rope.scaling.original_context_length`.
    pub n_ctx_orig: usize,
    /// `attention.layer_norm_rms_epsilon`: epsilon of every RMSNorm.
    pub rms_eps: f32,
    /// No `output.weight`: the head reuses `token_embd.weight`.
    pub tied_head: bool,
}

impl SynthParams {
    /// The config a file with these parameters reads as.
    pub fn config(&self) -> Qwen3Config {
        Qwen3Config {
            n_layer: self.n_layer,
            n_embd: self.n_embd,
            n_ff: self.n_ff,
            n_head: self.n_head,
            n_head_kv: self.n_head_kv,
            head_dim: self.head_dim,
            n_vocab: self.n_vocab,
            n_ctx_train: self.n_ctx_train,
            rms_eps: self.rms_eps,
            rope: RopeParams::yarn(
                self.head_dim,
                self.freq_base,
                self.yarn_factor,
                self.n_ctx_orig,
            ),
            tied_head: self.tied_head,
        }
    }
}

impl SynthShape {
    /// Every shape, smallest first.
    pub const ALL: [SynthShape; 4] = [
        SynthShape::Tiny,
        SynthShape::Bonsai1_7B,
        SynthShape::Bonsai4B,
        SynthShape::Bonsai8B,
    ];

    /// The hyperparameters of this shape.
    pub fn params(self) -> SynthParams {
        let base = SynthParams {
            name: "",
            n_layer: 0,
            n_embd: 0,
            n_ff: 0,
            n_head: 0,
            n_head_kv: 8,
            head_dim: 128,
            n_vocab: BONSAI_N_VOCAB,
            n_ctx_train: 32_768,
            freq_base: 1e6,
            yarn_factor: 4.0,
            n_ctx_orig: 8192,
            rms_eps: 1e-6,
            tied_head: true,
        };
        match self {
            SynthShape::Tiny => SynthParams {
                name: "Bonsai-tiny-synthetic",
                n_layer: 2,
                n_embd: 256,
                n_ff: 768,
                n_head: 4,
                n_head_kv: 2,
                ..base
            },
            SynthShape::Bonsai1_7B => SynthParams {
                name: "Bonsai-1.7B-synthetic",
                n_layer: 28,
                n_embd: 2048,
                n_ff: 6144,
                n_head: 16,
                ..base
            },
            SynthShape::Bonsai4B => SynthParams {
                name: "Bonsai-4B-synthetic",
                n_layer: 36,
                n_embd: 2560,
                n_ff: 9728,
                n_head: 32,
                freq_base: 5e6,
                ..base
            },
            SynthShape::Bonsai8B => SynthParams {
                name: "Bonsai-8B-synthetic",
                n_layer: 36,
                n_embd: 4096,
                n_ff: 12_288,
                n_head: 32,
                n_ctx_train: 65_536,
                n_ctx_orig: 16_384,
                tied_head: false,
                ..base
            },
        }
    }
}

impl FromStr for SynthShape {
    type Err = Error;

    /// `tiny`, `1.7b`, `4b` or `8b` (case-insensitive, an optional `bonsai-` prefix).
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        match lower.strip_prefix("bonsai-").unwrap_or(&lower) {
            "tiny" => Ok(SynthShape::Tiny),
            "1.7b" => Ok(SynthShape::Bonsai1_7B),
            "4b" => Ok(SynthShape::Bonsai4B),
            "8b" => Ok(SynthShape::Bonsai8B),
            _ => Err(Error::InvalidArgument(format!(
                "unknown shape `{s}`: expected tiny, 1.7b, 4b or 8b"
            ))),
        }
    }
}

/// One tensor of a synthetic model.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthTensor {
    /// Tensor name, as in Bonsai files (`blk.0.attn_q.weight` ...).
    pub name: String,
    /// ne0 (input width) first.
    pub dims: Vec<u64>,
    /// Element type (Q1_0 for matrices, F32 for norms).
    pub ggml_type: GgmlType,
}

/// The tensor table of `shape` in file order: names, dims (ne0 first) and types as in Bonsai
/// (the model's own table, [`tensor_table`], with Q1_0 matrices and F32 norms).
pub fn synthetic_tensor_table(shape: SynthShape) -> Vec<SynthTensor> {
    tensor_table(&shape.params().config())
        .into_iter()
        .map(|t| SynthTensor {
            name: t.name,
            dims: t.dims.iter().map(|&d| d as u64).collect(),
            ggml_type: match t.role {
                TensorRole::Matrix => GgmlType::Q1_0,
                TensorRole::Norm => GgmlType::F32,
            },
        })
        .collect()
}

/// A writer holding the metadata and (lazily generated) tensors of a synthetic model; its
/// [`GgufWriter::write_to`] writes the file, [`GgufWriter::file_len`] tells its size.
///
/// Every `tokenizer.*` key of `tokenizer_from` is copied; its `tokenizer.ggml.tokens` must hold
/// exactly the shape's vocabulary ([`BONSAI_N_VOCAB`]). The same `seed` gives the same bytes.
pub fn synthetic_writer(shape: SynthShape, tokenizer_from: &Gguf, seed: u64) -> Result<GgufWriter> {
    let p = shape.params();
    let n_tokens = tokenizer_from.get_str_array("tokenizer.ggml.tokens")?.len();
    if n_tokens != p.n_vocab {
        return Err(Error::BadKey {
            key: "tokenizer.ggml.tokens".into(),
            reason: format!("{n_tokens} tokens, the {shape:?} shape needs {}", p.n_vocab),
        });
    }
    let mut w = GgufWriter::new();
    let arch = |key: &str| format!("qwen3.{key}");
    let u32_of = |n: usize| GgufValue::U32(n as u32);
    w.set("general.architecture", "qwen3")
        .set("general.name", p.name)
        .set(arch("block_count"), u32_of(p.n_layer))
        .set(arch("context_length"), u32_of(p.n_ctx_train))
        .set(arch("embedding_length"), u32_of(p.n_embd))
        .set(arch("feed_forward_length"), u32_of(p.n_ff))
        .set(arch("attention.head_count"), u32_of(p.n_head))
        .set(arch("attention.head_count_kv"), u32_of(p.n_head_kv))
        .set(arch("attention.key_length"), u32_of(p.head_dim))
        .set(arch("attention.value_length"), u32_of(p.head_dim))
        .set(arch("rope.freq_base"), p.freq_base)
        .set(arch("attention.layer_norm_rms_epsilon"), p.rms_eps)
        .set(arch("rope.scaling.type"), "yarn")
        .set(arch("rope.scaling.factor"), p.yarn_factor)
        .set(
            arch("rope.scaling.original_context_length"),
            u32_of(p.n_ctx_orig),
        )
        .set("general.file_type", GgufValue::U32(FILE_TYPE_Q1_0));
    for (key, value) in tokenizer_from.metadata() {
        if key.starts_with("tokenizer.") {
            w.set(key.clone(), value.clone());
        }
    }
    for (i, t) in synthetic_tensor_table(shape).into_iter().enumerate() {
        let tensor_seed = splitmix64(&mut seed.wrapping_add((i as u64) << 32));
        match t.ggml_type {
            GgmlType::Q1_0 => {
                let (k, rows) = (t.dims[0] as usize, t.dims[1] as usize);
                let nominal = if t.name == "token_embd.weight" || t.name == "output.weight" {
                    EMBED_SCALE
                } else {
                    LINEAR_SCALE
                };
                let scale = nominal / (k as f32).sqrt();
                w.add_tensor_streamed(t.name, t.dims, t.ggml_type, move |out| {
                    write_random_q1_0(out, rows * k / QK1_0, scale, tensor_seed)
                });
            }
            _ => {
                let n = t.dims.iter().product::<u64>() as usize;
                let mut rng = tensor_seed;
                let data: Vec<u8> = (0..n)
                    .flat_map(|_| {
                        let w = 1.0 + NORM_SPREAD * (2.0 * unit_f32(splitmix64(&mut rng)) - 1.0);
                        w.to_le_bytes()
                    })
                    .collect();
                w.add_tensor(t.name, t.dims, t.ggml_type, data);
            }
        }
    }
    Ok(w)
}

/// Writes a synthetic model of `shape` to `out` (wrap files in a `BufWriter`); see
/// [`synthetic_writer`].
pub fn write_synthetic_model(
    shape: SynthShape,
    tokenizer_from: &Gguf,
    seed: u64,
    out: &mut impl Write,
) -> Result<()> {
    synthetic_writer(shape, tokenizer_from, seed)?.write_to(out)
}

/// Writes `n_blocks` Q1_0 blocks: random sign bits, scales `scale * (1 ± SCALE_SPREAD)`.
fn write_random_q1_0(
    out: &mut dyn Write,
    n_blocks: usize,
    scale: f32,
    seed: u64,
) -> std::io::Result<()> {
    let mut rng = seed;
    let mut chunk = Vec::with_capacity(BLOCKS_PER_CHUNK);
    let mut left = n_blocks;
    while left > 0 {
        let n = left.min(BLOCKS_PER_CHUNK);
        chunk.clear();
        chunk.extend((0..n).map(|_| {
            let spread = 1.0 + SCALE_SPREAD * (2.0 * unit_f32(splitmix64(&mut rng)) - 1.0);
            let mut qs = [0u8; 16];
            qs[..8].copy_from_slice(&splitmix64(&mut rng).to_le_bytes());
            qs[8..].copy_from_slice(&splitmix64(&mut rng).to_le_bytes());
            BlockQ1_0::new(scale * spread, qs)
        }));
        out.write_all(bytemuck::cast_slice(&chunk))?;
        left -= n;
    }
    Ok(())
}

/// SplitMix64: advances `state` and returns the next well-mixed 64-bit value.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The top 24 bits of `r` as a float in [0, 1).
fn unit_f32(r: u64) -> f32 {
    (r >> 40) as f32 / (1u64 << 24) as f32
}
