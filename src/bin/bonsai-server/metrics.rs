//! `/metrics`: Prometheus text exposition of the HTTP and scheduler counters.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::AppState;

/// The endpoints counted by name (anything else is `other`).
pub const ENDPOINTS: [&str; 8] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/health",
    "/metrics",
    "/tokenize",
    "/detokenize",
    "other",
];

/// Counters of the HTTP layer.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests per entry of [`ENDPOINTS`].
    pub requests: [AtomicU64; ENDPOINTS.len()],
    /// Requests answered 503 because the queue was full.
    pub rejected: AtomicU64,
    /// Requests answered 401.
    pub unauthorized: AtomicU64,
}

impl HttpStats {
    /// Counts a request to `path`.
    pub fn count(&self, path: &str) {
        let i = ENDPOINTS
            .iter()
            .position(|e| *e == path)
            .unwrap_or(ENDPOINTS.len() - 1);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Resident memory of this process in bytes (Linux; 0 elsewhere).
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages * 4096
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// The exposition text.
pub fn render(state: &AppState) -> String {
    let s = &state.stats;
    let h = &state.http;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP bonsai_requests_total HTTP requests received, by endpoint."
    );
    let _ = writeln!(out, "# TYPE bonsai_requests_total counter");
    for (name, count) in ENDPOINTS.iter().zip(&h.requests) {
        let _ = writeln!(
            out,
            "bonsai_requests_total{{endpoint=\"{name}\"}} {}",
            load(count)
        );
    }
    let counters = [
        (
            "bonsai_requests_rejected_total",
            "Requests answered 503: queue full.",
            load(&h.rejected),
        ),
        (
            "bonsai_requests_unauthorized_total",
            "Requests answered 401.",
            load(&h.unauthorized),
        ),
        (
            "bonsai_sequences_started_total",
            "Generation requests that got a slot.",
            load(&s.started),
        ),
        (
            "bonsai_sequences_finished_total",
            "Generation requests that ended.",
            load(&s.finished),
        ),
        (
            "bonsai_sequences_cancelled_total",
            "Generation requests cancelled (client gone).",
            load(&s.cancelled),
        ),
        (
            "bonsai_prompt_tokens_total",
            "Prompt tokens computed (prefill).",
            load(&s.prompt_tokens),
        ),
        (
            "bonsai_prompt_tokens_cached_total",
            "Prompt tokens reused from slot caches.",
            load(&s.cached_tokens),
        ),
        (
            "bonsai_generated_tokens_total",
            "Tokens generated.",
            load(&s.generated_tokens),
        ),
        (
            "bonsai_decode_steps_total",
            "Decode steps (one token for every active sequence).",
            load(&s.decode_steps),
        ),
    ];
    for (name, help, value) in counters {
        metric(&mut out, name, "counter", help, value);
    }
    let gauges = [
        (
            "bonsai_sequences_active",
            "Requests holding a slot.",
            s.active.load(Ordering::SeqCst) as f64,
        ),
        (
            "bonsai_sequences_queued",
            "Requests waiting for a slot.",
            s.queued.load(Ordering::SeqCst) as f64,
        ),
        ("bonsai_slots", "Sequence slots.", state.n_slots as f64),
        (
            "bonsai_slot_context_tokens",
            "Context of one slot in tokens.",
            state.n_ctx as f64,
        ),
        (
            "bonsai_decode_tokens_per_second",
            "Aggregate decode rate over the last 10 s.",
            s.decode_tps(),
        ),
        (
            "bonsai_process_resident_bytes",
            "Resident memory of the server process.",
            resident_bytes() as f64,
        ),
    ];
    for (name, help, value) in gauges {
        metric(&mut out, name, "gauge", help, value);
    }
    out
}
