//! Chats on the GPU: `model.createChat(nCtx, cacheType)` uploads the weights and opens a session
//! with its KV cache; `chat.send` streams a reply through the library's [`Conversation`].

use std::ops::ControlFlow;

use wasm_bindgen::prelude::*;

use super::loader::Model;
use super::{LostFlag, check_lost, js_err, to_js};
use crate::cache_type::CacheType;
use crate::chat::{Conversation, PieceKind};
use crate::engine::Engine;
use crate::generate::{GenerateOptions, StopReason};
use crate::gpu::{GpuModel, Session, SessionOptions};
use crate::sampler::SamplerConfig;
use crate::{Error, Result};

#[wasm_bindgen]
impl Model {
    /// Uploads the weights to the GPU and opens a chat with a KV cache of `n_ctx` tokens
    /// (capped by the model's context) stored as `cache_type`: `"f16"` or `"q8_0"`
    /// ([`CacheType`]; omitted, `undefined` or `null`: the library's default). Any other string
    /// is an error naming it, thrown before anything is uploaded; so is a context the memory
    /// plan cannot fit (the message names the largest that fits).
    #[wasm_bindgen(js_name = createChat)]
    pub async fn create_chat(
        &mut self,
        n_ctx: usize,
        cache_type: Option<String>,
    ) -> std::result::Result<Chat, JsError> {
        let cache_type = match cache_type.as_deref() {
            None => CacheType::default(),
            Some(name) => name.parse().map_err(js_err)?,
        };
        let (ctx, lost) = self.gpu().await.map_err(js_err)?;
        let gpu_model = GpuModel::load(ctx.clone(), &self.gguf).map_err(js_err)?;
        let opts = SessionOptions {
            n_ctx: n_ctx.clamp(1, self.config.n_ctx_train),
            cache_type,
            ..SessionOptions::default()
        };
        let session = Session::new(gpu_model, opts).map_err(js_err)?;
        // Uploads and pipeline creation report failures (out of memory, limits) asynchronously.
        ctx.take_error().map_err(js_err)?;
        check_lost(&lost).map_err(js_err)?;
        Ok(Chat {
            conversation: Conversation::new(self.tokenizer.clone(), self.template.clone()),
            session,
            lost,
        })
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
    conversation: Conversation,
    session: Session,
    lost: LostFlag,
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

    /// How the KV cache stores K and V: `"f16"` or `"q8_0"`.
    #[wasm_bindgen(getter, js_name = cacheType)]
    pub fn cache_type(&self) -> String {
        self.session.memory_plan().cache_type.name().into()
    }

    /// The memory plan the session was checked against (weights, KV cache, activations, scratch,
    /// and the device's binding limit), one line.
    #[wasm_bindgen(getter, js_name = memoryPlan)]
    pub fn memory_plan(&self) -> String {
        let limits = crate::gpu::memory_plan::MemoryLimits::of(&self.session.model().ctx);
        self.session.memory_plan().describe(&limits)
    }
}
