//! A submitted request's events turned into OpenAI responses: one JSON body, or server-sent
//! events (`chat.completion.chunk` / `text_completion` chunks, then `data: [DONE]`).

use std::convert::Infallible;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use bonsai_wgpu::chat::{PieceKind, ThinkSplitter};
use bonsai_wgpu::openai::Params;
use bonsai_wgpu::scheduler::{Event, Finish, Request};
use futures::{Stream, StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::AppState;
use crate::api::{ApiError, finish_reason, usage};

/// How often an idle stream sends an SSE comment (so a vanished client is noticed while queued).
const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Sets the request's cancel flag when dropped: the HTTP request ended (answered or abandoned).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Which endpoint's shapes to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `/v1/chat/completions`: `<think>` text goes to `reasoning_content`.
    Chat,
    /// `/v1/completions`: raw text.
    Completion,
}

/// A request handed to the scheduler.
pub struct Job {
    events: UnboundedReceiver<Event>,
    _cancel: CancelOnDrop,
    mode: Mode,
    splitter: ThinkSplitter,
    id: String,
    created: u64,
    model: String,
}

/// Queues `prompt` with `params` (503 when the queue is full).
pub fn submit(
    state: &AppState,
    prompt: Vec<u32>,
    params: &Params,
    mode: Mode,
) -> Result<Job, ApiError> {
    let free = state
        .n_slots
        .saturating_sub(state.stats.active.load(Ordering::SeqCst));
    if !state.stats.try_enqueue(state.queue_limit + free) {
        state.http.rejected.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::busy(state.queue_limit));
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, events) = unbounded_channel();
    let n_ctx = state.n_ctx;
    let request = Request {
        max_tokens: params.max_tokens.unwrap_or(n_ctx),
        prompt,
        sampler: params.sampler.clone(),
        stop_strings: params.stop.clone(),
        cancel: cancel.clone(),
        on_event: Box::new(move |event| match tx.send(event) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }),
    };
    if state.requests.send(request).is_err() {
        state.stats.queued.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::internal("the scheduler thread has stopped"));
    }
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let prefix = match mode {
        Mode::Chat => "chatcmpl",
        Mode::Completion => "cmpl",
    };
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Job {
        events,
        _cancel: CancelOnDrop(cancel),
        mode,
        splitter: ThinkSplitter::new(),
        id: format!(
            "{prefix}-{:x}{:06x}",
            state.created,
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ),
        created,
        model: state.model_id.clone(),
    })
}

/// Reply text sorted into (content, reasoning_content).
#[derive(Default)]
struct Delta {
    content: String,
    reasoning: String,
}

impl Job {
    fn split(&mut self, text: &str, delta: &mut Delta) {
        if self.mode == Mode::Completion {
            delta.content.push_str(text);
            return;
        }
        for (piece, kind) in self.splitter.push(text) {
            match kind {
                PieceKind::Answer => delta.content.push_str(&piece),
                PieceKind::Thinking => delta.reasoning.push_str(&piece),
            }
        }
    }

    fn flush(&mut self, delta: &mut Delta) {
        if let Some((piece, kind)) = self.splitter.finish() {
            match kind {
                PieceKind::Answer => delta.content.push_str(&piece),
                PieceKind::Thinking => delta.reasoning.push_str(&piece),
            }
        }
    }

