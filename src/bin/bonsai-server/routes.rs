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
use bonsai_wgpu::openai::{
    DetokenizeRequest, GenerationRequest, PromptInput, TokenizeInput, TokenizeRequest,
    check_prompt_tokens, parse,
};
use bonsai_wgpu::text::prompt::chat_prompt_tokens;
use serde_json::json;

use crate::AppState;
use crate::api::{ApiError, prompt_too_long};
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
    let params = request.params(clock_seed())?;
    let messages = request.chat_messages()?;
    let options = request.template_options();
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
    let params = request.params(clock_seed())?;
    let prompt = match request.prompt()? {
        PromptInput::Text(text) => state.tokenizer.encode(text, true)?,
        PromptInput::Tokens(tokens) => tokens.to_vec(),
    };
    check_prompt_tokens(&prompt, state.tokenizer.n_vocab())?;
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
async fn tokenize(
    State(state): Shared,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: TokenizeRequest = parse(&body(&state, raw)?)?;
    let tokens = match request.input()? {
        TokenizeInput::Text {
            content,
            parse_special,
        } => state.tokenizer.encode(content, parse_special)?,
        TokenizeInput::Chat { messages, options } => {
            chat_prompt_tokens(&state.template, &state.tokenizer, &messages, &options)?
        }
    };
    Ok(
        Json(json!({"tokens": tokens, "count": tokens.len(), "max_model_len": state.n_ctx}))
            .into_response(),
    )
}

async fn detokenize(
    State(state): Shared,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: DetokenizeRequest = parse(&body(&state, raw)?)?;
    let tokens = request.checked_tokens(state.tokenizer.n_vocab())?;
    let content = state.tokenizer.decode(tokens, false)?;
    Ok(Json(json!({"content": content})).into_response())
}

/// Sampling's seed when a request names none: the clock.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos() as u64)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(request.uri().path())
}
