//! `bonsai-server`: an OpenAI-compatible HTTP server for Bonsai models (axum + tokio).
//!
//! ```text
//! bonsai-server --model Bonsai-1.7B-Q1_0.gguf --port 8000 --parallel 4 --ctx 8192
//! curl http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \
//!      -d '{"messages":[{"role":"user","content":"Hello"}]}'
//! ```
//!
//! Threads: tokio serves HTTP; one scheduler thread owns the model and its slots
//! ([`bonsai_wgpu::scheduler::Scheduler`]) and runs steps while any request is queued or running.
//! Requests travel to it over a channel; their events come back over one channel per request.
//! A dropped HTTP request (client gone) sets its cancel flag, which the scheduler checks at
//! every step and before every prefill chunk.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::{Context, Result, bail};
use bonsai_wgpu::batch::{BatchEngine, EnginePool};
use bonsai_wgpu::cache_type::CacheType;
use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::context::parse_backend;
use bonsai_wgpu::gpu::{GpuBatch, GpuContext, GpuModel, GpuOptions, Session, SessionOptions};
use bonsai_wgpu::scheduler::{DEFAULT_PREFILL_CHUNK, Request, Scheduler, Stats};
use bonsai_wgpu::text::chat_template::ChatTemplate;
use bonsai_wgpu::text::tokenizer::Tokenizer;
use clap::Parser;

mod api;
#[path = "../bonsai-chat/hub.rs"]
#[allow(dead_code)]
mod hub;
mod metrics;
mod routes;
mod stream;

#[derive(Parser, Debug)]
#[command(
    about = "OpenAI-compatible HTTP server for Bonsai 1-bit models, with continuous batching"
)]
struct Args {
    /// A local GGUF model file.
    #[arg(long, conflicts_with = "hf")]
    model: Option<PathBuf>,
    /// A Hugging Face repository, optionally with the file: ORG/NAME[:FILE] (downloaded once
    /// into the Hub cache; default without --model: prism-ml/Bonsai-1.7B-gguf).
    #[arg(long)]
    hf: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Total context in tokens, split evenly over the slots (each slot gets ctx / parallel).
    #[arg(long, default_value_t = 8192)]
    ctx: usize,
    /// KV cache type of every slot: f16 (llama.cpp's default) or q8_0 (half the memory).
    #[arg(long, default_value_t = CacheType::default())]
    cache_type: CacheType,
    /// Sequence slots: requests decoded together; more wait in the queue.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Requests that may wait for a slot; one more is answered 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Prompt tokens prefilled per scheduler step (a long prompt delays running streams by one
    /// chunk per step).
    #[arg(long, default_value_t = DEFAULT_PREFILL_CHUNK)]
    prefill_chunk: usize,
    /// Require `Authorization: Bearer KEY` (every endpoint but /health).
    #[arg(long)]
    api_key: Option<String>,
    /// Model name reported by /v1/models (default: the file name without .gguf).
    #[arg(long)]
    alias: Option<String>,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = 4 << 20)]
    max_body: usize,
    /// GPU backend: vulkan, metal, dx12, gl (default: the best available).
    #[arg(long)]
    backend: Option<String>,
    /// Pick the GPU adapter whose name contains this.
    #[arg(long)]
    adapter: Option<String>,
    /// Run on the CPU reference engine (slow, needs no GPU).
    #[arg(long)]
    cpu: bool,
    /// How a step decodes its sequences on the GPU: batch (one forward pass for all of them,
    /// every weight read once), pool (one decode per slot), or auto: batch on GPUs, pool on CPU
    /// adapters (lavapipe, SwiftShader, WARP), where arithmetic, not weight reads, is the cost
    /// and the per-slot fused decode measured 2x faster.
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
    engine: EngineChoice,
}

/// The GPU engine behind the scheduler (`--engine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum EngineChoice {
    Auto,
    Batch,
    Pool,
}

/// What the HTTP handlers share.
pub struct AppState {
    /// Requests to the scheduler thread.
    pub requests: mpsc::Sender<Request>,
    /// The scheduler's counters.
    pub stats: Arc<Stats>,
    /// The HTTP layer's counters.
    pub http: metrics::HttpStats,
    /// The model's tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The model's chat template.
    pub template: ChatTemplate,
    /// Name reported as the model id.
    pub model_id: String,
    /// Context of one slot in tokens.
    pub n_ctx: usize,
    /// Number of slots.
    pub n_slots: usize,
    /// Most queued requests.
    pub queue_limit: usize,
    /// Required bearer token, if any.
    pub api_key: Option<String>,
    /// Unix time the server started (the model's `created`).
    pub created: u64,
    /// Description of the engine, for /v1/models.
    pub engine: String,
    /// Largest request body in bytes.
    pub max_body: usize,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn resolve_model(args: &Args) -> Result<PathBuf> {
    if let Some(path) = &args.model {
        if !path.is_file() {
            bail!("model file {} does not exist", path.display());
        }
        return Ok(path.clone());
    }
    let mut last = 0;
    hub::resolve(args.hf.as_deref(), &mut |file, done, total| {
        if last == 0 {
            eprintln!(
                "downloading {} into {}",
                file.url(),
                hub::cache_dir().display()
            );
        }
        if done >= last + (64 << 20) || Some(done) == total {
            last = done.max(1);
            eprintln!("  {} / {} MiB", done >> 20, total.unwrap_or(0) >> 20);
        }
    })
}

fn run(args: Args) -> Result<()> {
    if args.parallel == 0 || args.ctx < args.parallel {
        bail!(
            "--parallel must be at least 1 and at most --ctx ({})",
            args.ctx
        );
    }
    let path = resolve_model(&args)?;
    let gguf = Gguf::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let tokenizer = Arc::new(Tokenizer::from_gguf(&gguf).context("loading the tokenizer")?);
    let template = ChatTemplate::from_gguf(&gguf).context("loading the chat template")?;
    let n_ctx = args.ctx / args.parallel;
    let stats = Arc::new(Stats::default());
    let (engine, requests) = start_scheduler(&args, gguf, n_ctx, tokenizer.clone(), stats.clone())?;
    let state = Arc::new(AppState {
        requests,
        stats,
        http: metrics::HttpStats::default(),
        tokenizer,
        template,
        model_id: args.alias.clone().unwrap_or_else(|| model_name(&path)),
        n_ctx,
        n_slots: args.parallel,
        queue_limit: args.queue,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        engine,
        max_body: args.max_body,
    });
    let app = routes::router(state.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
        let addr: SocketAddr = listener.local_addr()?;
        eprintln!(
            "bonsai-server: {} on {} ({} slots x {} tokens), listening on http://{addr}",
            state.model_id, state.engine, state.n_slots, state.n_ctx
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("serving HTTP")
    })
}

fn model_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
        .unwrap_or_else(|| "bonsai".into())
}

