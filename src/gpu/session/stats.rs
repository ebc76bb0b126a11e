//! What decode steps cost the host, counted by the session and printed by `bench`.

/// Host cost of the decode steps (one token each) of a session, summed since it was made or
/// since [`super::Session::reset_decode_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Decode steps recorded (fed one token, step by step or GPU-resident).
    pub steps: u64,
    /// Compute dispatches those steps recorded.
    pub dispatches: u64,
    /// Compute passes those steps recorded.
    pub passes: u64,
    /// Host time spent recording and submitting them, in nanoseconds (0 on wasm: no clock).
    pub host_ns: u64,
    /// The part of `host_ns` spent recording (encoding) alone: the rest is in `submit`, where
    /// some drivers block (lavapipe waits there for the previous submission to finish).
    pub record_ns: u64,
    /// Blocking waits for a result while no later step was queued, so the GPU had nothing to
    /// do until the host recorded more: one per token step by step (`greedy`, `top_k`,
    /// `logits`), only the last few of a GPU-resident generation.
    pub host_waits: u64,
}

impl DecodeStats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &DecodeStats) {
        self.steps += other.steps;
        self.dispatches += other.dispatches;
        self.passes += other.passes;
        self.host_ns += other.host_ns;
        self.record_ns += other.record_ns;
        self.host_waits += other.host_waits;
    }

    /// Per decode step: dispatches, passes, host µs recording and submitting, host waits
    /// (zeros before any step).
    pub fn per_token(&self) -> PerToken {
        let n = self.steps.max(1) as f64;
        PerToken {
            dispatches: self.dispatches as f64 / n,
            passes: self.passes as f64 / n,
            host_us: self.host_ns as f64 / 1e3 / n,
            record_us: self.record_ns as f64 / 1e3 / n,
            host_waits: self.host_waits as f64 / n,
        }
    }
}

/// [`DecodeStats`] divided by the steps.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PerToken {
    /// Compute dispatches per token.
    pub dispatches: f64,
    /// Compute passes per token.
    pub passes: f64,
    /// Host microseconds per token recording and submitting.
    pub host_us: f64,
    /// Host microseconds per token recording alone.
    pub record_us: f64,
    /// Host waits per token with nothing queued behind.
    pub host_waits: f64,
}
