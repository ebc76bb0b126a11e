//! Model weights on the GPU: Q1_0 / Q2_0 matrices repacked into code words + f16 scales (never
//! expanded), F32 / F16 / BF16 matrices (mixed-type files) as f32 rows, norms in f32. Each
//! tensor's own type decides. Shared by every [`crate::gpu::Session`] of the model.

use std::sync::Arc;

use crate::error::Result;
use crate::gguf::{GgmlType, Gguf};
use crate::gpu::buffers::storage_buffer_init;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::PipelineCache;
use crate::gpu::q1_0::Q1_0Weight;
use crate::model::config::Qwen3Config;
use crate::model::weights::{Placement, Weights};

/// One layer's weights joined for the fused decode plan (ARCHITECTURE.md, "A decode step");
/// the layer's own `wq`, `wk`, `wv`, `w_gate` and `w_up` become row views of these, so every
/// weight is stored once.
pub struct FusedLayer {
    /// Rows of `wq`, then `wk`, then `wv`: one matvec for all three.
    pub wqkv: Q1_0Weight,
    /// Rows of `w_gate`, then `w_up`: one matvec with the `silu(gate) * up` epilogue.
    pub w_gate_up: Q1_0Weight,
    /// `attn_q_norm` then `attn_k_norm` in one buffer (the fused attention kernel's binding).
    pub qk_norm: wgpu::Buffer,
}

/// A Qwen3 model loaded onto a GPU.
pub struct GpuModel {
    /// The device the weights live on.
    pub ctx: Arc<GpuContext>,
    /// Hyperparameters read from the GGUF metadata.
    pub config: Qwen3Config,
    /// Compiled compute pipelines, shared by every session of this model.
    pub pipelines: PipelineCache,
    /// Every weight: matrices in the GPU layout of their type, norms as (n) f32 storage buffers.
    pub weights: Weights<Q1_0Weight, wgpu::Buffer>,
    /// Joined weights of every layer, when all of them could be joined (packed formats, one
    /// binding each); `None` means sessions decode with the unfused plan.
    pub fused: Option<Vec<FusedLayer>>,
}

/// Uploads each tensor to the device.
struct Device<'a>(&'a GpuContext);

impl Placement for Device<'_> {
    type Matrix = Q1_0Weight;
    type Vector = wgpu::Buffer;

    fn matrix(
        &mut self,
        name: &str,
        ty: GgmlType,
        bytes: &[u8],
        k: usize,
        n: usize,
    ) -> Result<Q1_0Weight> {
        let max_binding = self.0.max_binding_bytes();
        Q1_0Weight::upload_as(self.0, ty, name, bytes, k, n, max_binding)
    }

    fn norm(&mut self, name: &str, values: Vec<f32>) -> Result<wgpu::Buffer> {
        storage_buffer_init(self.0, name, &values)
    }
}

impl GpuModel {
    /// Checks the file against the Qwen3 layout and uploads every weight. Weight memory on the
    /// GPU equals the Q1_0 / Q2_0 bytes in the file (plus f32 norms and any dense matrices).
    // On wasm32 wgpu's handles are neither Send nor Sync (one JavaScript thread); the Arc only
    // shares ownership between sessions there.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    pub fn load(ctx: Arc<GpuContext>, gguf: &Gguf) -> Result<Arc<GpuModel>> {
        let config = Qwen3Config::from_gguf(gguf)?;
        let mut weights = Weights::load(gguf, &config, Device(&ctx))?;
        let fused = fuse_layers(&ctx, &mut weights)?;
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
        let fused: u64 = self
            .fused
            .iter()
            .flatten()
            .map(|f| f.wqkv.gpu_bytes() + f.w_gate_up.gpu_bytes())
            .sum();
        let q1: u64 = self
            .weights
            .matrices()
            .map(Q1_0Weight::gpu_bytes)
            .sum::<u64>()
            + fused;
        let norms: u64 = self.weights.norms().map(wgpu::Buffer::size).sum();
        q1 + norms
    }
}

/// Joins every layer's q|k|v and gate|up on the GPU and replaces the parts by row views, or
/// leaves the weights alone (`None`) when any layer's cannot be joined (dense or split weights,
/// an odd n_ff).
fn fuse_layers(
    ctx: &GpuContext,
    weights: &mut Weights<Q1_0Weight, wgpu::Buffer>,
) -> Result<Option<Vec<FusedLayer>>> {
    let joinable = weights.layers.iter().all(|l| {
        Q1_0Weight::joinable(ctx, &[&l.wq, &l.wk, &l.wv])
            && Q1_0Weight::joinable(ctx, &[&l.w_gate, &l.w_up])
            && l.w_gate.n.is_multiple_of(2)
    });
    if !joinable {
        return Ok(None);
    }
    let mut fused = Vec::with_capacity(weights.layers.len());
    for (i, l) in weights.layers.iter_mut().enumerate() {
        let join = |name: String, ws: &[&Q1_0Weight]| -> Result<Q1_0Weight> {
            Q1_0Weight::concat(ctx, &name, ws)?.ok_or_else(|| {
                crate::Error::InvalidArgument(format!("{name}: weights cannot be joined"))
            })
        };
        let wqkv = join(format!("blk.{i}.attn_qkv"), &[&l.wq, &l.wk, &l.wv])?;
        let w_gate_up = join(format!("blk.{i}.ffn_gate_up"), &[&l.w_gate, &l.w_up])?;
        let (nq, nk, nv) = (l.wq.n, l.wk.n, l.wv.n);
        l.wq = wqkv.view(&l.wq.name, 0, nq)?;
        l.wk = wqkv.view(&l.wk.name, nq, nk)?;
        l.wv = wqkv.view(&l.wv.name, nq + nk, nv)?;
        let n_ff = l.w_gate.n;
        l.w_gate = w_gate_up.view(&l.w_gate.name, 0, n_ff)?;
        l.w_up = w_gate_up.view(&l.w_up.name, n_ff, n_ff)?;
        let hd = l.attn_q_norm.size();
        let qk_norm =
            crate::gpu::buffers::storage_buffer(ctx, &format!("blk.{i}.qk_norm"), 2 * hd)?;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("qk norms"),
            });
        encoder.copy_buffer_to_buffer(&l.attn_q_norm, 0, &qk_norm, 0, hd);
        encoder.copy_buffer_to_buffer(&l.attn_k_norm, 0, &qk_norm, hd, hd);
        ctx.queue.submit([encoder.finish()]);
        fused.push(FusedLayer {
            wqkv,
            w_gate_up,
            qk_norm,
        });
    }
    Ok(Some(fused))
}
