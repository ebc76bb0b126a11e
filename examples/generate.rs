//! The smallest use of the library: load a model onto the GPU, send one chat turn, stream the
//! reply.
//!
//! cargo run --release --example generate -- MODEL.gguf "Why is the sky blue?"

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;

use anyhow::{Context, Result};
use bonsai_wgpu::chat::Conversation;
use bonsai_wgpu::generate::GenerateOptions;
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::{GpuContext, GpuModel, GpuOptions, Session, SessionOptions};
use bonsai_wgpu::text::chat_template::ChatTemplate;
use bonsai_wgpu::text::tokenizer::Tokenizer;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().context("usage: generate MODEL.gguf [PROMPT]")?;
    let prompt = args
        .next()
        .unwrap_or_else(|| "Write a haiku about the sea.".into());

    let gguf = Gguf::open(&path)?;
    let tokenizer = Arc::new(Tokenizer::from_gguf(&gguf)?);
    let template = Arc::new(ChatTemplate::from_gguf(&gguf)?);
    pollster::block_on(async {
        let gpu = Arc::new(GpuContext::new(&GpuOptions::default()).await?);
        let mut engine = Session::new(GpuModel::load(gpu, &gguf)?, SessionOptions::default())?;
        let mut chat = Conversation::new(tokenizer.clone(), template.clone());
        let outcome = chat
            .send(&mut engine, &prompt, &GenerateOptions::default(), |piece| {
                print!("{}", piece.text);
                let _ = std::io::stdout().flush();
                ControlFlow::Continue(())
            })
            .await?;
        println!(
            "\n[{} tokens, {:.1} tok/s, {:?}]",
            outcome.n_gen,
            outcome.gen_tps(),
            outcome.stop_reason
        );
        Ok(())
    })
}
