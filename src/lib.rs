//! bonsai-wgpu runs PrismML's Bonsai 1-bit (Q1_0) and Ternary-Bonsai (Q2_0) Qwen3 language models
//! on any GPU through wgpu: Vulkan, Metal, DX12 and browser WebGPU (wasm32), from one code base.
//!
//! What it does:
//! - reads GGUF files ([`gguf`]) and checks them against the Qwen3 layout ([`model`]);
//! - keeps Q1_0 weights 1-bit and Q2_0 weights 2-bit on the GPU: WGSL kernels ([`gpu::ops`])
//!   unpack sign bits or 2-bit codes and f16 block scales inside the matrix products;
//! - runs the whole forward pass on the GPU ([`gpu::Session`]): one submit per decoded token and
//!   a few bytes read back; prompts in batches;
//! - tokenizes, detokenizes and renders the model's chat template ([`text`]), samples
//!   ([`sampler`]), streams text ([`generate`]) and keeps conversations in the KV cache
//!   ([`chat`]);
//! - parses and checks OpenAI-compatible request bodies ([`openai`]) for `bonsai-server`;
//! - exports a Bonsai GGUF as a Hugging Face checkpoint (FP16, or lossless AWQ int4) that
//!   vLLM, sglang and transformers serve ([`export`], native only);
//! - carries a plain CPU reference of the forward pass ([`cpu`]), the oracle the GPU is tested
//!   against (and that is tested against llama.cpp).
//!
//! What it does not do: architectures other than Qwen3, linear-weight types other than Q1_0,
//! Q2_0, F32, F16 and BF16 (each tensor's own type counts; F32/F16/BF16 norms are read),
//! training, or multi-GPU.
//!
//! ```no_run
//! # async fn run() -> bonsai_wgpu::Result<()> {
//! use std::sync::Arc;
//! use bonsai_wgpu::engine::Engine;
//! use bonsai_wgpu::gpu::{GpuContext, GpuModel, GpuOptions, Session, SessionOptions};
//!
//! let gguf = bonsai_wgpu::gguf::Gguf::open("Bonsai-1.7B-Q1_0.gguf")?;
//! let tokenizer = bonsai_wgpu::text::tokenizer::Tokenizer::from_gguf(&gguf)?;
//! let ctx = Arc::new(GpuContext::new(&GpuOptions::default()).await?);
//! let mut session = Session::new(GpuModel::load(ctx, &gguf)?, SessionOptions::default())?;
//! session.feed(&tokenizer.encode("The capital of France is", true)?).await?;
//! let next = session.greedy().await?;
//! # let _ = next; Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod batch;
pub mod cache_type;
pub mod chat;
pub mod cpu;
pub mod engine;
pub mod error;
#[cfg(not(target_arch = "wasm32"))]
pub mod export;
pub mod generate;
pub mod gguf;
pub mod gpu;
pub mod model;
pub mod openai;
pub mod quant;
pub mod sampler;
#[cfg(not(target_arch = "wasm32"))]
pub mod scheduler;
pub mod synth;
pub mod text;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use engine::Engine;
pub use error::{Error, Result};
