//! Model weights on the GPU: Q1_0 matrices repacked into sign words + f16 scales (never
//! expanded), norms in f32. Shared by every [`crate::gpu::Session`] of the model.

use std::sync::Arc;

use crate::error::Result;
use crate::gguf::Gguf;
use crate::gpu::buffers::storage_buffer_init;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::PipelineCache;
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
    /// Every weight: Q1_0 matrices in the GPU layout, norms as (n) f32 storage buffers.
    pub weights: Weights<Q1_0Weight, wgpu::Buffer>,
}

/// Uploads each tensor to the device.
struct Device<'a>(&'a GpuContext);

impl Placement for Device<'_> {
    type Matrix = Q1_0Weight;
    type Vector = wgpu::Buffer;

    fn matrix(&mut self, name: &str, bytes: &[u8], k: usize, n: usize) -> Result<Q1_0Weight> {
        Q1_0Weight::upload(self.0, name, bytes, k, n)
    }

    fn norm(&mut self, name: &str, values: Vec<f32>) -> Result<wgpu::Buffer> {
        storage_buffer_init(self.0, name, &values)
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
        let weights = Weights::load(gguf, &config, Device(&ctx))?;
        let model = GpuModel {
            weights,
            config,
            pipelines: PipelineCache::new(),
            ctx,
        };
        model.ctx.take_error()?;
        Ok(Arc::new(model))
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        let q1: u64 = self.weights.matrices().map(Q1_0Weight::gpu_bytes).sum();
        let norms: u64 = self.weights.norms().map(wgpu::Buffer::size).sum();
        q1 + norms
    }
}
