//! JavaScript bindings for the browser build (wasm32 + WebGPU), made with wasm-bindgen.
//!
//! Build: `cargo rustc --release --lib --crate-type cdylib --target wasm32-unknown-unknown`,
//! then `wasm-bindgen --target web`; `examples/web/` is a chat page on top of these bindings.
//!
//! JavaScript sees:
//! - `gpuInfo()`: the WebGPU adapter wgpu picks, its optional features and the limits that bound
//!   the model size (throws with a clear message when the browser has no WebGPU),
//! - `new ModelLoader(size)` + `push(chunk)` + `finish()`, or `Model.load(bytes)`: parses a GGUF
//!   (Q1_0 Bonsai / Qwen3) with its tokenizer and chat template; chunks go straight into wasm
//!   memory,
//! - `model.info()`, `model.tokenize()`, `model.detokenize()`, `model.isEog()`,
//!   `model.chatPrompt()`,
//! - `model.createChat(nCtx)`: uploads the weights to the GPU and returns a `Chat` (a GPU session
//!   with its KV cache plus the conversation): `chat.send(text, options, onPiece)` streams the
//!   reply (`onPiece(text, "thinking" | "answer")`, return `false` to stop), with sampling
//!   options, thinking switch, system prompt and timings; `chat.releaseGpu()` frees the GPU
//!   memory at once,
//! - `model.checkGpu(tensor)`: runs the library's Q1_0 matvec kernel on one of the model's weights
//!   on the WebGPU device and compares it with the CPU reference (a self-test of the browser GPU).
//!
//! Results are plain JavaScript objects (built from JSON), errors are `Error`s whose message
//! names the failing key, tensor or limit.

use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use wasm_bindgen::prelude::*;

use crate::chat::{Conversation, PieceKind};
use crate::chat_template::{ChatMessage, ChatTemplate, TemplateOptions};
use crate::config::Qwen3Config;
use crate::engine::Engine;
use crate::generate::{GenerateOptions, StopReason};
use crate::gguf::{GgmlType, Gguf};
use crate::gpu::context::{GpuContext, GpuOptions};
use crate::gpu::op::{
    PipelineCache, read_buffer, storage_buffer, storage_buffer_init, submit_kernels,
};
use crate::gpu::ops::matvec_q1_0::{self, MatvecOptions, MatvecQ1_0};
use crate::gpu::q1_0::Q1_0Weight;
use crate::gpu::{GpuModel, Session, SessionOptions};
use crate::sampler::SamplerConfig;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Largest |GPU - CPU| / (1 + |CPU|) accepted by [`Model::check_gpu`]: both sum the same f32
/// products in a different order.
const MATVEC_REL_TOL: f32 = 1e-4;

#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("bonsai-wgpu panicked: {info}").into());
    }));
}

fn js_err(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

/// Turns a serde value into a plain JavaScript object.
fn to_js(value: &serde_json::Value) -> std::result::Result<JsValue, JsError> {
    js_sys::JSON::parse(&value.to_string())
        .map_err(|_| JsError::new("JSON.parse of a result failed"))
}

fn context_json(ctx: &GpuContext) -> serde_json::Value {
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
type LostFlag = Arc<Mutex<Option<String>>>;

// wgpu's browser handles are neither Send nor Sync, but GpuModel::load takes an Arc.
#[allow(clippy::arc_with_non_send_sync)]
async fn webgpu_context() -> Result<(Arc<GpuContext>, LostFlag)> {
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
            *slot = Some(format!("device lost ({reason:?}): {message}"));
        }
    });
    Ok((Arc::new(ctx), lost))
}

fn check_lost(lost: &LostFlag) -> Result<()> {
    match lost.lock().ok().and_then(|l| l.clone()) {
        Some(msg) => Err(Error::Gpu(msg)),
        None => Ok(()),
    }
}

