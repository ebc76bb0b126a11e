//! The CPU reference: a plain f32 Qwen3 forward pass, the oracle the GPU kernels are tested against.
//!
//! Written to be read, llama2.c style, not to be fast. Weights stay in Q1_0 and are dotted
//! block by block; activations and the KV cache are f32. [`ops`] holds every op's reference,
//! used by the forward pass here and by each GPU op's test.

pub mod model;
pub mod ops;
pub mod session;

pub use model::CpuModel;
pub use session::CpuSession;
