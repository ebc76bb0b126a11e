//! Top-k logits on the GPU (`topk.wgsl`, k <= 64): the sampler reads back k (value, index)
//! pairs instead of all 151,669 logits.

use crate::gpu::buffers::storage_buffer;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader, split_workgroups};
use crate::{Error, Result};

/// Largest k the shader supports (its round count; workgroup-uniform loop).
pub const MAX_K: u32 = 64;
const WG: u32 = 256;
const ITEMS: u32 = 8;

/// All stages with their buffers; after encoding, `result_val` / `result_idx` hold the best k,
/// best first (ties: lower index), padded with (-f32::MAX, u32::MAX) past the valid values.
#[derive(Clone, Debug)]
pub struct TopK {
    /// How many (value, index) pairs the result holds.
    pub k: u32,
    /// The reduction stages, in order; the last runs one workgroup.
    pub stages: Vec<Kernel>,
    /// Candidate buffers of every stage: (value, index) pairs, (n_groups, k) each.
    pub buffers: Vec<(wgpu::Buffer, wgpu::Buffer)>,
}

impl TopK {
    /// Top `k` of the first `n` values of `logits`.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        logits: &wgpu::Buffer, // (n) f32
        n: u32,
        k: u32,
    ) -> Result<TopK> {
        if n == 0 || k == 0 || k > MAX_K || logits.size() < 4 * n as u64 {
            return Err(Error::InvalidArgument(format!(
                "top-k with k = {k} (1..={MAX_K}) over {n} values of a {}-byte buffer",
                logits.size()
            )));
        }
        let max_dim = ctx.limits.max_compute_workgroups_per_dimension;
        let mut stages = Vec::new();
        let mut buffers: Vec<(wgpu::Buffer, wgpu::Buffer)> = Vec::new();
        let mut n_in = n;
        loop {
            let stage = stages.len();
            let n_groups = n_in.div_ceil(WG * ITEMS);
            let out_val = storage_buffer(ctx, "topk val", 4 * (n_groups * k) as u64)?;
            let out_idx = storage_buffer(ctx, "topk idx", 4 * (n_groups * k) as u64)?;
            let (in_val, in_idx) = match buffers.last() {
                // Stage 1 ignores `idx`: bind a buffer the stage does not write.
                None => (logits, logits),
                Some((v, i)) => (v, i),
            };
            let overrides = [
                ("N", n_in as f64),
                ("K", k as f64),
                ("ITEMS", ITEMS as f64),
                ("USE_IDX", if stage == 0 { 0.0 } else { 1.0 }),
            ];
            stages.push(Kernel::new(
                ctx,
                cache,
                KernelSpec {
                    label: format!("topk stage {} over {n_in}", stage + 1),
                    shader: Shader::Topk,
                    entry: "main",
                    overrides: &overrides,
                    bindings: &[
                        in_val.as_entire_binding(),
                        in_idx.as_entire_binding(),
                        out_val.as_entire_binding(),
                        out_idx.as_entire_binding(),
                    ],
                    workgroups: split_workgroups(n_groups, max_dim),
                },
            )?);
            buffers.push((out_val, out_idx));
            if n_groups == 1 {
                break;
            }
            n_in = n_groups * k;
        }
        Ok(TopK { k, stages, buffers })
    }

    /// The final (value, index) buffers, k entries each.
    pub fn result(&self) -> (&wgpu::Buffer, &wgpu::Buffer) {
        let (v, i) = &self.buffers[self.buffers.len() - 1];
        (v, i)
    }

    /// Records every stage.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for s in &self.stages {
            s.encode(pass);
        }
    }
}

/// CPU reference with the shader's rules.
pub fn run_cpu(logits: &[f32], k: usize) -> Vec<(f32, u32)> {
    let mut cands: Vec<(f32, u32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (v, i as u32))
        .filter(|&(v, i)| v > -f32::MAX || (v == -f32::MAX && i < u32::MAX))
        .collect();
    cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    cands.truncate(k);
    cands.resize(k, (-f32::MAX, u32::MAX));
    cands
}
