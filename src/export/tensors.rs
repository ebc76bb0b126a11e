//! The tensors of an exported checkpoint: planned (names, dtypes, shapes, every refusal) before
//! anything is written, then produced one at a time from the memory-mapped GGUF.

use half::f16;
use safetensors::Dtype;

use super::ExportFormat;
use super::awq::{awq_qweight, awq_qzeros, awq_scales, awq_shapes, check_awq_shape};
use super::names::{WeightKind, qwen3_tensors};
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Gguf};
use crate::model::config::Qwen3Config;
use crate::quant::dequantize_row;
use crate::quant::q1_0::Q1_0_BLOCK_BYTES;

/// How one output tensor's bytes are made from its GGUF tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Q1_0 `±d` as f16: exact, `d`'s own bits with the sign bit set for `-d`.
    Fp16FromQ1,
    /// An F32 / F16 / BF16 norm rounded to f16.
    NormToF16,
    /// AWQ `qweight` of a Q1_0 linear.
    AwqQweight,
    /// AWQ `qzeros` (all 8).
    AwqQzeros,
    /// AWQ `scales`: the Q1_0 block scales.
    AwqScales,
}

/// One tensor of the checkpoint, planned but not yet produced.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    /// The HF tensor name (`model.layers.0.self_attn.q_proj.qweight`).
    pub name: String,
    /// The GGUF tensor it comes from.
    pub gguf: String,
    /// Element type in the safetensors file.
    pub dtype: Dtype,
    /// Shape, outermost first (`[out, in]` for a weight).
    pub shape: Vec<usize>,
    source: Source,
    /// GGUF dims `[in, out]` (or `[n]`) of the source.
    n_in: usize,
    n_out: usize,
}

impl PlannedTensor {
    /// Bytes the tensor takes in the file.
    pub fn n_bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.bitsize() / 8
    }

    /// The tensor's bytes (little-endian), made from `gguf`, which [`plan_tensors`] checked.
    pub fn produce(&self, gguf: &Gguf) -> Result<Vec<u8>> {
        let data = gguf.tensor_data(&self.gguf)?;
        let (n_in, n_out) = (self.n_in, self.n_out);
        Ok(match self.source {
            Source::Fp16FromQ1 => fp16_from_q1(data),
            Source::NormToF16 => norm_to_f16(gguf, &self.gguf)?
                .iter()
                .flat_map(|(h, _)| h.to_le_bytes())
                .collect(),
            Source::AwqQweight => awq_qweight(data, n_in, n_out),
            Source::AwqQzeros => awq_qzeros(n_in, n_out),
            Source::AwqScales => awq_scales(data, n_in, n_out),
        })
    }
}

