//! Exports a Bonsai GGUF as a Hugging Face checkpoint for vLLM, sglang and transformers.
//!
//! `cargo run --release --example export -- --model M.gguf --format hf-fp16|awq --out DIR`

use anyhow::Context;
use bonsai_wgpu::export::{ExportFormat, ExportOptions, export_checkpoint};
use bonsai_wgpu::gguf::Gguf;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(about = "Export a Bonsai GGUF as a Hugging Face checkpoint (FP16 or lossless AWQ int4)")]
struct Args {
    /// The Bonsai GGUF file.
    #[arg(long)]
    model: std::path::PathBuf,
    /// `hf-fp16` (every weight float16) or `awq` (block projections AWQ int4, group 128).
    #[arg(long)]
    format: ExportFormat,
    /// The checkpoint directory (created if needed).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Largest safetensors file in MB (10^6 bytes); bigger checkpoints are sharded with an index.
    #[arg(long, default_value_t = bonsai_wgpu::export::DEFAULT_MAX_SHARD_BYTES / 1_000_000)]
    max_shard_mb: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let gguf = Gguf::open(&args.model).with_context(|| format!("{}", args.model.display()))?;
    let options = ExportOptions {
        format: args.format,
        max_shard_bytes: args.max_shard_mb.saturating_mul(1_000_000),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    )?);
    let report = export_checkpoint(&gguf, &args.out, &options, &|p| {
        bar.set_length(p.total_bytes);
        bar.set_position(p.done_bytes);
        bar.set_message(p.tensor.to_string());
    })
    .with_context(|| format!("exporting {}", args.model.display()))?;
    bar.finish_and_clear();
    for f in &report.files {
        println!("wrote {}", f.display());
    }
    println!(
        "{} tensors, {:.2} GB of weights; largest norm change from f16 rounding: {:.3e} ({})",
        report.n_tensors,
        report.weight_bytes as f64 / 1e9,
        report.max_norm_change,
        if report.max_norm_change_tensor.is_empty() {
            "none"
        } else {
            &report.max_norm_change_tensor
        }
    );
    Ok(())
}
