//! The browser GPU self-test: `model.checkGpu(tensor)` runs the library's Q1_0 matvec kernel
//! on one of the model's weights on the WebGPU device and compares it with the CPU reference.

use wasm_bindgen::prelude::*;

use super::loader::Model;
use super::{js_err, to_js};
use crate::gguf::GgmlType;
use crate::gpu::buffers::{read_buffer, storage_buffer, storage_buffer_init};
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{PipelineCache, submit_kernels};
use crate::gpu::ops::matvec_q1_0::{self, MatvecOptions, MatvecQ1_0};
use crate::gpu::q1_0::Q1_0Weight;
use crate::{Error, Result};

/// Largest |GPU - CPU| / (1 + |CPU|) accepted by [`Model::check_gpu`]: both sum the same f32
/// products in a different order.
const MATVEC_REL_TOL: f32 = 1e-4;

#[wasm_bindgen]
impl Model {
    /// Runs the library's Q1_0 matvec kernel for weight `tensor` on the WebGPU device with a
    /// deterministic input and compares it with the CPU reference. Returns
    /// `{ rows, cols, maxRelErr, ok, argmax, cpuArgmax }`.
    #[wasm_bindgen(js_name = checkGpu)]
    pub async fn check_gpu(&mut self, tensor: &str) -> std::result::Result<JsValue, JsError> {
        let (ctx, _) = self.gpu().await.map_err(js_err)?;
        let r = self.check_matvec(&ctx, tensor).await.map_err(js_err)?;
        to_js(&r)
    }
}

impl Model {
    async fn check_matvec(&self, ctx: &GpuContext, tensor: &str) -> Result<serde_json::Value> {
        let info = self
            .gguf
            .tensor_info(tensor)
            .ok_or_else(|| Error::MissingTensor(tensor.to_string()))?;
        if info.ggml_type != GgmlType::Q1_0 || info.dims.len() != 2 {
            return Err(Error::InvalidArgument(format!(
                "checkGpu: `{tensor}` is {:?} {:?}, expected a 2-D Q1_0 weight",
                info.ggml_type, info.dims
            )));
        }
        let (k, n) = (info.dims[0] as usize, info.dims[1] as usize);
        let bytes = self.gguf.tensor_data(tensor)?;
        // Deterministic input in [-1, 1): the same on every platform.
        let x: Vec<f32> = (0..k)
            .map(|i| ((i * 7919 + 13) % 2000) as f32 / 1000.0 - 1.0)
            .collect();
        let w = Q1_0Weight::upload(ctx, tensor, bytes, k, n)?;
        let xb = storage_buffer_init(ctx, "check x", &x)?;
        let yb = storage_buffer(ctx, "check y", (n * 4) as u64)?;
        let cache = PipelineCache::new();
        let op = MatvecQ1_0::new(ctx, &cache, &w, &xb, &yb, MatvecOptions::default())?;
        let kernels: Vec<_> = op.kernels.iter().collect();
        submit_kernels(ctx, "check matvec", &kernels);
        let got = read_buffer::<f32>(ctx, &yb, 0, n).await?;
        ctx.take_error()?;
        let mut want = vec![0.0f32; n];
        matvec_q1_0::run_cpu(bytes, k, n, &x, &mut want, false);
        let max_rel = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
            .fold(0.0f32, f32::max);
        Ok(serde_json::json!({
            "tensor": tensor,
            "rows": n,
            "cols": k,
            "maxRelErr": max_rel,
            "tolerance": MATVEC_REL_TOL,
            "ok": max_rel <= MATVEC_REL_TOL,
            "argmax": crate::engine::argmax(&got),
            "cpuArgmax": crate::engine::argmax(&want),
            "checksum": want.iter().map(|v| *v as f64).sum::<f64>(),
        }))
    }
}
