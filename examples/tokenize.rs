//! Tokenize text with a GGUF model's tokenizer and print the ids, comma-separated, on one line.
//!
//! ```text
//! cargo run --release --example tokenize -- --model MODEL.gguf "<|im_start|>user\nHi<|im_end|>"
//! ```
//! Special tokens written in the text are parsed (as llama.cpp's `parse_special`), unless
//! `--no-parse-special` is given. `--timing` reports load and build times on stderr.

use anyhow::Context;
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::text::tokenizer::Tokenizer;
use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Print the token ids of TEXT under a GGUF model's tokenizer")]
struct Args {
    /// GGUF model (or vocabulary) file.
    #[arg(long, short)]
    model: PathBuf,
    /// Treat special tokens such as `<|im_start|>` as plain text.
    #[arg(long)]
    no_parse_special: bool,
    /// Print how long opening the file and building the tokenizer took (stderr).
    #[arg(long)]
    timing: bool,
    /// Text to tokenize.
    text: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let t0 = Instant::now();
    let gguf =
        Gguf::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    let t1 = Instant::now();
    let tokenizer = Tokenizer::from_gguf(&gguf).context("building the tokenizer")?;
    let t2 = Instant::now();
    let ids = tokenizer.encode(&args.text, !args.no_parse_special)?;
    let t3 = Instant::now();
    if args.timing {
        eprintln!(
            "open {:.1} ms, tokenizer build {:.1} ms ({} tokens), encode {:.3} ms ({} ids)",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            tokenizer.n_vocab(),
            (t3 - t2).as_secs_f64() * 1e3,
            ids.len()
        );
    }
    let line: Vec<String> = ids.iter().map(u32::to_string).collect();
    println!("{}", line.join(","));
    Ok(())
}
