//! Attention of one query token over the KV cache, flash-decoding style
//! (`shaders/attention_decode.wgsl` + `shaders/attention_merge.wgsl`).
//!
//! The cache is cut into chunks of [`DECODE_CHUNK`] positions (see [`DecodeScratch::with_chunk`]);
//! workgroup (kv head, chunk) writes the chunk's softmax max, sum and weighted V for the group's
//! query heads, then one workgroup per query head merges the chunks. Both kernels are dispatched
//! for the cache's capacity (`ceil(n_ctx / chunk)` chunks) and read the live length from
//! `step.n_kv`, so bind groups and dispatch sizes are fixed at load time and long contexts stay
//! parallel.

use super::attention_prefill;
use crate::gpu::buffers::check_binding;
use crate::gpu::buffers::storage_buffer;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader};
use crate::gpu::kv_cache::{AttnDims, KvCache};
use crate::{Error, Result};

/// Cache positions per workgroup on GPUs. Smaller chunks mean more workgroups at short contexts
/// and shorter serial loops per thread, at the price of more partial results to merge.
pub const DECODE_CHUNK: usize = 64;
/// Cache positions per workgroup on CPU adapters (lavapipe, WARP), which run few workgroups at
/// once and pay per workgroup and barrier: 128 measured 1.4x faster than 64 on lavapipe at 4k.
pub const DECODE_CHUNK_CPU: usize = 128;
/// Chunk sizes the shader supports (`WG / CHUNK` threads share a position; WG = 128).
pub const DECODE_CHUNKS_SUPPORTED: [usize; 3] = [32, 64, 128];

/// Partial results of the chunks, shared by every layer (layers run one after another).
#[derive(Debug)]
pub struct DecodeScratch {
    /// Cache positions per chunk (one workgroup each).
    pub chunk: usize,
    /// Chunks the scratch has room for (`ceil(n_ctx / chunk)`).
    pub max_chunks: usize,
    /// Unnormalised partial outputs: (n_head, max_chunks, head_dim) f32.
    pub part_o: wgpu::Buffer,
    /// Per-chunk score max and exp-sum: (n_head, max_chunks) `vec2<f32>` = (max, sum).
    pub part_ml: wgpu::Buffer,
}

impl DecodeScratch {
    /// Scratch for a cache of `n_ctx` positions in chunks of [`DECODE_CHUNK`]
    /// ([`DECODE_CHUNK_CPU`] on CPU adapters).
    pub fn new(ctx: &GpuContext, dims: AttnDims, n_ctx: usize) -> Result<DecodeScratch> {
        let chunk = match ctx.info.device_type {
            wgpu::DeviceType::Cpu => DECODE_CHUNK_CPU,
            _ => DECODE_CHUNK,
        };
        Self::with_chunk(ctx, dims, n_ctx, chunk)
    }

    /// As [`Self::new`] with another chunk size from [`DECODE_CHUNKS_SUPPORTED`].
    pub fn with_chunk(
        ctx: &GpuContext,
        dims: AttnDims,
        n_ctx: usize,
        chunk: usize,
    ) -> Result<DecodeScratch> {
        if !DECODE_CHUNKS_SUPPORTED.contains(&chunk) {
            return Err(Error::InvalidArgument(format!(
                "decode chunk {chunk} is not one of {DECODE_CHUNKS_SUPPORTED:?}"
            )));
        }
        let max_chunks = n_ctx.div_ceil(chunk).max(1);
        let n = (dims.n_head * max_chunks) as u64;
        Ok(DecodeScratch {
            chunk,
            max_chunks,
            part_o: storage_buffer(ctx, "attn.part_o", n * dims.head_dim as u64 * 4)?,
            part_ml: storage_buffer(ctx, "attn.part_ml", n * 8)?,
        })
    }
}

/// The two kernels of one layer's decode attention, encoded back to back.
#[derive(Clone, Debug)]
pub struct AttentionDecode {
    /// Per-chunk attention (`attention_decode.wgsl`), one workgroup per kv head and chunk.
    pub partial: Kernel,
    /// Combines the chunks into the output (`attention_merge.wgsl`), one workgroup per head.
    pub merge: Kernel,
    /// Cache positions per partial workgroup.
    pub chunk: u32,
}

