//! Writes a synthetic Bonsai model: the exact tensor table and metadata of Bonsai 1.7B / 4B / 8B
//! with random Q1_0 weights (or Ternary-Bonsai's Q2_0 with `--quant q2_0`) and the tokenizer of
//! another GGUF file.
//!
//! cargo run --release --example synth -- --shape 1.7b --tokenizer-from tiny.gguf --out b.gguf
//! cargo run --release --example synth -- --shape 1.7b --quant q2_0 --tokenizer-from tiny.gguf --out t.gguf

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::synth::{SynthQuant, SynthShape, synthetic_writer};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Write a Bonsai-shaped GGUF with random Q1_0 (or ternary Q2_0) weights")]
struct Args {
    /// Model shape: tiny, 1.7b, 4b or 8b.
    #[arg(long)]
    shape: SynthShape,
    /// Type of the linear weights: q1_0 (Bonsai) or q2_0 (Ternary-Bonsai).
    #[arg(long, default_value = "q1_0")]
    quant: SynthQuant,
    /// GGUF file whose `tokenizer.*` keys (vocabulary, merges, chat template) are copied.
    #[arg(long)]
    tokenizer_from: PathBuf,
    /// Output GGUF file.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random weights (same seed, same file).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tokenizer = Gguf::open(&args.tokenizer_from)
        .with_context(|| format!("reading {}", args.tokenizer_from.display()))?;
    let writer = synthetic_writer(args.shape, args.quant, &tokenizer, args.seed)?;
    let len = writer.file_len()?;
    eprintln!(
        "writing {:?} {:?} ({:.1} MB) to {}",
        args.shape,
        args.quant,
        len as f64 / 1e6,
        args.out.display()
    );
    let start = Instant::now();
    let file =
        File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    writer.write_to(&mut out)?;
    let file = out.into_inner().context("flushing output")?;
    file.sync_all().context("syncing output")?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {len} bytes in {secs:.2} s ({:.0} MB/s)",
        len as f64 / 1e6 / secs
    );
    Ok(())
}
