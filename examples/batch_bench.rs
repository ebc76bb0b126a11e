//! Aggregate decode speed with several sequences at once, through a `batch::BatchEngine`: for
//! each engine and concurrency N, N slots get a short prompt, then `-n` decode steps of one token
//! per slot are timed. Engines: `batch` ([`GpuBatch`], what `bonsai-server` runs: one forward
//! pass per step for all N, weights read once) and `pool` ([`EnginePool`] of sessions: one fused
//! decode per slot per step, the weights read N times).
//!
//! ```text
//! cargo run --release --example synth -- --shape 1.7b --tokenizer-from tiny.gguf --out b17.gguf
//! cargo run --release --example batch_bench -- --model b17.gguf --parallel 1,4,16 -n 4
//! ```

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use bonsai_wgpu::batch::{BatchEngine, EnginePool};
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::context::parse_backend;
use bonsai_wgpu::gpu::{GpuBatch, GpuContext, GpuModel, GpuOptions, Session, SessionOptions};
use bonsai_wgpu::sampler::{CandidateRequest, Sampler, SamplerConfig};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Aggregate decode tokens/s at several concurrencies (BatchEngine)")]
struct Args {
    /// GGUF model file.
    #[arg(short, long)]
    model: std::path::PathBuf,
    /// Concurrent sequences to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    parallel: Vec<usize>,
    /// Timed decode steps per concurrency.
    #[arg(short = 'n', default_value_t = 8)]
    n_decode: usize,
    /// Prompt tokens per sequence before timing.
    #[arg(short = 'p', default_value_t = 16)]
    n_prompt: usize,
    /// KV cache per slot.
    #[arg(long, default_value_t = 256)]
    ctx: usize,
    /// GPU backend: vulkan, metal, dx12, gl.
    #[arg(long)]
    backend: Option<String>,
    /// Engines to measure, comma-separated: batch (GpuBatch), pool (one session per slot).
    #[arg(long, value_delimiter = ',', default_value = "batch,pool")]
    engine: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let gguf =
        Gguf::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    let options = GpuOptions {
        backends: args.backend.as_deref().map(parse_backend).transpose()?,
        ..GpuOptions::default()
    };
    let ctx = Arc::new(pollster::block_on(GpuContext::new(&options))?);
    let adapter = format!("{} ({:?})", ctx.info.name, ctx.info.backend);
    let model = GpuModel::load(ctx, &gguf)?;
    drop(gguf);
    let slots = args.parallel.iter().copied().max().unwrap_or(1);
    let session = SessionOptions {
        n_ctx: args.ctx,
        max_batch: args.n_prompt.max(1),
        ..SessionOptions::default()
    };
    let prompt: Vec<u32> = (0..args.n_prompt as u32).map(|i| 1000 + i * 7).collect();
    println!("adapter: {adapter}");
    println!(
        "| engine | sequences | steps | tokens | seconds | aggregate tok/s | per sequence tok/s |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for engine in &args.engine {
        match engine.as_str() {
            "batch" => {
                let mut batch = GpuBatch::new(model.clone(), slots, session)?;
                measure(&mut batch, "batch", &args, &prompt)?;
            }
            "pool" => {
                let sessions = (0..slots)
                    .map(|_| Session::new(model.clone(), session))
                    .collect::<bonsai_wgpu::Result<Vec<_>>>()?;
                measure(&mut EnginePool::new(sessions)?, "pool", &args, &prompt)?;
            }
            other => anyhow::bail!("unknown engine `{other}` (batch or pool)"),
        }
    }
    Ok(())
}

/// Times `args.n_decode` steps of every concurrency on `pool`; prints a table row each.
fn measure<B: BatchEngine>(pool: &mut B, name: &str, args: &Args, prompt: &[u32]) -> Result<()> {
    for &n in &args.parallel {
        let greedy: Vec<(usize, CandidateRequest)> =
            (0..n).map(|s| (s, CandidateRequest::Greedy)).collect();
        for slot in 0..n {
            pool.truncate(slot, 0)?;
            pollster::block_on(pool.prefill(slot, prompt))?;
        }
        // One untimed step: pipelines and first-touch allocations.
        let mut next = next_tokens(pool, &greedy)?;
        pollster::block_on(pool.decode(&next))?;
        let start = Instant::now();
        for _ in 0..args.n_decode {
            next = next_tokens(pool, &greedy)?;
            pollster::block_on(pool.decode(&next))?;
        }
        next_tokens(pool, &greedy)?; // waits for the last step
        let secs = start.elapsed().as_secs_f64();
        let tokens = n * args.n_decode;
        println!(
            "| {name} | {n} | {} | {tokens} | {secs:.2} | {:.2} | {:.2} |",
            args.n_decode,
            tokens as f64 / secs,
            args.n_decode as f64 / secs
        );
    }
    Ok(())
}

/// The argmax of every listed slot, as the next decode batch.
fn next_tokens<B: BatchEngine>(
    pool: &mut B,
    greedy: &[(usize, CandidateRequest)],
) -> Result<Vec<(usize, u32)>> {
    let candidates = pollster::block_on(pool.candidates(greedy))?;
    let mut sampler = Sampler::new(SamplerConfig::greedy());
    greedy
        .iter()
        .zip(candidates)
        .map(|(&(slot, _), c)| Ok((slot, c.sample(&mut sampler)?)))
        .collect()
}
