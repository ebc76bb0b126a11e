//! bonsai-wgpu runs PrismML's Bonsai 1-bit (Q1_0) Qwen3 language models on any GPU through wgpu.

pub mod detok;
pub mod engine;
pub mod error;
pub mod generate;
pub mod sampler;

pub use error::{Error, Result};
