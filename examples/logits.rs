//! One forward pass over a prompt: prints the tokens and the argmax at every position, and can
//! write the last position's logits as little-endian f32 (to compare with llama.cpp).
//!
//! cargo run --release --example logits -- --model MODEL.gguf (--prompt TEXT | --tokens 1,2,3) [--cpu] [--out FILE]

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::engine::{Engine, argmax};
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::{GpuContext, GpuModel, GpuOptions, Session, SessionOptions};
use bonsai_wgpu::text::tokenizer::Tokenizer;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Run one forward pass and print the argmax at every position")]
struct Args {
    /// GGUF model file.
    #[arg(long)]
    model: std::path::PathBuf,
    /// Prompt text (special tokens such as <|im_start|> are parsed).
    #[arg(long, conflicts_with = "tokens")]
    prompt: Option<String>,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',')]
    tokens: Option<Vec<u32>>,
    /// Use the CPU reference instead of the GPU.
    #[arg(long)]
    cpu: bool,
    /// Write the last position's logits here as little-endian f32.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let gguf =
        Gguf::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    let tokens = match (&args.prompt, &args.tokens) {
        (Some(text), None) => Tokenizer::from_gguf(&gguf)?.encode(text, true)?,
        (None, Some(ids)) => ids.clone(),
        _ => bail!("give exactly one of --prompt or --tokens"),
    };
    if tokens.is_empty() {
        bail!("no tokens to run");
    }
    let (argmaxes, last_logits) = match args.cpu {
        true => run_cpu(&gguf, &tokens)?,
        false => pollster::block_on(run_gpu(&gguf, &tokens))?,
    };
    let join = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    println!("tokens: {}", join(&tokens));
    println!("argmax: {}", join(&argmaxes));
    if let Some(path) = &args.out {
        let bytes: Vec<u8> = last_logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The GPU engine, one token per step so every position's argmax is seen (read back on device).
async fn run_gpu(gguf: &Gguf, tokens: &[u32]) -> Result<(Vec<u32>, Vec<f32>)> {
    let ctx = GpuContext::new(&GpuOptions::default()).await?;
    eprintln!("adapter: {} ({:?})", ctx.info.name, ctx.info.backend);
    let model = GpuModel::load(Arc::new(ctx), gguf)?;
    let n_ctx = tokens.len().min(model.config.n_ctx_train);
    let mut session = Session::new(
        model,
        SessionOptions {
            n_ctx,
            ..Default::default()
        },
    )?;
    let mut argmaxes = Vec::with_capacity(tokens.len());
    for &t in tokens {
        session.feed(&[t]).await?;
        argmaxes.push(session.greedy().await?);
    }
    Ok((argmaxes, session.logits().await?))
}

/// The CPU reference: argmax at every position and the last position's logits.
fn run_cpu(gguf: &Gguf, tokens: &[u32]) -> Result<(Vec<u32>, Vec<f32>)> {
    let model = CpuModel::from_gguf(gguf)?;
    let mut session = CpuSession::new(Arc::clone(&model), tokens.len())?;
    let mut argmaxes = Vec::with_capacity(tokens.len());
    let mut last = Vec::new();
    for &t in tokens {
        let logits = session.forward(t)?;
        argmaxes.push(argmax(logits));
        last = logits.to_vec();
    }
    Ok((argmaxes, last))
}
