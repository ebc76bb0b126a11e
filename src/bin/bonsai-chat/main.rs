//! Chat with a Bonsai model in the terminal.
//!
//! ```text
//! cargo run --release --bin bonsai-chat                      # Bonsai-1.7B, downloaded once into the HF cache
//! cargo run --release --bin bonsai-chat -- --model M.gguf    # a local file
//! cargo run --release --bin bonsai-chat -- --hf prism-ml/Bonsai-4B-gguf:Bonsai-4B-Q1_0.gguf
//! cargo run --release --bin bonsai-chat -- --hf prism-ml/Ternary-Bonsai-1.7B-gguf  # Q2_0
//! cargo run --release --bin bonsai-chat -- --prompt "Why is the sky blue?" --no-think
//! echo "Hello" | cargo run --release --bin bonsai-chat
//! ```
//!
//! Interactive commands: `/reset`, `/system TEXT`, `/think on|off`, `/exit`. Ctrl-C stops the
//! current reply; Ctrl-D (or `/exit`) quits.

mod hub;

use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use bonsai_wgpu::Error;
use bonsai_wgpu::cache_type::CacheType;
use bonsai_wgpu::chat::{Conversation, PieceKind};
use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::generate::{GenerateOptions, GenerateOutcome, StopReason};
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::context::parse_backend;
use bonsai_wgpu::gpu::memory_plan::{MemoryLimits, MemoryPlan, weight_bytes_of_gguf};
use bonsai_wgpu::gpu::{GpuContext, GpuModel, GpuOptions, Session, SessionOptions};
use bonsai_wgpu::model::config::Qwen3Config;
use bonsai_wgpu::sampler::SamplerConfig;
use bonsai_wgpu::text::chat_template::ChatTemplate;
use bonsai_wgpu::text::tokenizer::Tokenizer;
use clap::Parser;

/// Context of the CPU reference engine when `--ctx` is not given (its f32 cache is 4x f16's).
const CPU_DEFAULT_CTX: usize = 8192;

const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