impl AttentionDecode {
    /// Dispatches the partial kernel for the whole cache; chunks at or past `step.n_kv` exit at
    /// once. Correct for any `step.n_kv`, but every empty workgroup still launches: prefer
    /// [`Self::encode_kv`] when the step's `n_kv` is known at encode time.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.partial.encode(pass);
        self.merge.encode(pass);
    }

    /// Dispatches only the `ceil(n_kv / chunk)` chunks that hold keys; `n_kv` must equal the
    /// `step.n_kv` this pass runs with (<= n_ctx). On lavapipe this is 25x faster for a short
    /// context in a large cache.
    pub fn encode_kv(&self, pass: &mut wgpu::ComputePass<'_>, n_kv: u32) {
        self.encode_partial_kv(pass, n_kv);
        self.merge.encode(pass);
    }

    /// Only the partial kernel, for the chunks that hold keys (as [`Self::encode_kv`]): the fused
    /// decode merges in the Wo matvec's input load (`wo_merge.wgsl`) instead.
    pub fn encode_partial_kv(&self, pass: &mut wgpu::ComputePass<'_>, n_kv: u32) {
        let chunks = n_kv.div_ceil(self.chunk);
        self.partial
            .encode_groups(pass, [self.partial.workgroups[0], chunks, 1]);
    }
}

/// The buffers one layer's decode attention binds.
pub struct AttentionDecodeBindings<'a> {
    /// `StepParams` uniform: n_kv = positions attended (query at n_kv - 1).
    pub step: &'a wgpu::Buffer,
    /// The query: (n_head, head_dim) f32, normalised and rotated.
    pub q: &'a wgpu::Buffer,
    /// The cache read from.
    pub kv: &'a KvCache,
    /// Layer index into `kv.layers`.
    pub layer: usize,
    /// Scratch for the partial results.
    pub scratch: &'a DecodeScratch,
    /// Attention output: (n_head, head_dim) f32.
    pub out: &'a wgpu::Buffer,
}

/// Builds the partial and merge kernels of one layer; errors if the layer, the scratch or a
/// buffer does not fit the cache's shape.
pub fn build(
    ctx: &GpuContext,
    cache: &PipelineCache,
    b: &AttentionDecodeBindings<'_>,
) -> Result<AttentionDecode> {
    let dims = b.kv.dims;
    dims.check()?;
    let layer = b.kv.layer(b.layer)?;
    let chunk = b.scratch.chunk;
    let n_chunks = b.kv.n_ctx.div_ceil(chunk);
    if b.scratch.max_chunks < n_chunks {
        return Err(Error::InvalidArgument(format!(
            "decode scratch holds {} chunks, the cache needs {n_chunks}",
            b.scratch.max_chunks
        )));
    }
    check_binding(b.q, 4 * dims.q_dim(), "attention_decode q")?;
    check_binding(b.out, 4 * dims.q_dim(), "attention_decode out")?;
    let max_chunks = b.scratch.max_chunks as f64;
    let partial = Kernel::new(
        ctx,
        cache,
        KernelSpec {
            label: format!("attention_decode[{}]", b.layer),
            shader: Shader::AttentionDecode,
            entry: "main",
            overrides: &[
                ("HEAD_DIM", dims.head_dim as f64),
                ("N_HEAD_KV", dims.n_head_kv as f64),
                ("GROUP", dims.group() as f64),
                ("CHUNK", chunk as f64),
                ("MAX_CHUNKS", max_chunks),
                ("SCALE", dims.scale() as f64),
            ],
            bindings: &[
                b.step.as_entire_binding(),
                b.q.as_entire_binding(),
                layer.k.as_entire_binding(),
                layer.v.as_entire_binding(),
                b.scratch.part_o.as_entire_binding(),
                b.scratch.part_ml.as_entire_binding(),
            ],
            workgroups: [dims.n_head_kv as u32, n_chunks as u32, 1],
        },
    )?;
    let merge = Kernel::new(
        ctx,
        cache,
        KernelSpec {
            label: format!("attention_merge[{}]", b.layer),
            shader: Shader::AttentionMerge,
            entry: "main",
            overrides: &[
                ("HEAD_DIM", dims.head_dim as f64),
                ("CHUNK", chunk as f64),
                ("MAX_CHUNKS", max_chunks),
            ],
            bindings: &[
                b.step.as_entire_binding(),
                b.scratch.part_o.as_entire_binding(),
                b.scratch.part_ml.as_entire_binding(),
                b.out.as_entire_binding(),
            ],
            workgroups: [dims.n_head as u32, 1, 1],
        },
    )?;
    Ok(AttentionDecode {
        partial,
        merge,
        chunk: chunk as u32,
    })
}

/// CPU reference: `q` (n_head, head_dim) at position `n_kv - 1` attends to cache positions
/// `0..n_kv` of `k`, `v` (>= n_kv, n_head_kv, head_dim); returns (n_head, head_dim).
pub fn run_cpu(dims: AttnDims, q: &[f32], k: &[f32], v: &[f32], n_kv: usize) -> Vec<f32> {
    attention_prefill::run_cpu(dims, q, k, v, n_kv - 1)
}
