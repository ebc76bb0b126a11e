//! Sampling on the GPU: penalties (`sample_penalties.wgsl`), the candidates of the multi-stage
//! top-k (`topk.wgsl`), and the draw (`sample.wgsl`), so sampled generation needs no host work
//! between steps. The CPU [`Sampler`](crate::sampler::Sampler) stays the reference: the same
//! chain in the same order, tested for the same distribution (tests/gpu_sampler.rs). The two
//! draw different random numbers (this one a counter-based hash of (seed, draw number)), so the
//! same seed gives the same text per engine and adapter, not across engines.

use crate::gpu::buffers::{StepParams, check_binding, storage_buffer};
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, Op, PipelineCache, Shader};
use crate::gpu::ops::topk::TopK;
use crate::sampler::SamplerConfig;
use crate::{Error, Result};

/// Longest penalty window kept on the GPU (`MAX_WINDOW` in the WGSL).
pub const MAX_WINDOW: usize = 256;
/// Words of the state buffer before the window ring: counter, length, next slot, spare.
const STATE_HEADER: usize = 4;

/// `SampleParams` of the WGSL: one uniform, written once per generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
struct SampleParams {
    temperature: f32,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    presence_penalty: f32,
    frequency_penalty: f32,
    top_k: u32,
    window: u32,
    seed_lo: u32,
    seed_hi: u32,
    greedy: u32,
    penalties: u32,
}

/// What the sampler reads and writes.
pub struct GpuSamplerBindings<'a> {
    /// The logits: (n_vocab) f32, penalised in place.
    pub logits: &'a wgpu::Buffer,
    /// Vocabulary size: window ids must be below it.
    pub n_vocab: u32,
    /// The top-k over the same `logits` (its result buffers are the candidates).
    pub topk: &'a TopK,
    /// (>= 1) u32: the chosen id goes to `tokens[0]`, the next step's input.
    pub tokens: &'a wgpu::Buffer,
}

/// The sampler's kernels and GPU state (parameters, RNG counter, penalty window).
#[derive(Clone, Debug)]
pub struct GpuSampler {
    params: wgpu::Buffer,
    /// (4 + MAX_WINDOW) u32: draw counter, window length, next window slot, spare, window ring.
    pub state: wgpu::Buffer,
    penalties: Kernel,
    topk: TopK,
    sample: Kernel,
    n_vocab: u32,
}

impl GpuSampler {
    /// The sampler over `b.logits`, choosing into `b.tokens[0]`.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        b: &GpuSamplerBindings<'_>,
    ) -> Result<GpuSampler> {
        check_binding(b.tokens, 4, "sampler tokens")?;
        check_binding(b.logits, 4 * b.n_vocab as usize, "sampler logits")?;
        let params = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("sampler params"),
            size: std::mem::size_of::<SampleParams>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let state = storage_buffer(ctx, "sampler state", 4 * (STATE_HEADER + MAX_WINDOW) as u64)?;
        let penalties = Kernel::new(
            ctx,
            cache,
            KernelSpec {
                label: "sample penalties".into(),
                shader: Shader::SamplePenalties,
                entry: "main",
                overrides: &[],
                bindings: &[
                    params.as_entire_binding(),
                    state.as_entire_binding(),
                    b.logits.as_entire_binding(),
                ],
                workgroups: [1, 1, 1],
            },
        )?;
        let (cand_val, cand_idx) = b.topk.result();
        let sample = Kernel::new(
            ctx,
            cache,
            KernelSpec {
                label: "sample".into(),
                shader: Shader::Sample,
                entry: "main",
                overrides: &[("KK", b.topk.k as f64)],
                bindings: &[
                    params.as_entire_binding(),
                    state.as_entire_binding(),
                    cand_val.as_entire_binding(),
                    cand_idx.as_entire_binding(),
                    b.tokens.as_entire_binding(),
                ],
                workgroups: [1, 1, 1],
            },
        )?;
        Ok(GpuSampler {
            params,
            state,
            penalties,
            topk: b.topk.clone(),
            sample,
            n_vocab: b.n_vocab,
        })
    }

    /// Whether the GPU chain is exact for `cfg`: a top-k cut the GPU candidates cover (greedy
    /// needs only the best) and a window that fits. Other configs sample on the CPU.
    pub fn supports(&self, cfg: &SamplerConfig) -> bool {
        let k_ok = cfg.is_greedy() || (cfg.top_k > 0 && cfg.top_k <= self.topk.k as usize);
        k_ok && cfg.penalty_last_n <= MAX_WINDOW
    }

    /// Sets the chain for a generation: parameters, the RNG counter to 0, and the penalty window
    /// to the last `penalty_last_n` of `history` (as the CPU sampler's `accept`s leave it).
    pub fn configure(&self, ctx: &GpuContext, cfg: &SamplerConfig, history: &[u32]) -> Result<()> {
        if !self.supports(cfg) {
            return Err(Error::InvalidArgument(format!(
                "GPU sampling needs top_k in 1..={} (or greedy) and penalty_last_n <= \
                 {MAX_WINDOW}: {cfg:?}",
                self.topk.k
            )));
        }
        // The penalty kernel indexes the logits by these ids.
        if let Some(&id) = history.iter().find(|&&id| id >= self.n_vocab) {
            return Err(Error::BadToken {
                id,
                n_vocab: self.n_vocab as usize,
            });
        }
        let window = cfg.penalty_last_n.min(MAX_WINDOW);
        let params = SampleParams {
            temperature: cfg.temperature,
            top_p: cfg.top_p,
            min_p: cfg.min_p,
            repeat_penalty: cfg.repeat_penalty,
            presence_penalty: cfg.presence_penalty,
            frequency_penalty: cfg.frequency_penalty,
            top_k: cfg.top_k as u32,
            window: window as u32,
            seed_lo: cfg.seed as u32,
            seed_hi: (cfg.seed >> 32) as u32,
            greedy: cfg.is_greedy() as u32,
            penalties: cfg.penalties_active() as u32,
        };
        let recent = &history[history.len().saturating_sub(window)..];
        let mut state = vec![0u32; STATE_HEADER + MAX_WINDOW];
        state[1] = recent.len() as u32;
        state[2] = if window == 0 {
            0
        } else {
            (recent.len() % window) as u32
        };
        state[STATE_HEADER..STATE_HEADER + recent.len()].copy_from_slice(recent);
        ctx.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
        ctx.queue
            .write_buffer(&self.state, 0, bytemuck::cast_slice(&state));
        Ok(())
    }
}

/// Penalties, top-k and the draw, after the head has written the logits.
impl Op for GpuSampler {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        self.penalties.encode(pass, step);
        self.topk.encode(pass, step);
        self.sample.encode(pass, step);
    }
}