/// Every tensor the checkpoint holds, in HF order, after every check: the Qwen3 layout (types
/// and shapes, via [`Qwen3Config::validate_tensors`]), no GGUF tensor left behind, and for AWQ
/// each linear's shape. Errors name the tensor.
pub fn plan_tensors(
    gguf: &Gguf,
    cfg: &Qwen3Config,
    format: ExportFormat,
) -> Result<Vec<PlannedTensor>> {
    cfg.validate_tensors(gguf)?;
    let mappings = qwen3_tensors(cfg);
    if let Some(extra) = gguf
        .tensors()
        .iter()
        .find(|t| !mappings.iter().any(|m| m.gguf == t.name))
    {
        return Err(Error::BadTensor {
            name: extra.name.clone(),
            reason: "is not part of the Qwen3 layout; exporting without it would change the model"
                .into(),
        });
    }
    let mut planned = Vec::new();
    for m in mappings {
        let info = gguf
            .tensor_info(&m.gguf)
            .ok_or_else(|| Error::MissingTensor(m.gguf.clone()))?;
        let n_in = info.dims[0] as usize;
        let n_out = info.dims.get(1).map_or(1, |&d| d as usize);
        let tensor = |suffix: &str, dtype, shape: Vec<usize>, source| PlannedTensor {
            name: format!("{}.{suffix}", m.hf_module),
            gguf: m.gguf.clone(),
            dtype,
            shape,
            source,
            n_in,
            n_out,
        };
        match (m.kind, format) {
            (WeightKind::Norm, _) => {
                planned.push(tensor("weight", Dtype::F16, vec![n_in], Source::NormToF16));
            }
            (WeightKind::Embedding, _) | (WeightKind::Linear, ExportFormat::HfFp16) => {
                require_q1(&m.gguf, info.ggml_type)?;
                let shape = vec![n_out, n_in];
                planned.push(tensor("weight", Dtype::F16, shape, Source::Fp16FromQ1));
            }
            (WeightKind::Linear, ExportFormat::Awq) => {
                require_q1(&m.gguf, info.ggml_type)?;
                check_awq_shape(&m.gguf, n_in, n_out)?;
                let (qweight, qzeros, scales) = awq_shapes(n_in, n_out);
                planned.push(tensor("qweight", Dtype::I32, qweight, Source::AwqQweight));
                planned.push(tensor("qzeros", Dtype::I32, qzeros, Source::AwqQzeros));
                planned.push(tensor("scales", Dtype::F16, scales, Source::AwqScales));
            }
        }
    }
    Ok(planned)
}

fn require_q1(name: &str, ty: GgmlType) -> Result<()> {
    if ty == GgmlType::Q1_0 {
        return Ok(());
    }
    Err(Error::BadTensor {
        name: name.to_string(),
        reason: format!("type {ty} cannot be exported exactly (only Q1_0 weights can)"),
    })
}

/// Q1_0 blocks as f16 `±d`: `+d` is `d`'s stored bits, `-d` the same with the sign bit
/// flipped, so the f16 value is exactly the dequantized one (NaN payloads included).
fn fp16_from_q1(q1: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(q1.len() / Q1_0_BLOCK_BYTES * 256);
    for block in q1.chunks_exact(Q1_0_BLOCK_BYTES) {
        let plus = u16::from_le_bytes([block[0], block[1]]);
        let minus = plus ^ 0x8000;
        for &byte in &block[2..] {
            for bit in 0..8 {
                let h = if (byte >> bit) & 1 == 1 { plus } else { minus };
                out.extend_from_slice(&h.to_le_bytes());
            }
        }
    }
    out
}

/// A norm weight rounded to f16, with each element's value before rounding.
fn norm_to_f16(gguf: &Gguf, name: &str) -> Result<Vec<(f16, f32)>> {
    let info = gguf
        .tensor_info(name)
        .ok_or_else(|| Error::MissingTensor(name.to_string()))?;
    let mut x = vec![0.0f32; info.n_elements() as usize];
    dequantize_row(info.ggml_type, gguf.tensor_data(name)?, &mut x)?;
    Ok(x.into_iter().map(|v| (f16::from_f32(v), v)).collect())
}

/// The largest relative change `|f16(x) - x| / |x|` rounding makes to any norm weight, and the
/// HF tensor where it happens (empty when no norm changes). A weight past the f16 range is
/// refused, naming the GGUF tensor.
pub fn max_norm_rounding(gguf: &Gguf, planned: &[PlannedTensor]) -> Result<(f32, String)> {
    let mut worst = (0.0f32, String::new());
    for t in planned.iter().filter(|t| t.source == Source::NormToF16) {
        for (h, x) in norm_to_f16(gguf, &t.gguf)? {
            if h.is_infinite() && x.is_finite() {
                return Err(Error::BadTensor {
                    name: t.gguf.clone(),
                    reason: format!("norm weight {x} is outside the f16 range"),
                });
            }
            let change = if x == 0.0 {
                0.0
            } else {
                ((h.to_f32() - x) / x).abs()
            };
            if change > worst.0 || change.is_nan() {
                worst = (change, t.name.clone());
            }
        }
    }
    Ok(worst)
}
