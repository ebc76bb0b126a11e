//! The OpenAI error object and response pieces. Request bodies and their checks are the
//! library's ([`bonsai_wgpu::openai`]); their `Error::BadRequest` becomes a 400 here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bonsai_wgpu::generate::StopReason;
use bonsai_wgpu::scheduler::Finish;
use serde_json::{Value, json};

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
            bonsai_wgpu::Error::BadRequest { param, message } => {
                ApiError::bad(param.as_deref(), message)
            }
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