/// Describes the WebGPU adapter and device that the model would run on.
#[wasm_bindgen(js_name = gpuInfo)]
pub async fn gpu_info() -> std::result::Result<JsValue, JsError> {
    let (ctx, _) = webgpu_context().await.map_err(js_err)?;
    to_js(&context_json(&ctx))
}

/// Collects a GGUF file chunk by chunk straight into wasm memory (a download or `File.stream()`
/// never needs a second full copy in JavaScript), then parses it with [`ModelLoader::finish`].
#[wasm_bindgen]
pub struct ModelLoader {
    bytes: Vec<u8>,
}

#[wasm_bindgen]
impl ModelLoader {
    /// `expected` bytes are reserved up front (0 if unknown), so running out of wasm memory is
    /// reported before the download starts.
    #[wasm_bindgen(constructor)]
    pub fn new(expected: f64) -> std::result::Result<ModelLoader, JsError> {
        let mut bytes = Vec::new();
        if expected > 0.0 {
            bytes.try_reserve_exact(expected as usize).map_err(|_| {
                JsError::new(&format!(
                    "out of memory: cannot reserve {:.0} MiB of WebAssembly memory for the model \
                     (wasm32 tops out at 4 GiB, browsers often lower)",
                    expected / 1048576.0
                ))
            })?;
        }
        Ok(ModelLoader { bytes })
    }

    /// Appends a chunk.
    pub fn push(&mut self, chunk: &[u8]) -> std::result::Result<(), JsError> {
        self.bytes.try_reserve(chunk.len()).map_err(|_| {
            JsError::new(&format!(
                "out of memory after {} MiB of the model: the file does not fit in WebAssembly memory",
                self.bytes.len() >> 20
            ))
        })?;
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// Bytes received so far.
    #[wasm_bindgen(getter)]
    pub fn loaded(&self) -> f64 {
        self.bytes.len() as f64
    }

    /// Parses what was pushed (consumes the loader).
    pub fn finish(self) -> std::result::Result<Model, JsError> {
        Model::load(self.bytes)
    }
}

/// A Bonsai GGUF loaded in memory: weights, configuration, tokenizer, chat template.
#[wasm_bindgen]
pub struct Model {
    gguf: Arc<Gguf>,
    config: Qwen3Config,
    text: Rc<TextSide>,
    gpu: Option<(Arc<GpuContext>, LostFlag)>,
}

/// What a conversation borrows: the tokenizer and the chat template.
struct TextSide {
    tokenizer: Tokenizer,
    template: ChatTemplate,
}

#[derive(serde::Deserialize)]
struct JsMessage {
    role: String,
    content: String,
}

#[wasm_bindgen]
impl Model {
    /// Parses a GGUF file's bytes (the `Uint8Array` is copied into wasm memory).
    pub fn load(bytes: Vec<u8>) -> std::result::Result<Model, JsError> {
        let gguf = Gguf::from_bytes(bytes).map_err(js_err)?;
        let config = Qwen3Config::from_gguf(&gguf).map_err(js_err)?;
        config.validate_tensors(&gguf).map_err(js_err)?;
        let tokenizer = Tokenizer::from_gguf(&gguf).map_err(js_err)?;
        let template = ChatTemplate::from_gguf(&gguf).map_err(js_err)?;
        Ok(Model {
            gguf: Arc::new(gguf),
            config,
            text: Rc::new(TextSide {
                tokenizer,
                template,
            }),
            gpu: None,
        })
    }

    /// Architecture numbers and file facts.
    pub fn info(&self) -> std::result::Result<JsValue, JsError> {
        let c = &self.config;
        let weight_bytes: u64 = self.gguf.tensors().iter().map(|t| t.n_bytes).sum();
        let name = self
            .gguf
            .get("general.name")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        to_js(&serde_json::json!({
            "name": name,
            "nLayer": c.n_layer,
            "nEmbd": c.n_embd,
            "nFf": c.n_ff,
            "nHead": c.n_head,
            "nHeadKv": c.n_head_kv,
            "headDim": c.head_dim,
            "nVocab": c.n_vocab,
            "nCtxTrain": c.n_ctx_train,
            "tiedHead": c.tied_head,
            "nTensors": self.gguf.tensors().len(),
            "weightBytes": weight_bytes,
            "eosId": self.text.tokenizer.eos_id(),
        }))
    }

