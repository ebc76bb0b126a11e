//! Per-pass GPU timing with timestamp queries, for profiling (one compute pass per op in a
//! debug/profile run). Absent when the adapter has no `TIMESTAMP_QUERY`.

use super::buffers::Readback;
use super::context::GpuContext;
use crate::{Error, Result};

/// Timestamps at the start and end of up to `capacity` compute passes.
pub struct PassTimer {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: Readback,
    capacity: u32,
    labels: Vec<String>,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
}

impl PassTimer {
    /// `None` when the device cannot write timestamps.
    pub fn new(ctx: &GpuContext, capacity: u32) -> Option<PassTimer> {
        if !ctx.features.has_timestamps || capacity == 0 {
            return None;
        }
        let count = 2 * capacity;
        let bytes = 8 * count as u64;
        Some(PassTimer {
            query_set: ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("pass timer"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolve: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("pass timer resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: Readback::new(ctx, "pass timer readback", bytes),
            capacity,
            labels: Vec::new(),
            period_ns: ctx.queue.get_timestamp_period() as f64,
        })
    }

    /// Timestamp writes for the next pass, labelled `label`; `None` once capacity is used up.
    pub fn pass(&mut self, label: &str) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let i = self.labels.len() as u32;
        if i >= self.capacity {
            return None;
        }
        self.labels.push(label.to_string());
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.query_set,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }

    /// Records the query resolve and copy; call once after the timed passes, before submit.
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let n = 2 * self.labels.len() as u32;
        if n == 0 {
            return;
        }
        encoder.resolve_query_set(&self.query_set, 0..n, &self.resolve, 0);
        self.readback
            .encode_copy(encoder, &self.resolve, 0, 8 * n as u64);
    }

    /// After submit: (label, milliseconds) per timed pass, then clears the labels for reuse.
    pub async fn read(&mut self, ctx: &GpuContext) -> Result<Vec<(String, f64)>> {
        let n = self.labels.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        // Timestamps are u64; read as u32 pairs (WGSL-style code avoids u64 elsewhere too).
        let words: Vec<u32> = self.readback.read(ctx, 4 * n).await?;
        ctx.take_error()?;
        let ticks = |j: usize| words[2 * j] as u64 | (words[2 * j + 1] as u64) << 32;
        let out = self
            .labels
            .drain(..)
            .enumerate()
            .map(|(i, label)| {
                let (t0, t1) = (ticks(2 * i), ticks(2 * i + 1));
                let ms = t1.saturating_sub(t0) as f64 * self.period_ns / 1e6;
                (label, ms)
            })
            .collect();
        if self.period_ns <= 0.0 {
            return Err(Error::Gpu("timestamp period is zero".into()));
        }
        Ok(out)
    }
}
