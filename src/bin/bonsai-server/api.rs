//! OpenAI request bodies, their checks, and the OpenAI error object.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bonsai_wgpu::generate::StopReason;
use bonsai_wgpu::sampler::SamplerConfig;
use bonsai_wgpu::scheduler::Finish;
use bonsai_wgpu::text::chat_template::ChatMessage;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Most stop strings per request.
const MAX_STOP_STRINGS: usize = 16;
/// Seconds a client told "queue full" is asked to wait.
const RETRY_AFTER_S: u64 = 1;

/// An error answered as OpenAI does: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ApiError {
    /// 400 about `param` (or the request as a whole).
    pub fn bad(param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    /// 401: no or a wrong API key.
    pub fn unauthorized(given: bool) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: if given {
                "Incorrect API key provided.".into()
            } else {
                "Missing API key: send the header `Authorization: Bearer KEY`.".into()
            },
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// 413: the body is larger than `limit` bytes.
    pub fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("The request body is larger than the limit of {limit} bytes."),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// 503 with `Retry-After`: every slot is busy and the queue is full.
    pub fn busy(queue: usize) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "The server is busy: every slot is in use and {queue} requests are queued. \
                 Retry later."
            ),
            kind: "server_error",
            param: None,
            code: Some("queue_full"),
        }
    }

    /// 404: no such endpoint.
    pub fn not_found(path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("There is no endpoint {path}."),
            kind: "invalid_request_error",
            param: None,
            code: Some("not_found"),
        }
    }

    /// 500 for a failure on our side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// The error object alone (also sent as an SSE event when a stream fails).
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
        }
        response
    }
}

impl From<bonsai_wgpu::Error> for ApiError {
    fn from(e: bonsai_wgpu::Error) -> Self {
        match e {
            bonsai_wgpu::Error::ContextOverflow { needed, capacity } => {
                prompt_too_long(needed, capacity)
            }
            bonsai_wgpu::Error::ChatTemplate(m) => ApiError::bad(
                Some("messages"),
                format!("the chat template rejected the messages: {m}"),
            ),
            bonsai_wgpu::Error::BadToken { id, n_vocab } => ApiError::bad(
                Some("prompt"),
                format!("token {id} is outside the vocabulary of {n_vocab}"),
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// 400 for a prompt of `n` tokens in a context of `n_ctx`.
pub fn prompt_too_long(n: usize, n_ctx: usize) -> ApiError {
    ApiError::bad(
        Some("messages"),
        format!("The prompt is {n} tokens long, more than the context of {n_ctx} tokens per slot."),
    )
}

/// Parses a JSON body; errors name the field (`messages[0].content: invalid type ...`).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad(None, format!("Malformed JSON in the request body: {inner}"))
        } else if path == "." {
            ApiError::bad(
                None,
                format!("The request body must be a JSON object: {inner}"),
            )
        } else {
            ApiError::bad(Some(&path), format!("{path}: {inner}"))
        }
    })
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `/v1/completions`' `prompt`: text, a list of one text, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
    /// A list of texts (only one is supported).
    Texts(Vec<String>),
}

