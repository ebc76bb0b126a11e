//! OpenAI-compatible request bodies: untrusted bytes in, a checked request or an
//! [`Error::BadRequest`] naming the field out. `bonsai-server` answers `/v1/chat/completions`,
//! `/v1/completions`, `/tokenize` and `/detokenize` with these; the HTTP side (status codes, the
//! OpenAI error object, responses) stays in the binary, so this builds without it (wasm32, the
//! fuzz target `server_request`).
//!
//! What the checks guarantee (fuzzed, see `fuzz/`): any bytes give `Ok` or `BadRequest`, never a
//! panic; JSON nesting is bounded by serde_json's recursion limit (128); every number that sizes
//! or steers generation is range-checked here: sampling parameters finite and in range,
//! `max_tokens >= 1`, at most [`MAX_STOP_STRINGS`] stop strings, one choice, known roles, text-only
//! content. Memory is a small multiple of the body, which the server caps (`--max-body`).

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::sampler::SamplerConfig;
use crate::text::chat_template::{ChatMessage, TemplateOptions};

/// Most stop strings per request.
pub const MAX_STOP_STRINGS: usize = 16;

/// A `BadRequest` about `param` (or the request as a whole).
fn bad(param: Option<&str>, message: impl Into<String>) -> Error {
    Error::BadRequest {
        param: param.map(str::to_string),
        message: message.into(),
    }
}

