//! The smallest use of the library: load a model, render one chat turn, stream the reply.
//!
//! cargo run --release --example generate -- MODEL.gguf "Why is the sky blue?"

use std::io::Write;
use std::ops::ControlFlow;

use anyhow::{Context, Result};
use bonsai_wgpu::chat::Conversation;
use bonsai_wgpu::chat_template::ChatTemplate;
use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::generate::GenerateOptions;
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::tokenizer::Tokenizer;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().context("usage: generate MODEL.gguf [PROMPT]")?;
    let prompt = args
        .next()
        .unwrap_or_else(|| "Write a haiku about the sea.".into());

    let gguf = Gguf::open(&path)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let template = ChatTemplate::from_gguf(&gguf)?;
    let mut engine = CpuSession::new(CpuModel::from_gguf(&gguf)?, 4096)?;

    let mut chat = Conversation::new(&tokenizer, &template);
    let options = GenerateOptions::default();
    let outcome = pollster::block_on(chat.send(&mut engine, &prompt, &options, |piece| {
        print!("{}", piece.text);
        let _ = std::io::stdout().flush();
        ControlFlow::Continue(())
    }))?;
    println!(
        "\n[{} tokens, {:.1} tok/s, {:?}]",
        outcome.n_gen,
        outcome.gen_tps(),
        outcome.stop_reason
    );
    Ok(())
}
