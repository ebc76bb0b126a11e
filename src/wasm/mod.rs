//! JavaScript bindings for the browser build (wasm32 + WebGPU), made with wasm-bindgen.
//!
//! Build: `cargo rustc --release --lib --crate-type cdylib --target wasm32-unknown-unknown`,
//! then `wasm-bindgen --target web`; `examples/web/` is a chat page on top of these bindings.
//!
//! JavaScript sees:
//! - `gpuInfo()`: the WebGPU adapter wgpu picks, its optional features and the limits that bound
//!   the model size (throws with a clear message when the browser has no WebGPU),
//! - `new ModelLoader(size)` + `push(chunk)` + `finish()`, or `Model.load(bytes)`: parses a GGUF
//!   (Q1_0 Bonsai or Q2_0 Ternary-Bonsai, Qwen3) with its tokenizer and chat template; chunks go
//!   straight into wasm memory,
//! - `model.info()`, `model.tokenize()`, `model.detokenize()`, `model.isEog()`,
//!   `model.chatPrompt()`,
//! - `model.createChat(nCtx, cacheType)`: uploads the weights to the GPU and returns a `Chat` (a
//!   GPU session with its KV cache, `"f16"` or `"q8_0"`, plus the conversation):
//!   `chat.send(text, options, onPiece)` streams the reply (`onPiece(text, "thinking" |
//!   "answer")`, return `false` to stop), with sampling options, thinking switch, system prompt
//!   and timings; `chat.memoryPlan` describes what the session allocated and the device's limits;
//!   `chat.releaseGpu()` frees the GPU memory at once,
//! - `model.checkGpu(tensor)`: runs the library's matvec kernel (Q1_0, Q2_0, ...) on one of the
//!   model's weights on the WebGPU device and compares it with the CPU reference (a self-test of
//!   the browser GPU).
//!
//! Results are plain JavaScript objects (built from JSON), errors are `Error`s whose message
//! names the failing key, tensor or limit.
//!
//! One file per job: [`loader`] (the file, the model and its text side), [`chat`] (GPU chats),
//! [`selftest`] (`checkGpu`); this module holds the WebGPU device they share.

use std::sync::{Arc, Mutex};

use wasm_bindgen::prelude::*;

use crate::gpu::context::{GpuContext, GpuOptions};
use crate::{Error, Result};

pub mod chat;
pub mod loader;
pub mod selftest;

pub use chat::Chat;
pub use loader::{Model, ModelLoader};

#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("bonsai-wgpu panicked: {info}").into());
    }));
}

pub(crate) fn js_err(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

/// Turns a serde value into a plain JavaScript object.
pub(crate) fn to_js(value: &serde_json::Value) -> std::result::Result<JsValue, JsError> {
    js_sys::JSON::parse(&value.to_string())
        .map_err(|_| JsError::new("JSON.parse of a result failed"))
}

pub(crate) fn context_json(ctx: &GpuContext) -> serde_json::Value {
    let l = &ctx.limits;
    serde_json::json!({
        "name": ctx.info.name,
        "backend": format!("{:?}", ctx.info.backend),
        "deviceType": format!("{:?}", ctx.info.device_type),
        "driver": ctx.info.driver,
        "driverInfo": ctx.info.driver_info,
        "subgroupMinSize": ctx.info.subgroup_min_size,
        "subgroupMaxSize": ctx.info.subgroup_max_size,
        "features": {
            "shaderF16": ctx.features.has_f16,
            "subgroups": ctx.features.has_subgroups,
            "timestamps": ctx.features.has_timestamps,
        },
        "limits": {
            "maxStorageBufferBindingSize": l.max_storage_buffer_binding_size,
            "maxBufferSize": l.max_buffer_size,
            "maxComputeWorkgroupStorageSize": l.max_compute_workgroup_storage_size,
            "maxComputeInvocationsPerWorkgroup": l.max_compute_invocations_per_workgroup,
            "maxComputeWorkgroupsPerDimension": l.max_compute_workgroups_per_dimension,
            "maxStorageBuffersPerShaderStage": l.max_storage_buffers_per_shader_stage,
        },
    })
}

/// Why the device was lost, once it has been (shared with wgpu's callback).
pub(crate) type LostFlag = Arc<Mutex<Option<String>>>;

// wgpu's browser handles are neither Send nor Sync, but GpuModel::load takes an Arc.
#[allow(clippy::arc_with_non_send_sync)]
pub(crate) async fn webgpu_context() -> Result<(Arc<GpuContext>, LostFlag)> {
    let has_gpu = js_sys::Reflect::get(&js_sys::global(), &"navigator".into())
        .ok()
        .and_then(|nav| js_sys::Reflect::get(&nav, &"gpu".into()).ok())
        .is_some_and(|gpu| !gpu.is_undefined() && !gpu.is_null());
    if !has_gpu {
        return Err(Error::Adapter(
            "this browser has no WebGPU (navigator.gpu is missing): use a recent Chrome, Edge \
             or Safari, or Firefox with WebGPU enabled, over https or localhost"
                .into(),
        ));
    }
    let opts = GpuOptions {
        backends: Some(wgpu::Backends::BROWSER_WEBGPU),
        ..GpuOptions::default()
    };
    let ctx = GpuContext::new(&opts).await?;
    let lost: LostFlag = Arc::new(Mutex::new(None));
    let flag = lost.clone();
    ctx.device.set_device_lost_callback(move |reason, message| {
        if let Ok(mut slot) = flag.lock() {
            *slot = Some(format!("lost ({reason:?}): {message}"));
        }
    });
    Ok((Arc::new(ctx), lost))
}

pub(crate) fn check_lost(lost: &LostFlag) -> Result<()> {
    match lost.lock().ok().and_then(|l| l.clone()) {
        Some(msg) => Err(Error::Device(msg)),
        None => Ok(()),
    }
}

/// Describes the WebGPU adapter and device that the model would run on.
#[wasm_bindgen(js_name = gpuInfo)]
pub async fn gpu_info() -> std::result::Result<JsValue, JsError> {
    let (ctx, _) = webgpu_context().await.map_err(js_err)?;
    to_js(&context_json(&ctx))
}