    fn envelope(&self, choices: Value) -> Value {
        let object = match self.mode {
            Mode::Chat => "chat.completion.chunk",
            Mode::Completion => "text_completion",
        };
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        })
    }

    /// One streamed chunk with `delta` and `finish_reason`.
    fn chunk(&self, delta: &Delta, finish: Option<&str>, role: bool) -> Value {
        let choice = match self.mode {
            Mode::Chat => {
                let mut d = serde_json::Map::new();
                if role {
                    d.insert("role".into(), json!("assistant"));
                    d.insert("content".into(), json!(""));
                }
                if !delta.content.is_empty() {
                    d.insert("content".into(), json!(delta.content));
                }
                if !delta.reasoning.is_empty() {
                    d.insert("reasoning_content".into(), json!(delta.reasoning));
                }
                json!({"index": 0, "delta": d, "logprobs": null, "finish_reason": finish})
            }
            Mode::Completion => json!({
                "index": 0, "text": delta.content, "logprobs": null, "finish_reason": finish,
            }),
        };
        self.envelope(json!([choice]))
    }

    /// Waits for the end; the whole response body.
    pub async fn collect(mut self) -> Result<Value, ApiError> {
        let mut delta = Delta::default();
        loop {
            match self.events.recv().await {
                Some(Event::Started { .. }) => {}
                Some(Event::Text(text)) => self.split(&text, &mut delta),
                Some(Event::Finished(f)) => {
                    self.flush(&mut delta);
                    return Ok(self.response(delta, &f));
                }
                Some(Event::Failed(e)) => return Err(e.into()),
                None => return Err(ApiError::internal("the scheduler dropped the request")),
            }
        }
    }

    fn response(&self, delta: Delta, f: &Finish) -> Value {
        let reason = finish_reason(&f.reason);
        let (object, choice) = match self.mode {
            Mode::Chat => {
                let mut message = json!({"role": "assistant", "content": delta.content});
                if !delta.reasoning.is_empty() {
                    message["reasoning_content"] = json!(delta.reasoning);
                }
                (
                    "chat.completion",
                    json!({"index": 0, "message": message, "logprobs": null,
                           "finish_reason": reason}),
                )
            }
            Mode::Completion => (
                "text_completion",
                json!({"index": 0, "text": delta.content, "logprobs": null,
                       "finish_reason": reason}),
            ),
        };
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [choice],
            "usage": usage(f),
        })
    }

    /// The SSE events for one scheduler event; `None` ends the stream.
    fn sse_events(&mut self, event: Option<Event>, include_usage: bool) -> Option<Vec<SseEvent>> {
        let data = |v: Value| SseEvent::default().data(v.to_string());
        match event {
            Some(Event::Started { .. }) => Some(Vec::new()),
            Some(Event::Text(text)) => {
                let mut delta = Delta::default();
                self.split(&text, &mut delta);
                if delta.content.is_empty() && delta.reasoning.is_empty() {
                    return Some(Vec::new());
                }
                Some(vec![data(self.chunk(&delta, None, false))])
            }
            Some(Event::Finished(f)) => {
                let mut delta = Delta::default();
                self.flush(&mut delta);
                let mut out = Vec::new();
                if !delta.content.is_empty() || !delta.reasoning.is_empty() {
                    out.push(data(self.chunk(&delta, None, false)));
                }
                let reason = finish_reason(&f.reason);
                out.push(data(self.chunk(&Delta::default(), Some(reason), false)));
                if include_usage {
                    let mut u = self.envelope(json!([]));
                    u["usage"] = usage(&f);
                    out.push(data(u));
                }
                out.push(SseEvent::default().data("[DONE]"));
                Some(out)
            }
            Some(Event::Failed(e)) => {
                let error = ApiError::from(e);
                Some(vec![data(error.body()), SseEvent::default().data("[DONE]")])
            }
            None => None,
        }
    }

    /// The response as server-sent events. Dropping the stream (client gone) cancels the request.
    pub fn sse(
        self,
        include_usage: bool,
    ) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<>> {
        let first = match self.mode {
            Mode::Chat => vec![
                SseEvent::default().data(self.chunk(&Delta::default(), None, true).to_string()),
            ],
            Mode::Completion => Vec::new(),
        };
        let rest = stream::unfold((self, false), move |(mut job, done)| async move {
            if done {
                return None;
            }
            let event = job.events.recv().await;
            let end = matches!(event, Some(Event::Finished(_) | Event::Failed(_)) | None);
            let events = job.sse_events(event, include_usage)?;
            Some((stream::iter(events), (job, end)))
        })
        .flatten();
        let events = stream::iter(first).chain(rest).map(Ok);
        Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
    }
}