/// Loads the model on the scheduler thread, which then runs until the server exits. Returns a
/// description of the engine and the request channel.
fn start_scheduler(
    args: &Args,
    gguf: Gguf,
    n_ctx: usize,
    tokenizer: Arc<Tokenizer>,
    stats: Arc<Stats>,
) -> Result<(String, mpsc::Sender<Request>)> {
    let (tx, rx) = mpsc::channel::<Request>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<String>>();
    let cpu = args.cpu;
    let slots = args.parallel;
    let chunk = args.prefill_chunk.max(1);
    let cache_type = args.cache_type;
    let engine_choice = args.engine;
    let gpu = GpuOptions {
        backends: args.backend.as_deref().map(parse_backend).transpose()?,
        adapter_name: args.adapter.clone(),
        ..GpuOptions::default()
    };
    std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || {
            if cpu {
                let engine = CpuModel::from_gguf(&gguf).and_then(|model| {
                    let sessions = (0..slots)
                        .map(|_| {
                            CpuSession::with_cache_type(model.clone(), n_ctx, Some(cache_type))
                        })
                        .collect::<bonsai_wgpu::Result<Vec<_>>>()?;
                    EnginePool::new(sessions)
                });
                drop(gguf);
                serve_engine(
                    engine,
                    "the CPU reference engine".into(),
                    rx,
                    ready_tx,
                    tokenizer,
                    chunk,
                    stats,
                )
            } else {
                let loaded = pollster::block_on(GpuContext::new(&gpu)).and_then(|ctx| {
                    let cpu_adapter = ctx.info.device_type == wgpu::DeviceType::Cpu;
                    let batched = match engine_choice {
                        EngineChoice::Auto => !cpu_adapter,
                        EngineChoice::Batch => true,
                        EngineChoice::Pool => false,
                    };
                    let name = format!(
                        "{} ({:?}, {})",
                        ctx.info.name,
                        ctx.info.backend,
                        if batched {
                            "batched decode"
                        } else {
                            "a decode per slot"
                        }
                    );
                    let model = GpuModel::load(Arc::new(ctx), &gguf)?;
                    let options = SessionOptions {
                        n_ctx,
                        max_batch: chunk,
                        cache_type,
                        ..SessionOptions::default()
                    };
                    let engine = match batched {
                        true => GpuEngine::Batch(Box::new(GpuBatch::new(model, slots, options)?)),
                        false => {
                            let sessions = (0..slots)
                                .map(|_| Session::new(model.clone(), options))
                                .collect::<bonsai_wgpu::Result<Vec<_>>>()?;
                            GpuEngine::Pool(EnginePool::new(sessions)?)
                        }
                    };
                    Ok((name, engine))
                });
                drop(gguf);
                match loaded {
                    Ok((name, GpuEngine::Batch(e))) => {
                        serve_engine(Ok(*e), name, rx, ready_tx, tokenizer, chunk, stats)
                    }
                    Ok((name, GpuEngine::Pool(e))) => {
                        serve_engine(Ok(e), name, rx, ready_tx, tokenizer, chunk, stats)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                    }
                }
            }
        })?;
    let engine = ready_rx
        .recv()
        .context("the scheduler thread stopped while loading the model")??;
    Ok((engine, tx))
}

/// The GPU engine `--engine` chose.
enum GpuEngine {
    Batch(Box<GpuBatch>),
    Pool(EnginePool<Session>),
}

/// Runs the scheduler over `engine` until every request sender is gone.
fn serve_engine<B: BatchEngine>(
    engine: bonsai_wgpu::Result<B>,
    name: String,
    requests: mpsc::Receiver<Request>,
    ready: mpsc::Sender<Result<String>>,
    tokenizer: Arc<Tokenizer>,
    prefill_chunk: usize,
    stats: Arc<Stats>,
) {
    let engine = match engine {
        Ok(engine) => engine,
        Err(e) => {
            let _ = ready.send(Err(anyhow::Error::new(e).context("loading the model")));
            return;
        }
    };
    let mut scheduler = Scheduler::new(engine, tokenizer, prefill_chunk, stats);
    let _ = ready.send(Ok(name));
    loop {
        while let Ok(request) = requests.try_recv() {
            scheduler.push(request);
        }
        if scheduler.is_idle() {
            match requests.recv() {
                Ok(request) => scheduler.push(request),
                Err(_) => return,
            }
            continue;
        }
        pollster::block_on(scheduler.step());
    }
}