/// A message's content: a string or a list of `{"type": "text", "text": ...}` parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts.
    Parts(Vec<Part>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub struct Part {
    /// Only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `developer` (treated as system), `user` or `assistant`.
    pub role: String,
    /// The text (may be null for an assistant).
    pub content: Option<Content>,
    /// An assistant turn's thinking, as `/v1/chat/completions` returns it.
    pub reasoning_content: Option<String>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage`.
    pub include_usage: Option<bool>,
}

/// `chat_template_kwargs`.
#[derive(Debug, Default, Deserialize)]
pub struct TemplateKwargs {
    /// Qwen3 thinking mode (default on).
    pub enable_thinking: Option<bool>,
}

/// The body of `/v1/chat/completions` and `/v1/completions`. Unknown fields, `model` among
/// them (the server runs one model), are ignored.
#[derive(Debug, Deserialize)]
pub struct GenerationRequest {
    /// Chat messages (`/v1/chat/completions`).
    pub messages: Option<Vec<Message>>,
    /// Raw prompt (`/v1/completions`).
    pub prompt: Option<Prompt>,
    /// Most tokens to generate.
    pub max_tokens: Option<u64>,
    /// Newer name of `max_tokens`.
    pub max_completion_tokens: Option<u64>,
    /// Softmax temperature (0: greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k (0 or less: off).
    pub top_k: Option<i64>,
    /// Min-p.
    pub min_p: Option<f32>,
    /// OpenAI presence penalty.
    pub presence_penalty: Option<f32>,
    /// OpenAI frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// llama.cpp repetition penalty.
    pub repeat_penalty: Option<f32>,
    /// Random seed (default: from the clock).
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Option<OneOrMany>,
    /// Stream server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Template switches.
    pub chat_template_kwargs: Option<TemplateKwargs>,
    /// Number of choices (only 1).
    pub n: Option<i64>,
    /// Completions: echo the prompt (not supported).
    pub echo: Option<bool>,
    /// Log probabilities (not supported).
    pub logprobs: Option<Value>,
    /// Tools (not supported).
    pub tools: Option<Value>,
}

/// What a request asks of the scheduler, checked.
#[derive(Debug)]
pub struct Params {
    /// Sampling.
    pub sampler: SamplerConfig,
    /// Most tokens to sample (`None`: until the context is full).
    pub max_tokens: Option<usize>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Stream SSE.
    pub stream: bool,
    /// Final usage chunk when streaming.
    pub include_usage: bool,
}

fn check_range(name: &str, value: Option<f32>, lo: f32, hi: f32) -> Result<(), ApiError> {
    match value {
        Some(v) if !(v.is_finite() && (lo..=hi).contains(&v)) => Err(ApiError::bad(
            Some(name),
            format!("{name} must be between {lo} and {hi}, got {v}"),
        )),
        _ => Ok(()),
    }
}

impl GenerationRequest {
    /// The checked generation parameters.
    pub fn params(&self) -> Result<Params, ApiError> {
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::bad(
                Some("n"),
                format!("n must be 1 (one choice per request), got {n}"),
            ));
        }
        if self.echo == Some(true) {
            return Err(ApiError::bad(Some("echo"), "echo is not supported"));
        }
        if self
            .logprobs
            .as_ref()
            .is_some_and(|v| !v.is_null() && *v != json!(false))
        {
            return Err(ApiError::bad(
                Some("logprobs"),
                "logprobs are not supported",
            ));
        }
        if self
            .tools
            .as_ref()
            .is_some_and(|v| !v.is_null() && *v != json!([]))
        {
            return Err(ApiError::bad(Some("tools"), "tools are not supported"));
        }
        check_range("temperature", self.temperature, 0.0, 100.0)?;
        check_range("top_p", self.top_p, 0.0, 1.0)?;
        check_range("min_p", self.min_p, 0.0, 1.0)?;
        check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        check_range("repeat_penalty", self.repeat_penalty, 0.01, 100.0)?;
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(n), _) => Some(("max_completion_tokens", n)),
            (None, Some(n)) => Some(("max_tokens", n)),
            (None, None) => None,
        };
        if let Some((name, 0)) = max_tokens {
            return Err(ApiError::bad(
                Some(name),
                format!("{name} must be at least 1"),
            ));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOP_STRINGS {
            return Err(ApiError::bad(
                Some("stop"),
                format!(
                    "at most {MAX_STOP_STRINGS} stop strings, got {}",
                    stop.len()
                ),
            ));
        }
        let d = SamplerConfig::default();
        let seed = match self.seed {
            Some(s) => s as u64,
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.as_nanos() as u64),
        };
        let sampler = SamplerConfig {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.map_or(d.top_k, |k| k.max(0) as usize),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            seed,
            ..d
        };
        let stream = self.stream.unwrap_or(false);
        Ok(Params {
            sampler,
            max_tokens: max_tokens.map(|(_, n)| n.min(usize::MAX as u64) as usize),
            stop,
            stream,
            include_usage: stream
                && self
                    .stream_options
                    .as_ref()
                    .and_then(|o| o.include_usage)
                    .unwrap_or(false),
        })
    }

    /// Qwen3 thinking mode.
    pub fn enable_thinking(&self) -> bool {
        self.chat_template_kwargs
            .as_ref()
            .and_then(|k| k.enable_thinking)
            .unwrap_or(true)
    }

    /// The messages for the chat template, checked.
    pub fn chat_messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        chat_messages(self.messages.as_deref())
    }
}

/// The messages for the chat template, checked.
pub fn chat_messages(messages: Option<&[Message]>) -> Result<Vec<ChatMessage>, ApiError> {
    {
        let Some(messages) = messages else {
            return Err(ApiError::bad(Some("messages"), "messages is required"));
        };
        if messages.is_empty() {
            return Err(ApiError::bad(
                Some("messages"),
                "messages must not be empty",
            ));
        }
        let mut out = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" | "assistant" => m.role.as_str(),
                other => {
                    return Err(ApiError::bad(
                        Some(&format!("messages[{i}].role")),
                        format!(
                            "messages[{i}].role must be system, developer, user or assistant, \
                             got {other:?}"
                        ),
                    ));
                }
            };
            let content = match &m.content {
                None if role == "assistant" => String::new(),
                None => {
                    return Err(ApiError::bad(
                        Some(&format!("messages[{i}].content")),
                        format!("messages[{i}].content is required for role {role}"),
                    ));
                }
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => text.push_str(t),
                            _ => {
                                return Err(ApiError::bad(
                                    Some(&format!("messages[{i}].content[{j}]")),
                                    format!(
                                        "messages[{i}].content[{j}]: only parts of type \
                                         \"text\" with a \"text\" field are supported"
                                    ),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            let mut message = ChatMessage::new(role, content);
            message.reasoning_content = m.reasoning_content.clone();
            out.push(message);
        }
        Ok(out)
    }
}

/// OpenAI's `finish_reason` for a finished request.
pub fn finish_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        StopReason::Eos | StopReason::StopString(_) | StopReason::Cancelled => "stop",
    }
}

/// The `usage` object.
pub fn usage(f: &Finish) -> Value {
    json!({
        "prompt_tokens": f.n_prompt,
        "completion_tokens": f.n_gen,
        "total_tokens": f.n_prompt + f.n_gen,
        "prompt_tokens_details": {"cached_tokens": f.n_cached},
    })
}
