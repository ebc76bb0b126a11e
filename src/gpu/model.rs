//! Model weights on the GPU: Q1_0 matrices repacked into sign words + f16 scales (never
//! expanded), norms in f32. Shared by every [`crate::gpu::Session`] of the model.
//!
//! The decode kernels read q|k|v as one weight and gate|up as one interleaved weight
//! ([`FusedLayer`]); those rows are uploaded once, fused, while the file is read, and the
//! separate `wq wk wv w_gate w_up` of [`GpuModel::weights`] are left without parts (prefill
//! reads the fused weights through row views).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::gpu::buffers::storage_buffer_init;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::PipelineCache;
use crate::gpu::ops::{ffn_gate_up, qkv_rope};
use crate::gpu::q1_0::Q1_0Weight;
use crate::model::config::Qwen3Config;
use crate::model::weights::{Placement, Weights};

/// A Qwen3 model loaded onto a GPU.
pub struct GpuModel {
    /// The device the weights live on.
    pub ctx: Arc<GpuContext>,
    /// Hyperparameters read from the GGUF metadata.
    pub config: Qwen3Config,
    /// Compiled compute pipelines, shared by every session of this model.
    pub pipelines: PipelineCache,
    /// Every weight: Q1_0 matrices in the GPU layout, norms as (n) f32 storage buffers; `wq wk
    /// wv w_gate w_up` have no parts (their rows are in [`Self::fused`]).
    pub weights: Weights<Q1_0Weight, wgpu::Buffer>,
    /// Per layer, the weights of the fused decode kernels: (n_layer).
    pub fused: Vec<FusedLayer>,
}

/// One layer's weights as the fused decode kernels read them.
pub struct FusedLayer {
    /// q, k and v projections, rows q | k | v ([`qkv_rope::fuse_weights`]):
    /// (q_dim + 2 * kv_dim, n_embd).
    pub wqkv: Q1_0Weight,
    /// attn_norm | attn_q_norm | attn_k_norm in one binding ([`qkv_rope::fuse_norms`]; a copy
    /// of the three norms, 9 KiB per layer on 1.7B): (n_embd + 2 * head_dim) f32.
    pub attn_norms: wgpu::Buffer,
    /// gate and up projections interleaved in pairs of rows
    /// ([`ffn_gate_up::interleave_weights`]): (2 * n_ff, n_embd).
    pub w_gate_up: Q1_0Weight,
}

/// Uploads each tensor to the device, fusing q|k|v and gate|up as they arrive (the table gives
/// each layer's tensors in file order: attn_norm, q, k, v, q_norm, k_norm, o, ffn_norm, gate, up,
/// down).
struct Device<'a> {
    ctx: &'a GpuContext,
    /// Q1_0 bytes of q (then q|k), or of gate, waiting for the rest of their fused weight.
    pending: Vec<u8>,
    /// attn_norm, then attn_q_norm, waiting for attn_k_norm.
    norms: Vec<f32>,
    wqkv: Option<Q1_0Weight>,
    attn_norms: Option<wgpu::Buffer>,
    fused: &'a mut Vec<FusedLayer>,
}

/// The name of `name`'s layer tensor `tensor` (`blk.3.attn_q.weight` -> `blk.3.<tensor>.weight`).
fn sibling(name: &str, tensor: &str) -> String {
    let layer = name.split('.').take(2).collect::<Vec<_>>().join(".");
    format!("{layer}.{tensor}.weight")
}

impl Placement for Device<'_> {
    type Matrix = Q1_0Weight;
    type Vector = wgpu::Buffer;

    fn matrix(&mut self, name: &str, bytes: &[u8], k: usize, n: usize) -> Result<Q1_0Weight> {
        let is = |t: &str| name.ends_with(&format!(".{t}.weight"));
        let in_fused = || Q1_0Weight {
            name: format!("{name} (rows in the fused weight)"),
            k,
            n,
            parts: Vec::new(),
        };
        if is("attn_q") || is("attn_k") || is("ffn_gate") {
            self.pending.extend_from_slice(bytes);
            return Ok(in_fused());
        }
        if is("attn_v") {
            let qkv = qkv_rope::fuse_weights(&std::mem::take(&mut self.pending), &[], bytes);
            let rows = qkv.len() / crate::quant::q1_0::row_bytes(k);
            let fused = sibling(name, "attn_qkv");
            self.wqkv = Some(Q1_0Weight::upload(self.ctx, &fused, &qkv, k, rows)?);
            return Ok(in_fused());
        }
        if is("ffn_up") {
            let gate = std::mem::take(&mut self.pending);
            let fused = ffn_gate_up::interleave_weights(&gate, bytes, k, n)?;
            let w_gate_up =
                Q1_0Weight::upload(self.ctx, &sibling(name, "ffn_gate_up"), &fused, k, 2 * n)?;
            let (Some(wqkv), Some(attn_norms)) = (self.wqkv.take(), self.attn_norms.take()) else {
                return Err(Error::MissingTensor(sibling(name, "attn_v")));
            };
            self.fused.push(FusedLayer {
                wqkv,
                attn_norms,
                w_gate_up,
            });
            return Ok(in_fused());
        }
        Q1_0Weight::upload(self.ctx, name, bytes, k, n)
    }

    fn norm(&mut self, name: &str, values: Vec<f32>) -> Result<wgpu::Buffer> {
        let is = |t: &str| name.ends_with(&format!(".{t}.weight"));
        if is("attn_norm") {
            self.norms = values.clone();
        } else if is("attn_q_norm") {
            self.norms.extend_from_slice(&values);
        } else if is("attn_k_norm") {
            self.norms.extend_from_slice(&values);
            let fused = sibling(name, "attn_norms");
            self.attn_norms = Some(storage_buffer_init(self.ctx, &fused, &self.norms)?);
        }
        storage_buffer_init(self.ctx, name, &values)
    }
}

impl GpuModel {
    /// Checks the file against the Qwen3 layout and uploads every weight. Weight memory on the
    /// GPU equals the Q1_0 bytes in the file (plus f32 norms).
    // On wasm32 wgpu's handles are neither Send nor Sync (one JavaScript thread); the Arc only
    // shares ownership between sessions there.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    pub fn load(ctx: Arc<GpuContext>, gguf: &Gguf) -> Result<Arc<GpuModel>> {
        let config = Qwen3Config::from_gguf(gguf)?;
        let mut fused = Vec::with_capacity(config.n_layer);
        let device = Device {
            ctx: &ctx,
            pending: Vec::new(),
            norms: Vec::new(),
            wqkv: None,
            attn_norms: None,
            fused: &mut fused,
        };
        let weights = Weights::load(gguf, &config, device)?;
        let model = GpuModel {
            weights,
            fused,
            config,
            pipelines: PipelineCache::new(),
            ctx,
        };
        model.ctx.take_error()?;
        Ok(Arc::new(model))
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        let fused = self.fused.iter();
        let q1: u64 = (self.weights.matrices())
            .chain(fused.clone().flat_map(|f| [&f.wqkv, &f.w_gate_up]))
            .map(Q1_0Weight::gpu_bytes)
            .sum();
        let norms: u64 = (self.weights.norms())
            .chain(fused.map(|f| &f.attn_norms))
            .map(wgpu::Buffer::size)
            .sum();
        q1 + norms
    }
}