    /// Token ids of `text`; `parseSpecial` matches special tokens such as `<|im_start|>`.
    pub fn tokenize(
        &self,
        text: &str,
        parse_special: bool,
    ) -> std::result::Result<Vec<u32>, JsError> {
        self.text
            .tokenizer
            .encode(text, parse_special)
            .map_err(js_err)
    }

    /// Text of `ids` (special tokens kept).
    pub fn detokenize(&self, ids: Vec<u32>) -> std::result::Result<String, JsError> {
        self.text.tokenizer.decode(&ids, false).map_err(js_err)
    }

    /// Whether `id` ends generation (end of turn / end of text).
    #[wasm_bindgen(js_name = isEog)]
    pub fn is_eog(&self, id: u32) -> bool {
        self.text.tokenizer.is_eog(id)
    }

    /// The prompt text for `messages` (`[{role, content}]`) rendered by the model's template.
    #[wasm_bindgen(js_name = chatPrompt)]
    pub fn chat_prompt(
        &self,
        messages: JsValue,
        add_generation_prompt: bool,
        enable_thinking: bool,
    ) -> std::result::Result<String, JsError> {
        let json = js_sys::JSON::stringify(&messages)
            .map_err(|_| JsError::new("messages: not JSON-serialisable"))?;
        let parsed: Vec<JsMessage> = serde_json::from_str(&String::from(json))
            .map_err(|e| JsError::new(&format!("messages: expected [{{role, content}}]: {e}")))?;
        let messages: Vec<ChatMessage> = parsed
            .into_iter()
            .map(|m| ChatMessage::new(m.role, m.content))
            .collect();
        let opts = TemplateOptions {
            add_generation_prompt,
            enable_thinking,
            ..TemplateOptions::default()
        };
        self.text.template.render(&messages, &opts).map_err(js_err)
    }

    /// The WebGPU device (created on first use) as `gpuInfo()` describes it.
    #[wasm_bindgen(js_name = gpuInfo)]
    pub async fn model_gpu_info(&mut self) -> std::result::Result<JsValue, JsError> {
        let (ctx, _) = self.gpu().await.map_err(js_err)?;
        to_js(&context_json(&ctx))
    }

