//! bonsai-wgpu runs PrismML's Bonsai 1-bit (Q1_0) Qwen3 language models on any GPU through wgpu.

pub mod error;
pub mod gguf;
pub mod quant;

pub use error::{Error, Result};
pub mod config;
pub mod cpu;
pub mod engine;
pub mod synth;
