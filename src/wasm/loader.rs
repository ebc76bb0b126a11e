//! Loading a model in the browser: the GGUF bytes (streamed into wasm memory), the config,
//! tokenizer and chat template, and the model's WebGPU device.

use std::sync::Arc;

use wasm_bindgen::prelude::*;

use super::{LostFlag, check_lost, context_json, js_err, to_js, webgpu_context};
use crate::Result;
use crate::gguf::Gguf;
use crate::gpu::context::GpuContext;
use crate::model::config::Qwen3Config;
use crate::text::chat_template::{ChatMessage, ChatTemplate, TemplateOptions};
use crate::text::tokenizer::Tokenizer;

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
    pub(super) gguf: Arc<Gguf>,
    pub(super) config: Qwen3Config,
    /// Shared with every chat's conversation.
    pub(super) tokenizer: Arc<Tokenizer>,
    /// Shared with every chat's conversation.
    pub(super) template: Arc<ChatTemplate>,
    gpu: Option<(Arc<GpuContext>, LostFlag)>,
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
            tokenizer: Arc::new(tokenizer),
            template: Arc::new(template),
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
            "eosId": self.tokenizer.eos_id(),
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
        self.tokenizer.decode(&ids, false).map_err(js_err)
    }

    /// Whether `id` ends generation (end of turn / end of text).
    #[wasm_bindgen(js_name = isEog)]
    pub fn is_eog(&self, id: u32) -> bool {
        self.tokenizer.is_eog(id)
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
        self.template.render(&messages, &opts).map_err(js_err)
    }

    /// The WebGPU device (created on first use) as `gpuInfo()` describes it.
    #[wasm_bindgen(js_name = gpuInfo)]
    pub async fn model_gpu_info(&mut self) -> std::result::Result<JsValue, JsError> {
        let (ctx, _) = self.gpu().await.map_err(js_err)?;
        to_js(&context_json(&ctx))
    }
}

impl Model {
    /// The model's WebGPU device, created on first use and again after a loss (driver reset,
    /// `Chat.releaseGpu()`): chats on the lost device fail, new ones get the new device.
    pub(super) async fn gpu(&mut self) -> Result<(Arc<GpuContext>, LostFlag)> {
        if let Some(gpu) = &self.gpu
            && check_lost(&gpu.1).is_ok()
        {
            return Ok(gpu.clone());
        }
        let gpu = webgpu_context().await?;
        self.gpu = Some(gpu.clone());
        Ok(gpu)
    }
}