/// Parses a JSON body; errors name the field (`messages[0].content: invalid type ...`).
///
/// The body must be a JSON object: serde's derived structs would also take an array, field by
/// field in declaration order (`[null, "hi"]` as a prompt), which no client means.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => bad(None, "The request body must be a JSON object"),
                Err(e) => bad(None, format!("Malformed JSON in the request body: {e}")),
            },
        );
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            bad(None, format!("Malformed JSON in the request body: {inner}"))
        } else if path == "." {
            // About the object as a whole: a missing field.
            bad(None, format!("The request body: {inner}"))
        } else {
            bad(Some(&path), format!("{path}: {inner}"))
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

/// A checked `/v1/completions` prompt: one text to tokenize, or token ids to check against the
/// vocabulary ([`check_prompt_tokens`]).
#[derive(Debug, PartialEq)]
pub enum PromptInput<'a> {
    /// Text (not empty).
    Text(&'a str),
    /// Token ids (not empty).
    Tokens(&'a [u32]),
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

/// Qwen3 thinking mode from `chat_template_kwargs` (default on).
fn enable_thinking(kwargs: Option<&TemplateKwargs>) -> bool {
    kwargs.and_then(|k| k.enable_thinking).unwrap_or(true)
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
    /// Random seed (default: the caller's).
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
    /// Most tokens to sample (`None`: until the context is full); at least 1.
    pub max_tokens: Option<usize>,
    /// Stop strings (at most [`MAX_STOP_STRINGS`]).
    pub stop: Vec<String>,
    /// Stream SSE.
    pub stream: bool,
    /// Final usage chunk when streaming.
    pub include_usage: bool,
}

fn check_range(name: &str, value: Option<f32>, lo: f32, hi: f32) -> Result<()> {
    match value {
        Some(v) if !(v.is_finite() && (lo..=hi).contains(&v)) => Err(bad(
            Some(name),
            format!("{name} must be between {lo} and {hi}, got {v}"),
        )),
        _ => Ok(()),
    }
}

impl GenerationRequest {
    /// The checked generation parameters; `default_seed` seeds sampling when the request names
    /// no `seed` (the server passes the clock; the library never reads it: wasm32 has none).
    pub fn params(&self, default_seed: u64) -> Result<Params> {
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(bad(
                Some("n"),
                format!("n must be 1 (one choice per request), got {n}"),
            ));
        }
        if self.echo == Some(true) {
            return Err(bad(Some("echo"), "echo is not supported"));
        }
        if self
            .logprobs
            .as_ref()
            .is_some_and(|v| !v.is_null() && *v != json!(false))
        {
            return Err(bad(Some("logprobs"), "logprobs are not supported"));
        }
        if self
            .tools
            .as_ref()
            .is_some_and(|v| !v.is_null() && *v != json!([]))
        {
            return Err(bad(Some("tools"), "tools are not supported"));
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
            return Err(bad(Some(name), format!("{name} must be at least 1")));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOP_STRINGS {
            return Err(bad(
                Some("stop"),
                format!(
                    "at most {MAX_STOP_STRINGS} stop strings, got {}",
                    stop.len()
                ),
            ));
        }
        let d = SamplerConfig::default();
        let sampler = SamplerConfig {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.map_or(d.top_k, |k| k.max(0) as usize),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            // A negative seed is as good a seed as any: keep its bits.
            seed: self.seed.map_or(default_seed, |s| s as u64),
            ..d
        };
        let stream = self.stream.unwrap_or(false);
        Ok(Params {
            sampler,
            max_tokens: max_tokens.map(|(_, n)| usize::try_from(n).unwrap_or(usize::MAX)),
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

    /// The chat template options `/v1/chat/completions` renders with: end with the assistant
    /// prompt, thinking as `chat_template_kwargs` says, no tools.
    pub fn template_options(&self) -> TemplateOptions {
        TemplateOptions {
            add_generation_prompt: true,
            enable_thinking: enable_thinking(self.chat_template_kwargs.as_ref()),
            tools: None,
        }
    }

    /// The messages for the chat template, checked.
    pub fn chat_messages(&self) -> Result<Vec<ChatMessage>> {
        chat_messages(self.messages.as_deref())
    }

    /// The `/v1/completions` prompt, checked: present, one text or token ids, not empty.
    pub fn prompt(&self) -> Result<PromptInput<'_>> {
        let prompt = match &self.prompt {
            None => return Err(bad(Some("prompt"), "prompt is required")),
            Some(Prompt::Text(text)) => PromptInput::Text(text),
            Some(Prompt::Texts(texts)) if texts.len() == 1 => PromptInput::Text(&texts[0]),
            Some(Prompt::Texts(texts)) => {
                return Err(bad(
                    Some("prompt"),
                    format!("prompt must hold exactly one text, got {}", texts.len()),
                ));
            }
            Some(Prompt::Tokens(tokens)) => PromptInput::Tokens(tokens),
        };
        match prompt {
            PromptInput::Text("") | PromptInput::Tokens([]) => {
                Err(bad(Some("prompt"), "prompt must not be empty"))
            }
            _ => Ok(prompt),
        }
    }
}

/// Checks a completions prompt's tokens (given, or from the text): not empty, every id below
/// `n_vocab`.
pub fn check_prompt_tokens(tokens: &[u32], n_vocab: usize) -> Result<()> {
    if tokens.is_empty() {
        return Err(bad(Some("prompt"), "prompt must not be empty"));
    }
    if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(bad(
            Some("prompt"),
            format!("token {id} is outside the vocabulary of {n_vocab}"),
        ));
    }
    Ok(())
}

/// The messages for the chat template, checked: present, not empty, known roles (`developer`
/// becomes `system`), text content (parts joined), content required except for an assistant.
pub fn chat_messages(messages: Option<&[Message]>) -> Result<Vec<ChatMessage>> {
    let Some(messages) = messages else {
        return Err(bad(Some("messages"), "messages is required"));
    };
    if messages.is_empty() {
        return Err(bad(Some("messages"), "messages must not be empty"));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" | "assistant" => m.role.as_str(),
            other => {
                return Err(bad(
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
                return Err(bad(
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
                            return Err(bad(
                                Some(&format!("messages[{i}].content[{j}]")),
                                format!(
                                    "messages[{i}].content[{j}]: only parts of type \"text\" \
                                     with a \"text\" field are supported"
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

/// The body of `/tokenize`: `content` (text), or `messages` rendered by the chat template
/// exactly as `/v1/chat/completions` renders them (vLLM's form).
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    /// Text to tokenize.
    pub content: Option<String>,
    /// Parse control tokens written in `content` (default false: they stay text).
    pub parse_special: Option<bool>,
    /// Chat messages to render and tokenize.
    pub messages: Option<Vec<Message>>,
    /// With `messages`: end with the assistant prompt (default true).
    pub add_generation_prompt: Option<bool>,
    /// Template switches.
    pub chat_template_kwargs: Option<TemplateKwargs>,
}

/// What a checked `/tokenize` request tokenizes.
#[derive(Debug)]
pub enum TokenizeInput<'a> {
    /// Text, with control tokens parsed or not.
    Text {
        /// The text.
        content: &'a str,
        /// Parse control tokens written in it.
        parse_special: bool,
    },
    /// Checked chat messages and the options to render them with.
    Chat {
        /// The messages.
        messages: Vec<ChatMessage>,
        /// The template options.
        options: TemplateOptions,
    },
}

impl TokenizeRequest {
    /// The checked input: exactly one of `content` and `messages`.
    pub fn input(&self) -> Result<TokenizeInput<'_>> {
        match (&self.content, &self.messages) {
            (Some(content), None) => Ok(TokenizeInput::Text {
                content,
                parse_special: self.parse_special.unwrap_or(false),
            }),
            (None, Some(messages)) => Ok(TokenizeInput::Chat {
                messages: chat_messages(Some(messages))?,
                options: TemplateOptions {
                    add_generation_prompt: self.add_generation_prompt.unwrap_or(true),
                    enable_thinking: enable_thinking(self.chat_template_kwargs.as_ref()),
                    tools: None,
                },
            }),
            _ => Err(bad(
                Some("content"),
                "give either content (text) or messages",
            )),
        }
    }
}

/// The body of `/detokenize`.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    /// Token ids.
    pub tokens: Vec<u32>,
}

impl DetokenizeRequest {
    /// The token ids, checked: every one below `n_vocab`.
    pub fn checked_tokens(&self, n_vocab: usize) -> Result<&[u32]> {
        match self
            .tokens
            .iter()
            .enumerate()
            .find(|&(_, &t)| t as usize >= n_vocab)
        {
            Some((i, id)) => Err(bad(
                Some(&format!("tokens[{i}]")),
                format!("token {id} is outside the vocabulary of {n_vocab}"),
            )),
            None => Ok(&self.tokens),
        }
    }
}
