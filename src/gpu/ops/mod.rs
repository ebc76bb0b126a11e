//! One module per op, beside its `shaders/<op>.wgsl`: a value built once from a named bindings
//! struct (`Op::new(ctx, cache, &OpBindings { .. })`) and recorded through the one
//! [`Op`](super::kernel::Op) trait. Each op's CPU reference lives once, in [`crate::cpu::ops`] (or
//! with its quantization format in [`crate::quant`]); the op's test compares the two.
//!
//! A new op: `shaders/<op>.wgsl` + a [`Shader`](super::kernel::Shader) entry, `<op>.rs` here with
//! its bindings struct, constructor and `impl Op`, its reference in `cpu::ops`, a test in
//! `tests/gpu_kernels.rs` (or `gpu_attention.rs` / `gpu_matmul.rs`), and a line in the step
//! list (`gpu/session/forward.rs`) if the forward pass uses it.
pub mod argmax;
pub mod attention_decode;
pub mod attention_prefill;
pub mod embed_q1_0;
pub mod matmul_q1_0;
pub mod matvec_q1_0;
pub mod qk_norm_rope;
pub mod rmsnorm;
pub mod sampler;
pub mod silu_mul;
pub mod topk;
