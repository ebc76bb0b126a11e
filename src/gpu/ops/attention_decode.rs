//! Attention of one query token over the KV cache, flash-decoding style
//! (`shaders/attention_decode.wgsl` + `shaders/attention_merge.wgsl`).
//!
//! The cache is cut into chunks of [`DECODE_CHUNK`] positions (see [`DecodeScratch::with_chunk`]);
//! workgroup (kv head, chunk) writes the chunk's softmax max, sum and weighted V for the group's
//! query heads, then one workgroup per query head merges the chunks. A context of one chunk
//! skips the merge: a third kernel writes that chunk's result, normalised, as the output. The
//! kernels are built for the cache's capacity (`ceil(n_ctx / chunk)` chunks) and read the live
//! length from `step.n_kv`, so bind groups and dispatch sizes are fixed at load time and long
//! contexts stay parallel. CPU reference: [`crate::cpu::ops::attention`].

use crate::gpu::buffers::{StepParams, check_binding, storage_buffer};
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, Op, PipelineCache, Shader};
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

/// The chunk size decode attention uses on `ctx`: [`DECODE_CHUNK`], or [`DECODE_CHUNK_CPU`] on
/// CPU adapters.
pub fn decode_chunk(ctx: &GpuContext) -> usize {
    match ctx.info.device_type {
        wgpu::DeviceType::Cpu => DECODE_CHUNK_CPU,
        _ => DECODE_CHUNK,
    }
}

impl DecodeScratch {
    /// Scratch for a cache of `n_ctx` positions in chunks of [`decode_chunk`].
    pub fn new(ctx: &GpuContext, dims: AttnDims, n_ctx: usize) -> Result<DecodeScratch> {
        Self::with_chunk(ctx, dims, n_ctx, decode_chunk(ctx))
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

/// The kernels of one layer's decode attention: partial then merge, or (one chunk) single.
#[derive(Clone, Debug)]
pub struct AttentionDecode {
    /// Per-chunk attention (`attention_decode.wgsl`), one workgroup per kv head and chunk.
    pub partial: Kernel,
    /// Combines the chunks into the output (`attention_merge.wgsl`), one workgroup per head.
    pub merge: Kernel,
    /// `attention_decode.wgsl` with `SINGLE`: chunk 0 normalised straight into the output, for
    /// contexts of at most one chunk (no merge).
    pub single: Kernel,
    /// Cache positions per partial workgroup.
    pub chunk: u32,
}

/// Dispatches only the `ceil(step.n_kv / chunk)` chunks that hold keys (`step.n_kv <= n_ctx`);
/// on lavapipe this is 25x faster for a short context in a large cache than the whole cache.
/// One chunk is one kernel ([`AttentionDecode::single`]).
impl Op for AttentionDecode {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        let chunks = step.n_kv.div_ceil(self.chunk);
        if chunks <= 1 {
            self.single
                .dispatch_groups(pass, [self.single.workgroups[0], 1, 1]);
            return;
        }
        self.partial
            .dispatch_groups(pass, [self.partial.workgroups[0], chunks, 1]);
        self.merge.dispatch(pass);
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

/// What the fused attention's prologue reads besides q|k|v ([`AttentionDecode::fused`]).
#[derive(Clone, Copy)]
pub struct RopeInput<'a> {
    /// `attn_q_norm` then `attn_k_norm`: (2 head_dim) f32 ([`crate::gpu::model::FusedLayer`]).
    pub qk_norm: &'a wgpu::Buffer,
    /// The residual the attention norm normalises: (n_embd) f32. q|k|v were computed from
    /// `x_res * attn_norm`; the prologue scales them by `1 / rms(x_res)`.
    pub x_res: &'a wgpu::Buffer,
    /// Its length.
    pub n_embd: usize,
    /// RMSNorm epsilon (attention norm and QK-norm).
    pub eps: f32,
}

/// The fused decode plan's attention: one kernel that QK-normalises and rotates the token's
/// q|k|v, writes k and v into the cache and computes the per-chunk partials; the merge is
/// folded into the Wo matvec's input ([`crate::gpu::ops::matvec_q1_0::Fusion::merge`]).
#[derive(Clone, Debug)]
pub struct FusedAttention {
    /// `attention_decode.wgsl` with `ROPE`, one workgroup per kv head and chunk.
    pub partial: Kernel,
    /// Cache positions per workgroup.
    pub chunk: u32,
}

/// Dispatches only the chunks that hold keys, as [`AttentionDecode`] does.
impl Op for FusedAttention {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        let chunks = step.n_kv.div_ceil(self.chunk);
        self.partial
            .dispatch_groups(pass, [self.partial.workgroups[0], chunks, 1]);
    }
}

impl AttentionDecode {
    /// Builds the partial and merge kernels of one layer; errors if the layer, the scratch or a
    /// buffer does not fit the cache's shape.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        b: &AttentionDecodeBindings<'_>,
    ) -> Result<AttentionDecode> {
        let dims = b.kv.dims;
        check_binding(b.q, 4 * dims.q_dim(), "attention_decode q")?;
        let partial = partial_kernel(ctx, cache, b, None, false)?;
        let single = partial_kernel(ctx, cache, b, None, true)?;
        let max_chunks = b.scratch.max_chunks as f64;
        let chunk = b.scratch.chunk;
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
            single,
            chunk: chunk as u32,
        })
    }

    /// The fused plan's kernel: `b.q` holds the token's q|k|v matvec output
    /// ((n_head + 2 n_head_kv) * head_dim f32); `b.out` is unused (the partials are the output).
    pub fn fused(
        ctx: &GpuContext,
        cache: &PipelineCache,
        b: &AttentionDecodeBindings<'_>,
        rope: &RopeInput<'_>,
    ) -> Result<FusedAttention> {
        let dims = b.kv.dims;
        if dims.head_dim > 256 || b.kv.n_rot > dims.head_dim || !b.kv.n_rot.is_multiple_of(2) {
            return Err(Error::InvalidArgument(format!(
                "fused attention: head_dim {} (at most 256), n_rot {}",
                dims.head_dim, b.kv.n_rot
            )));
        }
        check_binding(
            b.q,
            4 * (dims.q_dim() + 2 * dims.kv_dim()),
            "fused attention q|k|v",
        )?;
        check_binding(rope.qk_norm, 8 * dims.head_dim, "fused attention qk_norm")?;
        if !rope.n_embd.is_multiple_of(4) {
            return Err(Error::InvalidArgument(format!(
                "fused attention: n_embd {} is not a multiple of 4",
                rope.n_embd
            )));
        }
        check_binding(rope.x_res, 4 * rope.n_embd, "fused attention x_res")?;
        Ok(FusedAttention {
            partial: partial_kernel(ctx, cache, b, Some(rope), false)?,
            chunk: b.scratch.chunk as u32,
        })
    }
}

