//! GPU back end: device selection, the kernel framework, the Q1_0 / Q2_0 weight layout and the
//! ops.
//!
//! # How an op is built and run
//! ```text
//! let ctx = GpuContext::new(&GpuOptions::default()).await?;      // adapter + device
//! let cache = PipelineCache::new();                              // (shader, entry, overrides)
//! let w = Q1_0Weight::upload(&ctx, "blk.0.ffn_up.weight", bytes, k, n)?;
//! let b = MatvecQ1_0Bindings { w: &w, x: &xb, y: &hb2, opts: MatvecOptions::default() };
//! let up = MatvecQ1_0::new(&ctx, &cache, &b)?;                  // every op: new(ctx, cache, &bindings)
//! // every step: one encoder, one compute pass, one submit
//! let mut pass = encoder.begin_compute_pass(..);
//! up.encode(&mut pass, &StepParams::new(pos, 1));               // the one Op trait
//! ```
//! An op is a value (pipelines + static bind groups + workgroup counts, see [`kernel::Kernel`])
//! built at load time and encoded through [`kernel::Op`]; composite ops (several kernels, or a
//! decode and a prefill variant) are values of the same trait. Nothing is created per step. Shapes are WGSL `override` constants, so each
//! distinct shape is one cached pipeline. Per-step values (position, token count) belong in one
//! [`buffers::StepParams`] uniform written with `queue.write_buffer`.
//!
//! # Decisions
//! - **Q1_0 on the GPU** ([`q1_0`]): GGUF's 18-byte blocks are repacked into u32 sign words
//!   `(n, k/32)` and f16 scale pairs `(n * k/128 / 2)`, byte-for-byte the same size. Scales are
//!   read with `unpack2x16float`, so no `shader-f16` is needed (browsers often lack it). Q2_0
//!   (Ternary-Bonsai, 64 weights of 2 bits per block) uses the same repack: `(n, k/16)` code
//!   words and `(n * k/64 / 2)` scale pairs. Each op picks its shader from the weight's
//!   [`q1_0::WeightFormat`]; F32 / F16 / BF16 linear weights of mixed-type files are f32 rows.
//! - **Binding limits**: a weight whose signs exceed `max_storage_buffer_binding_size` (128 MiB
//!   on WebGPU) is split into row parts, each its own buffers and kernel; the kernels write
//!   disjoint ranges of y. Dispatches beyond 65,535 workgroups are split over x and y; shaders
//!   use `wid.x + wid.y * nwg.x`.
//! - **matvec**: groups of 4 rows share each load of x (x costs 32x the bits of a weight);
//!   threads of a group stride over sign words (coalesced). Reduction by `subgroupAdd` when the
//!   adapter has subgroups (one subgroup per row group; plans for the adapter's whole subgroup
//!   size range and keeps subgroup ops in workgroup-uniform control flow), otherwise a
//!   workgroup-memory tree. Both are tested on every CI run. `ACCUMULATE` fuses the residual
//!   add for attn_output / ffn_down.
//! - **Sampling on the GPU**: argmax (two stages) and top-k (k <= 64) so a decode step reads
//!   back 4 bytes or k pairs, not 600 KB of logits.
//! - **Portability**: 256 threads per workgroup, <= 8 storage bindings per op (WebGPU's default
//!   limit; `qk_norm_rope` uses all 8), no u64, no f16 arithmetic; every shader and specialisation is compiled to SPIR-V, MSL and
//!   HLSL by `tests/shaders_naga.rs`. Naga rejects `enable subgroups;`, browsers require it:
//!   [`kernel::Shader::source_for`] prepends it on browser WebGPU only.
//! - **Errors**: wgpu reports validation errors asynchronously; the context keeps the first one
//!   and read-backs return it as [`crate::Error::Gpu`] ([`GpuContext::take_error`]).

pub mod attention;
pub mod buffers;
pub mod context;
pub mod kernel;
pub mod kv_cache;
pub mod memory_plan;
pub mod model;
pub mod ops;
pub mod q1_0;
pub mod session;
pub mod shaders;
pub mod timer;

pub use buffers::{Readback, StepParams};
pub use context::{GpuContext, GpuFeatures, GpuInfo, GpuOptions, KernelPath};
pub use kernel::{Kernel, KernelSpec, PipelineCache, Shader};

pub use model::GpuModel;
pub use session::{DecodePlan, GpuBatch, Session, SessionOptions};
