//! bonsai-wgpu runs PrismML's Bonsai 1-bit (Q1_0) Qwen3 language models on any GPU through wgpu.

pub mod chat;
pub mod chat_template;
pub mod detok;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod gpu;
pub mod quant;
pub mod sampler;
pub mod tokenizer;

pub use error::{Error, Result};
pub mod config;
pub mod cpu;
pub mod engine;
pub mod synth;