/// `attention_decode.wgsl` for one layer, with the ROPE prologue when `rope` is given: partials
/// into the scratch, or (`single`, the `SINGLE` variant) chunk 0's result, divided by its sum,
/// into `b.out` (part_o bound to it with a chunk stride of 1).
fn partial_kernel(
    ctx: &GpuContext,
    cache: &PipelineCache,
    b: &AttentionDecodeBindings<'_>,
    rope: Option<&RopeInput<'_>>,
    single: bool,
) -> Result<Kernel> {
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
    check_binding(b.out, 4 * dims.q_dim(), "attention_decode out")?;
    let max_chunks = if single {
        1.0
    } else {
        b.scratch.max_chunks as f64
    };
    let part_o = if single { b.out } else { &b.scratch.part_o };
    let [kv_q8, scale_base] = b.kv.overrides();
    let unused = cache.unused(ctx)?;
    let (qk_norm, table, x_res, eps, n_embd) = match rope {
        Some(r) => (r.qk_norm, &b.kv.rope, r.x_res, r.eps, r.n_embd),
        None => (
            &unused.storage[0],
            &unused.storage[0],
            &unused.storage[0],
            0.0,
            4,
        ),
    };
    Kernel::new(
        ctx,
        cache,
        KernelSpec {
            label: format!(
                "attention_decode{}[{}]",
                if single { " single" } else { "" },
                b.layer
            ),
            shader: Shader::AttentionDecode,
            entry: "main",
            overrides: &[
                ("HEAD_DIM", dims.head_dim as f64),
                ("N_HEAD_KV", dims.n_head_kv as f64),
                ("GROUP", dims.group() as f64),
                ("CHUNK", chunk as f64),
                ("MAX_CHUNKS", max_chunks),
                ("SCALE", dims.scale() as f64),
                kv_q8,
                scale_base,
                ("ROPE", if rope.is_some() { 1.0 } else { 0.0 }),
                ("N_ROT", b.kv.n_rot as f64),
                ("EPS", eps as f64),
                ("N_EMBD", n_embd as f64),
                ("SINGLE", if single { 1.0 } else { 0.0 }),
            ],
            bindings: &[
                b.step.as_entire_binding(),
                b.q.as_entire_binding(),
                layer.k.as_entire_binding(),
                layer.v.as_entire_binding(),
                part_o.as_entire_binding(),
                b.scratch.part_ml.as_entire_binding(),
                qk_norm.as_entire_binding(),
                table.as_entire_binding(),
                x_res.as_entire_binding(),
            ],
            workgroups: [
                dims.n_head_kv as u32,
                if single { 1 } else { n_chunks as u32 },
                1,
            ],
        },
    )
}
