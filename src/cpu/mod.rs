//! The CPU reference: a plain f32 Qwen3 forward pass, the oracle the GPU kernels are tested against.
//!
//! Written to be read, llama2.c style. Weights stay in Q1_0 and are dotted block by block;
//! activations and the KV cache are f32. [`ops`] holds every op's reference, used by the forward
//! pass here and by each GPU op's test.
//!
//! Fast enough to check the whole trained context (11k tokens in ~45 s of CPU time on the tiny
//! fixture) without giving up plainness: a fed prompt runs in batches whose tokens share each
//! layer's pass over the cache ([`ops::causal_attention`]), batches and large matrices are split
//! across threads natively, and the dot products sum in 8 lanes so they vectorize. None of it
//! changes a token's arithmetic beyond that summation order: a batch gives the logits of its
//! tokens fed one at a time, bit for bit (tested).

pub mod model;
pub mod ops;
pub mod session;

pub use model::CpuModel;
pub use session::CpuSession;