    /// Uploads the weights to the GPU and opens a chat with a KV cache of `n_ctx` tokens
    /// (capped by the model's context).
    #[wasm_bindgen(js_name = createChat)]
    pub async fn create_chat(&mut self, n_ctx: usize) -> std::result::Result<Chat, JsError> {
        let (ctx, lost) = self.gpu().await.map_err(js_err)?;
        let gpu_model = GpuModel::load(ctx.clone(), &self.gguf).map_err(js_err)?;
        let opts = SessionOptions {
            n_ctx: n_ctx.clamp(1, self.config.n_ctx_train),
            ..SessionOptions::default()
        };
        let session = Session::new(gpu_model, opts).map_err(js_err)?;
        // Uploads and pipeline creation report failures (out of memory, limits) asynchronously.
        ctx.take_error().map_err(js_err)?;
        check_lost(&lost).map_err(js_err)?;
        let text = self.text.clone();
        // SAFETY: `text` is kept alive by `Chat::_text`, declared after `conversation`, so the
        // conversation (dropped first) never outlives the tokenizer and template it borrows; an
        // `Rc`'s contents never move and are never mutated.
        let side: &'static TextSide = unsafe { &*Rc::as_ptr(&text) };
        Ok(Chat {
            conversation: Conversation::new(&side.tokenizer, &side.template),
            session,
            lost,
            _text: text,
        })
    }

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
    /// The model's WebGPU device, created on first use and again after a loss (driver reset,
    /// `Chat.releaseGpu()`): chats on the lost device fail, new ones get the new device.
    async fn gpu(&mut self) -> Result<(Arc<GpuContext>, LostFlag)> {
        if let Some(gpu) = &self.gpu
            && check_lost(&gpu.1).is_ok()
        {
            return Ok(gpu.clone());
        }
        let gpu = webgpu_context().await?;
        self.gpu = Some(gpu.clone());
        Ok(gpu)
    }

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

/// Sampling and length options as JavaScript passes them (camelCase, all optional).
#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsGenerateOptions {
    temperature: Option<f32>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    repeat_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    penalty_last_n: Option<usize>,
    seed: Option<u64>,
    max_tokens: Option<usize>,
    stop: Vec<String>,
}

impl JsGenerateOptions {
    fn parse(value: &JsValue) -> Result<GenerateOptions> {
        let o: JsGenerateOptions = if value.is_undefined() || value.is_null() {
            JsGenerateOptions::default()
        } else {
            let json = js_sys::JSON::stringify(value)
                .map_err(|_| Error::InvalidArgument("options: not JSON-serialisable".into()))?;
            serde_json::from_str(&String::from(json))
                .map_err(|e| Error::InvalidArgument(format!("options: {e}")))?
        };
        let d = SamplerConfig::default();
        let sampler = SamplerConfig {
            temperature: o.temperature.unwrap_or(d.temperature),
            top_k: o.top_k.unwrap_or(d.top_k),
            top_p: o.top_p.unwrap_or(d.top_p),
            min_p: o.min_p.unwrap_or(d.min_p),
            repeat_penalty: o.repeat_penalty.unwrap_or(d.repeat_penalty),
            presence_penalty: o.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: o.frequency_penalty.unwrap_or(d.frequency_penalty),
            penalty_last_n: o.penalty_last_n.unwrap_or(d.penalty_last_n),
            seed: o.seed.unwrap_or(d.seed),
        };
        Ok(GenerateOptions {
            sampler,
            max_tokens: o
                .max_tokens
                .unwrap_or(GenerateOptions::default().max_tokens),
            stop_strings: o.stop,
            cancel: None,
        })
    }
}

fn stop_reason_name(r: &StopReason) -> String {
    match r {
        StopReason::Eos => "eos".into(),
        StopReason::StopString(s) => format!("stop string {s:?}"),
        StopReason::MaxTokens => "max tokens".into(),
        StopReason::ContextFull => "context full".into(),
        StopReason::Cancelled => "stopped".into(),
    }
}

/// Milliseconds from the page's clock (`std::time::Instant` does not exist on wasm32).
fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// A conversation with a model on the GPU: the session (KV cache) and the chat history.
#[wasm_bindgen]
pub struct Chat {
    // Field order matters: `conversation` borrows from `_text` and is dropped before it.
    conversation: Conversation<'static>,
    session: Session,
    lost: LostFlag,
    _text: Rc<TextSide>,
}

#[wasm_bindgen]
impl Chat {
    /// Adds `text` as the user's message and streams the reply: `onPiece(text, kind)` with kind
    /// `"thinking"` or `"answer"`; returning `false` from it stops generation. Options (all
    /// optional): `temperature` (0 = greedy), `topK`, `topP`, `minP`, `repeatPenalty`,
    /// `presencePenalty`, `frequencyPenalty`, `penaltyLastN`, `seed`, `maxTokens`, `stop`.
    /// Resolves to `{ text, tokens, nPrompt, nGen, stopReason, promptMs, genMs, genTps }`;
    /// `promptMs` is the time to the first token (prompt processing plus one step).
    pub async fn send(
        &mut self,
        text: String,
        options: JsValue,
        on_piece: js_sys::Function,
    ) -> std::result::Result<JsValue, JsError> {
        check_lost(&self.lost).map_err(js_err)?;
        let opts = JsGenerateOptions::parse(&options).map_err(js_err)?;
        let start = now_ms();
        let mut first: Option<f64> = None;
        let mut callback_error = None;
        let result = self
            .conversation
            .send(&mut self.session, &text, &opts, |piece| {
                first.get_or_insert_with(now_ms);
                let kind = match piece.kind {
                    PieceKind::Thinking => "thinking",
                    PieceKind::Answer => "answer",
                };
                match on_piece.call2(&JsValue::NULL, &piece.text.into(), &kind.into()) {
                    Ok(v) if v.as_bool() == Some(false) => ControlFlow::Break(()),
                    Ok(_) => ControlFlow::Continue(()),
                    Err(e) => {
                        callback_error = Some(e);
                        ControlFlow::Break(())
                    }
                }
            })
            .await;
        // A lost device explains any failure better than the error it caused.
        check_lost(&self.lost).map_err(js_err)?;
        let outcome = result.map_err(js_err)?;
        if let Some(e) = callback_error {
            return Err(JsError::new(&format!(
                "onPiece threw: {}",
                e.as_string().unwrap_or_else(|| format!("{e:?}"))
            )));
        }
        let end = now_ms();
        let first = first.unwrap_or(end);
        let gen_ms = end - first;
        let gen_tps = if gen_ms > 0.0 && outcome.n_gen > 1 {
            (outcome.n_gen - 1) as f64 * 1000.0 / gen_ms
        } else {
            0.0
        };
        to_js(&serde_json::json!({
            "text": outcome.text,
            "tokens": outcome.tokens,
            "nPrompt": outcome.n_prompt,
            "nGen": outcome.n_gen,
            "stopReason": stop_reason_name(&outcome.stop_reason),
            "promptMs": first - start,
            "genMs": gen_ms,
            "genTps": gen_tps,
        }))
    }

