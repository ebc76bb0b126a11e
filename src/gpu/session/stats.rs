//! Host cost of decode steps, counted by the session and printed by `bench`.

/// What the decode steps of a session cost the host, summed since the session was made or
/// [`Session::reset_decode_stats`] (`bench` prints them per token).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Decode steps (one token each) recorded.
    pub steps: u64,
    /// Compute dispatches recorded by those steps.
    pub dispatches: u64,
    /// Compute passes recorded by those steps.
    pub passes: u64,
    /// Host time spent recording and submitting them, in nanoseconds (0 on wasm: no clock).
    pub host_ns: u64,
    /// Blocking waits for a decode step's result while no later step was queued, i.e. the GPU
    /// had nothing to do until the host recorded more (the step-by-step path: one per token).
    pub host_waits: u64,
}

impl DecodeStats {
    /// `(dispatches, passes, host µs, host waits)` per decode step (zeros before any step).
    pub fn per_token(&self) -> (f64, f64, f64, f64) {
        let n = self.steps.max(1) as f64;
        (
            self.dispatches as f64 / n,
            self.passes as f64 / n,
            self.host_ns as f64 / 1e3 / n,
            self.host_waits as f64 / n,
        )
    }
}
