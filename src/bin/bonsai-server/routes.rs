//! The HTTP endpoints.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bonsai_wgpu::text::chat_template::TemplateOptions;
use bonsai_wgpu::text::prompt::chat_prompt_tokens;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::api::{
    ApiError, GenerationRequest, Message, Prompt, TemplateKwargs, chat_messages, parse,
    prompt_too_long,
};
use crate::metrics;
use crate::stream::{Mode, submit};

type Shared = State<Arc<AppState>>;

/// Every endpoint, behind the API-key check and the body limit.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Counts the request; with `--api-key`, answers 401 unless `Authorization: Bearer KEY`.
async fn auth(State(state): Shared, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    state.http.count(&path);
    if let Some(key) = &state.api_key
        && path != "/health"
    {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
        if given != Some(key.as_str()) {
            state.http.unauthorized.fetch_add(1, Ordering::Relaxed);
            return ApiError::unauthorized(given.is_some()).into_response();
        }
    }
    next.run(request).await
}

/// The body bytes, or 413 / 400.
fn body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.max_body)
        } else {
            ApiError::bad(
                None,
                format!("Could not read the request body: {}", e.body_text()),
            )
        }
    })
}

async fn chat(
    State(state): Shared,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: GenerationRequest = parse(&body(&state, raw)?)?;
    let params = request.params()?;
    let messages = request.chat_messages()?;
    let options = TemplateOptions {
        add_generation_prompt: true,
        enable_thinking: request.enable_thinking(),
        tools: None,
    };
    let prompt = chat_prompt_tokens(&state.template, &state.tokenizer, &messages, &options)?;
    if prompt.len() > state.n_ctx {
        return Err(prompt_too_long(prompt.len(), state.n_ctx));
    }
    let job = submit(&state, prompt, &params, Mode::Chat)?;
    if params.stream {
        Ok(job.sse(params.include_usage).into_response())
    } else {
        Ok(Json(job.collect().await?).into_response())
    }
}

async fn completions(
    State(state): Shared,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: GenerationRequest = parse(&body(&state, raw)?)?;
    let params = request.params()?;
    let prompt = match &request.prompt {
        None => return Err(ApiError::bad(Some("prompt"), "prompt is required")),
        Some(Prompt::Text(text)) => state.tokenizer.encode(text, true)?,
        Some(Prompt::Texts(texts)) if texts.len() == 1 => {
            state.tokenizer.encode(&texts[0], true)?
        }
        Some(Prompt::Texts(texts)) => {
            return Err(ApiError::bad(
                Some("prompt"),
                format!("prompt must hold exactly one text, got {}", texts.len()),
            ));
        }
        Some(Prompt::Tokens(tokens)) => tokens.clone(),
    };
    if prompt.is_empty() {
        return Err(ApiError::bad(Some("prompt"), "prompt must not be empty"));
    }
    let n_vocab = state.tokenizer.n_vocab();
    if let Some(&id) = prompt.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(ApiError::bad(
            Some("prompt"),
            format!("token {id} is outside the vocabulary of {n_vocab}"),
        ));
    }
    if prompt.len() > state.n_ctx {
        return Err(prompt_too_long(prompt.len(), state.n_ctx));
    }
    let job = submit(&state, prompt, &params, Mode::Completion)?;
    if params.stream {
        Ok(job.sse(params.include_usage).into_response())
    } else {
        Ok(Json(job.collect().await?).into_response())
    }
}

async fn models(State(state): Shared) -> Json<serde_json::Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_id,
            "object": "model",
            "created": state.created,
            "owned_by": "bonsai-wgpu",
            "meta": {
                "n_ctx_slot": state.n_ctx,
                "n_slots": state.n_slots,
                "n_vocab": state.tokenizer.n_vocab(),
                "engine": state.engine,
            },
        }],
    }))
}

async fn health(State(state): Shared) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "slots_idle": state.n_slots.saturating_sub(state.stats.active.load(Ordering::SeqCst)),
        "slots_processing": state.stats.active.load(Ordering::SeqCst),
    }))
}

async fn metrics_text(State(state): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&state),
    )
        .into_response()
}

/// `/tokenize`: `content` (text), or `messages` rendered by the chat template exactly as
/// `/v1/chat/completions` renders them (vLLM's form).
#[derive(Deserialize)]
struct TokenizeRequest {
    content: Option<String>,
    /// Parse control tokens written in `content` (default false: they stay text).
    parse_special: Option<bool>,
    messages: Option<Vec<Message>>,
    /// With `messages`: end with the assistant prompt (default true).
    add_generation_prompt: Option<bool>,
    chat_template_kwargs: Option<TemplateKwargs>,
}

async fn tokenize(
    State(state): Shared,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: TokenizeRequest = parse(&body(&state, raw)?)?;
    let tokens = match (&request.content, &request.messages) {
        (Some(content), None) => state
            .tokenizer
            .encode(content, request.parse_special.unwrap_or(false))?,
        (None, Some(messages)) => {
            let options = TemplateOptions {
                add_generation_prompt: request.add_generation_prompt.unwrap_or(true),
                enable_thinking: request
                    .chat_template_kwargs
                    .as_ref()
                    .and_then(|k| k.enable_thinking)
                    .unwrap_or(true),
                tools: None,
            };
            let messages = chat_messages(Some(messages))?;
            chat_prompt_tokens(&state.template, &state.tokenizer, &messages, &options)?
        }
        _ => {
            return Err(ApiError::bad(
                Some("content"),
                "give either content (text) or messages",
            ));
        }
    };
    Ok(
        Json(json!({"tokens": tokens, "count": tokens.len(), "max_model_len": state.n_ctx}))
            .into_response(),
    )
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<u32>,
}

async fn detokenize(
    State(state): Shared,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: DetokenizeRequest = parse(&body(&state, raw)?)?;
    let n_vocab = state.tokenizer.n_vocab();
    if let Some((i, id)) = request
        .tokens
        .iter()
        .enumerate()
        .find(|&(_, &t)| t as usize >= n_vocab)
    {
        return Err(ApiError::bad(
            Some(&format!("tokens[{i}]")),
            format!("token {id} is outside the vocabulary of {n_vocab}"),
        ));
    }
    let content = state.tokenizer.decode(&request.tokens, false)?;
    Ok(Json(json!({"content": content})).into_response())
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(request.uri().path())
}
