//! The tensors of an exported checkpoint: planned (names, dtypes, shapes, every refusal) before
//! anything is written, then produced one at a time from the memory-mapped GGUF.

use half::f16;
use safetensors::Dtype;

use super::ExportFormat;
use super::awq::{awq_qweight, awq_qzeros, awq_scales, awq_shapes, block_inputs, check_awq_shape};
use super::names::{WeightKind, qwen3_tensors};
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Gguf};
use crate::model::config::Qwen3Config;
use crate::quant::dequantize_row;
use crate::quant::q1_0::Q1_0_BLOCK_BYTES;
use crate::quant::q2_0;

/// How one output tensor's bytes are made from its GGUF tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Q1_0 `±d` as f16: exact, `d`'s own bits with the sign bit set for `-d`.
    Fp16FromQ1,
    /// Q2_0 `(code - 1) * d` as f16: exact (`-d`, `0`, `+d`, and `+2d`, which
    /// [`plan_tensors`] checks stays in the f16 range).
    Fp16FromQ2,
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
    /// The source's GGUF type.
    ty: GgmlType,
    /// AWQ inputs per group (the file's smallest linear block size).
    group: usize,
}

impl PlannedTensor {
    /// AWQ inputs per group of the checkpoint this tensor belongs to (the same for all).
    pub fn awq_group(&self) -> usize {
        self.group
    }

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
            Source::Fp16FromQ2 => fp16_from_q2(data),
            Source::NormToF16 => norm_to_f16(gguf, &self.gguf)?
                .iter()
                .flat_map(|(h, _)| h.to_le_bytes())
                .collect(),
            Source::AwqQweight => awq_qweight(self.ty, data, n_in, n_out),
            Source::AwqQzeros => awq_qzeros(n_in, n_out, self.group),
            Source::AwqScales => awq_scales(self.ty, data, n_in, n_out, self.group),
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
    // One AWQ group size for the whole checkpoint: the smallest block of any linear (128 for
    // Bonsai, 64 for Ternary-Bonsai), which every other block size is a multiple of.
    let group = mappings
        .iter()
        .filter(|m| m.kind == WeightKind::Linear)
        .filter_map(|m| {
            gguf.tensor_info(&m.gguf)
                .and_then(|t| block_inputs(t.ggml_type))
        })
        .min()
        .unwrap_or(QK1_0_GROUP);
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
            ty: info.ggml_type,
            group,
        };
        match (m.kind, format) {
            (WeightKind::Norm, _) => {
                planned.push(tensor("weight", Dtype::F16, vec![n_in], Source::NormToF16));
            }
            (WeightKind::Embedding, _) | (WeightKind::Linear, ExportFormat::HfFp16) => {
                let source = fp16_source(gguf, &m.gguf, info.ggml_type)?;
                let shape = vec![n_out, n_in];
                planned.push(tensor("weight", Dtype::F16, shape, source));
            }
            (WeightKind::Linear, ExportFormat::Awq) => {
                fp16_source(gguf, &m.gguf, info.ggml_type)?;
                check_awq_shape(&m.gguf, n_in, n_out, group)?;
                let (qweight, qzeros, scales) = awq_shapes(n_in, n_out, group);
                planned.push(tensor("qweight", Dtype::I32, qweight, Source::AwqQweight));
                planned.push(tensor("qzeros", Dtype::I32, qzeros, Source::AwqQzeros));
                planned.push(tensor("scales", Dtype::F16, scales, Source::AwqScales));
            }
        }
    }
    Ok(planned)
}

/// AWQ's group size of a file without Q1_0 / Q2_0 linears (refused later, naming the tensor).
const QK1_0_GROUP: usize = 128;

/// How a weight of type `ty` becomes exact f16, after checking it can: Q1_0 always, Q2_0 when
/// no block with a `+2d` code has `2d` past the f16 range. Names the tensor otherwise.
fn fp16_source(gguf: &Gguf, name: &str, ty: GgmlType) -> Result<Source> {
    let refuse = |reason: String| Error::BadTensor {
        name: name.to_string(),
        reason,
    };
    match ty {
        GgmlType::Q1_0 => Ok(Source::Fp16FromQ1),
        GgmlType::Q2_0 => {
            for block in q2_0::blocks(gguf.tensor_data(name)?) {
                let d = f16::from_le_bytes(block.d);
                let has_2d = (0..q2_0::QK2_0).any(|j| block.code(j) == 3);
                if has_2d && (2.0 * d.to_f32()).abs() > f16::MAX.to_f32() {
                    return Err(refuse(format!(
                        "a +2d code with d = {d} is outside the f16 range, so f16 cannot hold it exactly"
                    )));
                }
            }
            Ok(Source::Fp16FromQ2)
        }
        _ => Err(refuse(format!(
            "type {ty} cannot be exported exactly (only Q1_0 and Q2_0 weights can)"
        ))),
    }
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

/// Q2_0 blocks as f16 `(code - 1) * d`, through the CPU dequantization (exact in f16, checked
/// by [`fp16_source`]).
fn fp16_from_q2(data: &[u8]) -> Vec<u8> {
    let n = data.len() / q2_0::Q2_0_BLOCK_BYTES * q2_0::QK2_0;
    let mut x = vec![0.0f32; n];
    q2_0::dequantize_row_q2_0(data, &mut x);
    x.iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
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