    /// Sets the system prompt (empty removes it); applies from the next message.
    #[wasm_bindgen(js_name = setSystem)]
    pub fn set_system(&mut self, system: String) {
        self.conversation.set_system(Some(system));
    }

    /// Turns Qwen3 thinking on or off for the next replies.
    #[wasm_bindgen(js_name = setThinking)]
    pub fn set_thinking(&mut self, on: bool) {
        self.conversation.set_thinking(on);
    }

    /// Forgets the conversation and empties the KV cache.
    pub fn reset(&mut self) {
        self.conversation.clear();
        self.session.reset();
    }

    /// Frees the GPU memory (weights, KV cache) now by destroying the WebGPU device, instead of
    /// whenever the garbage collector gets to it. The device is the model's, shared by every chat
    /// the model created: those chats then fail with a "GPU: device lost" error, and the model's
    /// next `createChat` opens a new device. Call `free()` on the chat afterwards.
    #[wasm_bindgen(js_name = releaseGpu)]
    pub fn release_gpu(&mut self) {
        self.session.model().ctx.device.destroy();
    }

    /// Tokens in the KV cache.
    #[wasm_bindgen(getter, js_name = nPast)]
    pub fn n_past(&self) -> usize {
        self.session.n_past()
    }

    /// KV cache capacity in tokens.
    #[wasm_bindgen(getter, js_name = nCtx)]
    pub fn n_ctx(&self) -> usize {
        self.session.n_ctx()
    }

    /// The memory plan the session was checked against (weights, KV cache, activations, scratch,
    /// and the device's binding limit), one line.
    #[wasm_bindgen(getter, js_name = memoryPlan)]
    pub fn memory_plan(&self) -> String {
        let limits = crate::gpu::memory_plan::MemoryLimits::of(&self.session.model().ctx);
        self.session.memory_plan().describe(&limits)
    }
}