#[derive(Parser, Debug)]
#[command(
    about = "Chat with a Bonsai (1-bit) or Ternary-Bonsai model (default: Bonsai-1.7B from the Hugging Face Hub)"
)]
struct Args {
    /// A local GGUF model file.
    #[arg(long, conflicts_with = "hf")]
    model: Option<PathBuf>,
    /// A Hub repository, optionally with the file: ORG/NAME[:FILE] (default file NAME-Q1_0.gguf,
    /// NAME-Q2_0.gguf for Ternary-Bonsai repositories).
    #[arg(long)]
    hf: Option<String>,
    /// Ask this, print the reply and exit (without it, stdin is read when it is not a terminal).
    #[arg(long)]
    prompt: Option<String>,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// Turn Qwen3 thinking mode off.
    #[arg(long)]
    no_think: bool,
    /// Do not print the thinking (it is shown dimmed otherwise).
    #[arg(long)]
    hide_think: bool,
    /// Temperature (<= 0: greedy).
    #[arg(long)]
    temp: Option<f32>,
    /// Top-k (0: off).
    #[arg(long)]
    top_k: Option<usize>,
    /// Top-p (1: off).
    #[arg(long)]
    top_p: Option<f32>,
    /// Min-p (0: off).
    #[arg(long)]
    min_p: Option<f32>,
    /// Repetition penalty (1: off).
    #[arg(long)]
    repeat_penalty: Option<f32>,
    /// Random seed (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 4096)]
    max_tokens: usize,
    /// Context size in tokens (default: GPU, the largest the memory plan fits on the device, up
    /// to the model's trained context; CPU, 8192).
    #[arg(long)]
    ctx: Option<usize>,
    /// KV cache type: f16 or q8_0 (half the memory, see README "Context and KV cache").
    #[arg(long, default_value_t = CacheType::default())]
    cache_type: CacheType,
    /// GPU backend: vulkan, metal, dx12, gl (default: the best available).
    #[arg(long)]
    backend: Option<String>,
    /// Pick the GPU adapter whose name contains this.
    #[arg(long)]
    adapter: Option<String>,
    /// Run on the CPU reference engine (slow, needs no GPU).
    #[arg(long)]
    cpu: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The model file: `--model`, or a Hub file from the cache, downloaded on first use.
fn resolve_model(args: &Args) -> Result<PathBuf> {
    if let Some(path) = &args.model {
        if !path.is_file() {
            bail!("model file {} does not exist", path.display());
        }
        return Ok(path.clone());
    }
    let mut bar: Option<indicatif::ProgressBar> = None;
    let fetched = hub::resolve(args.hf.as_deref(), &mut |file, done, total| {
        let bar = bar.get_or_insert_with(|| {
            eprintln!(
                "downloading {} into {}",
                file.url(),
                hub::cache_dir().display()
            );
            let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        bar.set_position(done);
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    fetched
}

/// The engine the flags ask for: the GPU (wgpu) unless `--cpu`.
fn open_engine(args: &Args, gguf: &Gguf) -> Result<AnyEngine> {
    if args.cpu {
        let model = CpuModel::from_gguf(gguf).context("loading the model")?;
        let n_ctx = args
            .ctx
            .unwrap_or(CPU_DEFAULT_CTX.min(model.config.n_ctx_train));
        let session = CpuSession::with_cache_type(model, n_ctx, Some(args.cache_type))?;
        return Ok(AnyEngine::Cpu(Box::new(session)));
    }
    let options = GpuOptions {
        backends: args.backend.as_deref().map(parse_backend).transpose()?,
        adapter_name: args.adapter.clone(),
        ..GpuOptions::default()
    };
    let ctx = pollster::block_on(GpuContext::new(&options))
        .context("no usable GPU adapter (--cpu runs the CPU reference instead)")?;
    eprintln!(
        "{}",
        dim(&format!(
            "GPU: {} ({:?}, {:?})",
            ctx.info.name, ctx.info.backend, ctx.info.device_type
        ))
    );
    // Plan before anything is allocated: a context that cannot fit stops here, by name.
    let config = Qwen3Config::from_gguf(gguf)?;
    let limits = MemoryLimits::of(&ctx);
    let mut opts = SessionOptions {
        n_ctx: args.ctx.unwrap_or(config.n_ctx_train),
        cache_type: args.cache_type,
        ..SessionOptions::default()
    };
    let weights = weight_bytes_of_gguf(gguf);
    let mut plan = MemoryPlan::for_device(&ctx, &config, weights, &opts);
    if args.ctx.is_none() {
        opts.n_ctx = plan.largest_fitting(&limits, &config).max(1);
        plan = MemoryPlan::for_device(&ctx, &config, weights, &opts);
    }
    eprintln!("{}", dim(&plan.describe(&limits)));
    plan.check(&limits, &config)?;
    let model = GpuModel::load(Arc::new(ctx), gguf).context("uploading the model")?;
    let session = Session::new(model, opts)?;
    Ok(AnyEngine::Gpu(Box::new(session)))
}

/// Every engine this tool can drive, behind one type (the trait's async methods are not
/// object safe).
enum AnyEngine {
    Cpu(Box<CpuSession>),
    Gpu(Box<Session>),
}

/// Forwards a call to whichever engine is inside.
macro_rules! each {
    ($self:ident, $e:ident => $call:expr) => {
        match $self {
            AnyEngine::Cpu($e) => $call,
            AnyEngine::Gpu($e) => $call,
        }
    };
}

impl Engine for AnyEngine {
    fn n_vocab(&self) -> usize {
        each!(self, e => e.n_vocab())
    }
    fn n_ctx(&self) -> usize {
        each!(self, e => e.n_ctx())
    }
    fn n_past(&self) -> usize {
        each!(self, e => e.n_past())
    }
    async fn feed(&mut self, tokens: &[u32]) -> bonsai_wgpu::Result<()> {
        each!(self, e => e.feed(tokens).await)
    }
    async fn logits(&mut self) -> bonsai_wgpu::Result<Vec<f32>> {
        each!(self, e => e.logits().await)
    }
    async fn greedy(&mut self) -> bonsai_wgpu::Result<u32> {
        each!(self, e => e.greedy().await)
    }
    async fn top_k(&mut self, k: usize) -> bonsai_wgpu::Result<Vec<(u32, f32)>> {
        each!(self, e => e.top_k(k).await)
    }
    fn truncate(&mut self, n_past: usize) -> bonsai_wgpu::Result<()> {
        each!(self, e => e.truncate(n_past))
    }
    async fn begin_queued(
        &mut self,
        config: &SamplerConfig,
        history: &[u32],
    ) -> bonsai_wgpu::Result<bool> {
        each!(self, e => e.begin_queued(config, history).await)
    }
    fn queue_step(&mut self) -> bonsai_wgpu::Result<()> {
        each!(self, e => e.queue_step())
    }
    async fn next_queued(&mut self) -> bonsai_wgpu::Result<u32> {
        each!(self, e => e.next_queued().await)
    }
    async fn end_queued(&mut self, n_past: usize) -> bonsai_wgpu::Result<()> {
        each!(self, e => e.end_queued(n_past).await)
    }
}

fn sampler_config(args: &Args) -> SamplerConfig {
    let d = SamplerConfig::default();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos() as u64)
    });
    SamplerConfig {
        temperature: args.temp.unwrap_or(d.temperature),
        top_k: args.top_k.unwrap_or(d.top_k),
        top_p: args.top_p.unwrap_or(d.top_p),
        min_p: args.min_p.unwrap_or(d.min_p),
        repeat_penalty: args.repeat_penalty.unwrap_or(d.repeat_penalty),
        seed,
        ..d
    }
}

fn run(args: Args) -> Result<()> {
    let path = resolve_model(&args)?;
    let gguf = Gguf::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let tokenizer = Arc::new(Tokenizer::from_gguf(&gguf).context("loading the tokenizer")?);
    let template = Arc::new(ChatTemplate::from_gguf(&gguf).context("loading the chat template")?);
    let mut engine = open_engine(&args, &gguf)?;
    let mut conv = Conversation::new(tokenizer.clone(), template.clone());
    conv.set_system(args.system.clone());
    conv.set_thinking(!args.no_think);
    let cancel = Arc::new(AtomicBool::new(false));
    let mut options = GenerateOptions {
        sampler: sampler_config(&args),
        max_tokens: args.max_tokens,
        stop_strings: Vec::new(),
        cancel: Some(cancel.clone()),
    };

    let prompt = match &args.prompt {
        Some(p) => Some(p.clone()),
        None if !std::io::stdin().is_terminal() => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            Some(text)
        }
        None => None,
    };
    if let Some(prompt) = prompt {
        let outcome = turn(&mut conv, &mut engine, &prompt, &options, args.hide_think)?;
        println!();
        eprintln!("{}", stats(&outcome, &engine));
        return Ok(());
    }

    let flag = cancel.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    interactive(
        &mut conv,
        &mut engine,
        &mut options,
        &cancel,
        args.hide_think,
    )
}

fn interactive(
    conv: &mut Conversation,
    engine: &mut AnyEngine,
    options: &mut GenerateOptions,
    cancel: &AtomicBool,
    hide_think: bool,
) -> Result<()> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
    let history = hub::user_cache_dir()
        .join("bonsai-wgpu")
        .join("chat-history.txt");
    let _ = editor.load_history(&history);
    eprintln!(
        "{}",
        dim("/reset  /system TEXT  /think on|off  /exit   (Ctrl-C stops a reply)")
    );
    loop {
        let line = match editor.readline("> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading a line"),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        match line.split_once(' ').unwrap_or((line, "")) {
            ("/exit" | "/quit", _) => break,
            ("/reset", _) => {
                conv.clear();
                engine.reset();
                eprintln!("{}", dim("(conversation cleared)"));
                continue;
            }
            ("/system", text) => {
                conv.set_system(Some(text.trim().to_string()));
                eprintln!(
                    "{DIM}(system prompt {}){RESET}",
                    if text.trim().is_empty() {
                        "removed"
                    } else {
                        "set"
                    }
                );
                continue;
            }
            ("/think", arg) => {
                match arg.trim() {
                    "on" => conv.set_thinking(true),
                    "off" => conv.set_thinking(false),
                    _ => eprintln!("usage: /think on|off"),
                }
                eprintln!(
                    "{DIM}(thinking {}){RESET}",
                    if conv.thinking() { "on" } else { "off" }
                );
                continue;
            }
            (cmd, _) if cmd.starts_with('/') => {
                eprintln!("unknown command {cmd}: /reset  /system TEXT  /think on|off  /exit");
                continue;
            }
            _ => {}
        }
        cancel.store(false, Ordering::Relaxed);
        // A different seed per turn, reproducible from the first.
        options.sampler.seed = options.sampler.seed.wrapping_add(1);
        match turn(conv, engine, line, options, hide_think) {
            Ok(outcome) => {
                println!();
                eprintln!("{}", stats(&outcome, engine));
            }
            Err(e) if is_overflow(&e) => {
                conv.pop();
                eprintln!(
                    "the conversation no longer fits in the context: /reset to start over ({e:#})"
                );
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(dir) = history.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = editor.save_history(&history);
    Ok(())
}

fn is_overflow(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<Error>(),
        Some(Error::ContextOverflow { .. })
    )
}

/// One user message in, the streamed reply out.
fn turn(
    conv: &mut Conversation,
    engine: &mut AnyEngine,
    text: &str,
    options: &GenerateOptions,
    hide_think: bool,
) -> Result<GenerateOutcome> {
    let color = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    let mut last = PieceKind::Answer;
    let outcome = pollster::block_on(conv.send(engine, text, options, |piece| {
        let shown = match piece.kind {
            PieceKind::Thinking if hide_think => None,
            PieceKind::Thinking if color => Some(format!("{DIM}{}{RESET}", piece.text)),
            _ => Some(piece.text.to_string()),
        };
        if let Some(s) = shown {
            if last != piece.kind && piece.kind == PieceKind::Answer && !hide_think {
                let _ = writeln!(out);
            }
            let _ = write!(out, "{s}");
            let _ = out.flush();
        }
        last = piece.kind;
        ControlFlow::Continue(())
    }));
    Ok(outcome?)
}

fn stats(o: &GenerateOutcome, engine: &AnyEngine) -> String {
    let reason = match &o.stop_reason {
        StopReason::Eos => "end of turn".to_string(),
        StopReason::StopString(s) => format!("stop string {s:?}"),
        StopReason::MaxTokens => "token limit (-n)".to_string(),
        StopReason::ContextFull => "context full (/reset)".to_string(),
        StopReason::Cancelled => "stopped".to_string(),
    };
    dim(&format!(
        "[prompt {} tok, {:.1} tok/s | reply {} tok, {:.1} tok/s | context {}/{} | {reason}]",
        o.n_prompt,
        o.prompt_tps(),
        o.n_gen,
        o.gen_tps(),
        engine.n_past(),
        engine.n_ctx()
    ))
}

/// `text` dimmed with ANSI codes when stderr is a terminal.
fn dim(text: &str) -> String {
    if std::io::stderr().is_terminal() {
        format!("{DIM}{text}{RESET}")
    } else {
        text.to_string()
    }
}
