//! llama-bench style throughput benchmark of an [`Engine`]: prompt processing (`ppN`: N random
//! tokens in one `feed`) and generation (`tgN`: N decode steps, see below), each
//! repeated on a fresh session, reported as a markdown table or llama-bench's JSON fields.
//! Runs the GPU engine, or the CPU reference with `--cpu`.
//!
//! With `--profile` (GPU), a few more decode steps run through `Session::profile_decode` and a
//! second table shows GPU milliseconds per token by kernel category (timestamp queries).
//!
//! With `-d N` (llama-bench's depth) each test runs after N tokens already in the context, so
//! `-p 0 -n 32 -d 0,4096,16384` measures decode speed at depth; `--cache-type f16,q8_0` runs
//! every test with each KV cache type. The depth is a real (untimed) prefill of random tokens,
//! or with `--fast-depth` (GPU) the position is advanced without computing it
//! (`Session::advance_uncomputed`): the same attention work per step, for slow adapters.
//!
//! `--decode-plan auto,fused,unfused` (GPU) runs every test with each decode plan
//! ([`DecodePlan`]): the fused 5-kernels-per-layer step and the one-kernel-per-op step, side by
//! side in one run (auto: fused wherever the weights allow it).
//!
//! GPU generation runs GPU-resident (the engine's queued steps, as `generate` runs them: two in
//! flight, each token chosen on the GPU and fed to the next step there) unless `--step-by-step`
//! asks for `feed` + `greedy` per token. For the GPU, tg rows also report what a decoded token
//! costs the host: dispatches and compute passes recorded, microseconds of host time recording
//! and submitting (and of that, recording alone: lavapipe's submit blocks until the previous
//! submission is done), and blocking waits with no later step queued (JSON:
//! `dispatches_per_token`, `passes_per_token`, `host_us_per_token`, `record_us_per_token`,
//! `host_waits_per_token`; null where not measured).
//!
//! cargo run --release --example bench -- -m FILE.gguf [-p 512] [-n 128] [-d 0] [-r 5] [-b 256]
//!     [--cache-type f16,q8_0] [--decode-plan auto,fused,unfused] [--ctx N] [--fast-depth]
//!     [--json] [--cpu] [--profile] [--step-by-step]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bonsai_wgpu::cache_type::CacheType;
use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::gguf::{GgmlType, Gguf};
use bonsai_wgpu::gpu::KernelPath;
use bonsai_wgpu::gpu::memory_plan::MemoryLimits;
use bonsai_wgpu::gpu::session::{DEFAULT_MAX_BATCH, DecodeStats, PerToken};
use bonsai_wgpu::gpu::{DecodePlan, GpuContext, GpuModel, GpuOptions, Session, SessionOptions};
use bonsai_wgpu::model::config::Qwen3Config;
use bonsai_wgpu::sampler::SamplerConfig;
use clap::Parser;
use pollster::block_on;
use rand::{Rng, SeedableRng, rngs::StdRng};

#[derive(Parser)]
#[command(about = "Prompt-processing and generation throughput, llama-bench style")]
struct Args {
    /// GGUF model file.
    #[arg(short, long)]
    model: PathBuf,
    /// Prompt lengths to test (pp tests), comma separated; 0 skips.
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Generation lengths to test (tg tests), comma separated; 0 skips.
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_gen: Vec<usize>,
    /// Depths: tokens already in the context before each test (llama-bench's -d), comma
    /// separated.
    #[arg(
        short = 'd',
        long = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    n_depth: Vec<usize>,
    /// KV cache types to test, comma separated: f16, q8_0.
    #[arg(long = "cache-type", value_delimiter = ',', default_values_t = [CacheType::default()])]
    cache_type: Vec<CacheType>,
    /// GPU decode plans to test, comma separated: auto (fused wherever the weights allow it),
    /// fused, unfused.
    #[arg(long = "decode-plan", value_delimiter = ',', default_value = "auto")]
    decode_plan: Vec<DecodePlan>,
    /// GPU kernel paths of the Q1_0 products to test, comma separated: auto (per adapter), f32,
    /// q8. Each path gets its own copy of the weights on the device; runs alternate.
    #[arg(long = "kernel-path", value_delimiter = ',', default_value = "auto")]
    kernel_path: Vec<KernelPath>,
    /// KV cache size of every session (default: what each test needs).
    #[arg(long)]
    ctx: Option<usize>,
    /// GPU: reach the depth without computing it (timing only; see the module docs).
    #[arg(long)]
    fast_depth: bool,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    repetitions: usize,
    /// Print a JSON array (llama-bench's `-o json` fields) instead of the table.
    #[arg(long)]
    json: bool,
    /// Run the CPU reference engine instead of the GPU.
    #[arg(long)]
    cpu: bool,
    /// GPU adapter name substring (default: the best GPU; `BONSAI_WGPU_ADAPTER` also works).
    #[arg(long)]
    adapter: Option<String>,
    /// Most tokens one GPU prefill submit processes (llama-bench's -ub).
    #[arg(short = 'b', long = "batch-size", default_value_t = DEFAULT_MAX_BATCH)]
    batch_size: usize,
    /// Skip the untimed warm-up run of each test.
    #[arg(long)]
    no_warmup: bool,
    /// Seed of the random token ids.
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// After the tests, time each kernel category of a decode step with GPU timestamps.
    #[arg(long)]
    profile: bool,
    /// Decode steps averaged by `--profile` (after one untimed warm-up step).
    #[arg(long, default_value_t = 8)]
    profile_steps: usize,
    /// Generate with `feed` + `greedy` per token instead of GPU-resident queued steps.
    #[arg(long)]
    step_by_step: bool,
}

/// GPU-resident steps kept in flight by the tg test (as `generate` does).
const QUEUE_DEPTH: usize = 2;

/// What decoded tokens cost the host; only the GPU session counts it.
trait DecodeCost {
    fn reset_cost(&mut self) {}
    fn cost(&self) -> Option<DecodeStats> {
        None
    }
}

impl DecodeCost for CpuSession {}

impl DecodeCost for Session {
    fn reset_cost(&mut self) {
        self.reset_decode_stats();
    }
    fn cost(&self) -> Option<DecodeStats> {
        Some(self.decode_stats())
    }
}

/// Untimed tokens fed before a generation test, so its first step has a predecessor.
const TG_PROMPT_TOKENS: usize = 1;

#[derive(Clone, Copy)]
enum Kind {
    /// Feed this many tokens at once.
    Prompt(usize),
    /// Generate this many tokens one at a time.
    Gen(usize),
}

#[derive(Clone, Copy)]
struct Test {
    kind: Kind,
    /// Tokens in the context before the timed part.
    depth: usize,
    cache_type: CacheType,
    plan: DecodePlan,
    /// Index into `--kernel-path` (GPU).
    path: usize,
}

impl Test {
    /// llama-bench's test name: `pp512`, `tg128 @ d4096`.
    fn name(self) -> String {
        let base = match self.kind {
            Kind::Prompt(n) => format!("pp{n}"),
            Kind::Gen(n) => format!("tg{n}"),
        };
        match self.depth {
            0 => base,
            d => format!("{base} @ d{d}"),
        }
    }
    fn n_tokens(self) -> usize {
        match self.kind {
            Kind::Prompt(n) | Kind::Gen(n) => n,
        }
    }
    /// KV cache capacity the test needs.
    fn n_ctx(self) -> usize {
        self.depth
            + match self.kind {
                Kind::Prompt(n) => n,
                Kind::Gen(n) => TG_PROMPT_TOKENS + n,
            }
    }
}

/// What runs the model, for the report.
struct BackendInfo {
    /// llama-bench `backends` (e.g. "CPU", "wgpu-Vulkan").
    backends: String,
    /// The adapter (GPU name, or the CPU's model name).
    adapter: String,
    /// The resolved kernel path of each `--kernel-path` entry (GPU).
    kernel_paths: Vec<String>,
}

/// Mean GPU milliseconds per decoded token by kernel category (`--profile`).
type Profile = Vec<(String, f64)>;

struct TestResult {
    test: Test,
    samples_ns: Vec<u64>,
    /// Summed over the timed repetitions (GPU only).
    cost: Option<DecodeStats>,
}

impl TestResult {
    /// What a decoded token cost the host, for tg tests on the GPU.
    fn per_token(&self) -> Option<PerToken> {
        match self.test.kind {
            Kind::Gen(_) => self.cost.map(|c| c.per_token()),
            Kind::Prompt(_) => None,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.repetitions == 0 {
        bail!("-r must be at least 1");
    }
    let gguf =
        Gguf::open(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let config = Qwen3Config::from_gguf(&gguf)?;
    let kinds: Vec<Kind> = (args.n_prompt.iter().map(|&n| Kind::Prompt(n)))
        .chain(args.n_gen.iter().map(|&n| Kind::Gen(n)))
        .collect();
    let mut tests = Vec::new();
    // The CPU reference has one plan.
    let plans = match args.cpu {
        true => &args.decode_plan[..1],
        false => &args.decode_plan[..],
    };
    let paths = match args.cpu {
        true => 1,
        false => args.kernel_path.len().max(1),
    };
    for &cache_type in &args.cache_type {
        for &kind in &kinds {
            for &depth in &args.n_depth {
                for &plan in plans {
                    for path in 0..paths {
                        let test = Test {
                            kind,
                            depth,
                            cache_type,
                            plan,
                            path,
                        };
                        if test.n_tokens() > 0 {
                            tests.push(test);
                        }
                    }
                }
            }
        }
    }
    if args.fast_depth && args.cpu {
        bail!("--fast-depth is for the GPU engine");
    }

    if args.profile && (args.cpu || args.profile_steps == 0) {
        bail!("--profile needs the GPU engine and --profile-steps >= 1");
    }
    let (backend, results, profile) = match args.cpu {
        true => {
            let (backend, results) = bench_cpu(&args, &tests, &gguf)?;
            (backend, results, None)
        }
        false => pollster::block_on(bench_gpu(&args, &tests, &gguf))?,
    };

    let model = ModelInfo::new(&args.model, &gguf, &config);
    if args.json {
        print_json(&model, &backend, &results)?;
    } else {
        print_table(&model, &backend, &results);
    }
    if let Some(profile) = profile {
        // keep stdout valid JSON with --json
        let table = profile_table(&profile, args.profile_steps);
        match args.json {
            true => eprint!("{table}"),
            false => print!("\n{table}"),
        }
    }
    Ok(())
}

/// The CPU reference engine: one model, a fresh [`CpuSession`] per run.
fn bench_cpu(
    args: &Args,
    tests: &[Test],
    gguf: &Gguf,
) -> anyhow::Result<(BackendInfo, Vec<TestResult>)> {
    let model = CpuModel::from_gguf(gguf)?;
    let backend = BackendInfo {
        backends: "CPU".into(),
        adapter: cpu_name(),
        kernel_paths: vec!["cpu".into()],
    };
    let n_vocab = model.config.n_vocab;
    let results = run_tests(args, tests, n_vocab, |test| {
        let n_ctx = args.ctx.unwrap_or(test.n_ctx());
        Ok(CpuSession::with_cache_type(
            Arc::clone(&model),
            n_ctx,
            Some(test.cache_type),
        )?)
    })?;
    Ok((backend, results))
}

/// The GPU engine: weights uploaded once, a fresh [`Session`] (KV cache) per run.
async fn bench_gpu(
    args: &Args,
    tests: &[Test],
    gguf: &Gguf,
) -> anyhow::Result<(BackendInfo, Vec<TestResult>, Option<Profile>)> {
    let opts = GpuOptions {
        adapter_name: args.adapter.clone(),
        ..GpuOptions::default()
    };
    let ctx = GpuContext::new(&opts).await?;
    let backend = BackendInfo {
        backends: format!("wgpu-{:?}", ctx.info.backend),
        adapter: ctx.info.name.clone(),
        kernel_paths: (args.kernel_path.iter())
            .map(|p| p.resolve(&ctx.info).to_string())
            .collect(),
    };
    // One model per kernel path (its kernels are built on a context with that path).
    let mut models = Vec::new();
    for &path in &args.kernel_path {
        let mut on_path = ctx.clone();
        on_path.kernel_path = path.resolve(&ctx.info);
        eprintln!("kernel path {path}: {}", on_path.kernel_path);
        models.push(GpuModel::load(Arc::new(on_path), gguf)?);
    }
    let model = Arc::clone(&models[0]);
    let n_vocab = model.config.n_vocab;
    let max_batch = args.batch_size;
    let mut planned = Vec::new();
    let results = run_tests(args, tests, n_vocab, |test| {
        let opts = SessionOptions {
            n_ctx: args.ctx.unwrap_or(test.n_ctx()),
            max_batch,
            cache_type: test.cache_type,
            decode_plan: test.plan,
        };
        if !planned.contains(&(opts.n_ctx, opts.cache_type)) {
            planned.push((opts.n_ctx, opts.cache_type));
            let limits = MemoryLimits::of(&model.ctx);
            eprintln!("{}", opts.memory_plan(&model).describe(&limits));
        }
        let mut session = Session::new(Arc::clone(&models[test.path]), opts)?;
        if args.fast_depth {
            session.advance_uncomputed(test.depth)?;
        }
        Ok(session)
    })?;
    let profile = match args.profile {
        true => Some(profile_gpu(args, &model).await?),
        false => None,
    };
    Ok((backend, results, profile))
}

/// Mean per-category GPU time of `--profile-steps` greedy decode steps, after a one-token
/// prompt and one untimed warm-up step.
async fn profile_gpu(args: &Args, model: &Arc<GpuModel>) -> anyhow::Result<Profile> {
    let steps = args.profile_steps;
    let opts = SessionOptions {
        n_ctx: TG_PROMPT_TOKENS + 1 + steps,
        max_batch: args.batch_size,
        cache_type: args.cache_type.first().copied().unwrap_or_default(),
        decode_plan: args.decode_plan.first().copied().unwrap_or_default(),
    };
    let mut session = Session::new(Arc::clone(model), opts)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let prompt: Vec<u32> = (0..TG_PROMPT_TOKENS)
        .map(|_| rng.random_range(0..model.config.n_vocab as u32))
        .collect();
    session.feed(&prompt).await?;
    let mut token = session.greedy().await?;
    session.profile_decode(token).await?;
    token = session.greedy().await?;
    let mut sum: Profile = Vec::new();
    for _ in 0..steps {
        let times = session.profile_decode(token).await?;
        if sum.is_empty() {
            sum = times.iter().map(|(name, _)| (name.clone(), 0.0)).collect();
        }
        for ((_, total), (_, ms)) in sum.iter_mut().zip(&times) {
            *total += ms;
        }
        token = session.greedy().await?;
    }
    Ok(sum
        .into_iter()
        .map(|(name, total)| (name, total / steps as f64))
        .collect())
}

/// `| kernel | ms/token | share |`, then the total and the tokens per second it allows.
fn profile_table(profile: &Profile, steps: usize) -> String {
    let total: f64 = profile.iter().map(|(_, ms)| ms).sum();
    let mut out = format!(
        "GPU time per decoded token by kernel (timestamp queries, mean of {steps} steps; \
         one pass per kernel group, so a little above a one-pass step)\n\n"
    );
    out += "| kernel | ms/token | share |\n| --- | ---: | ---: |\n";
    for (name, ms) in profile {
        let share = if total > 0.0 { 100.0 * ms / total } else { 0.0 };
        out += &format!("| {name} | {ms:.3} | {share:.1}% |\n");
    }
    out += &format!("| **total** | {total:.3} | 100.0% |\n\n");
    out += &format!("GPU total {total:.3} ms/token = {:.2} tok/s\n", 1e3 / total);
    out
}

/// Runs every test `repetitions` times (after an untimed warm-up), each on a fresh session.
fn run_tests<E: Engine + DecodeCost>(
    args: &Args,
    tests: &[Test],
    n_vocab: usize,
    mut new_session: impl FnMut(Test) -> anyhow::Result<E>,
) -> anyhow::Result<Vec<TestResult>> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut random_tokens = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| rng.random_range(0..n_vocab as u32))
            .collect()
    };
    let mut results = Vec::new();
    for &test in tests {
        if !args.no_warmup {
            // llama-bench warms up with the whole prompt, or with one generated token.
            let warm = match test.kind {
                Kind::Prompt(_) => test,
                Kind::Gen(_) => Test {
                    kind: Kind::Gen(1),
                    ..test
                },
            };
            let mut session = new_session(warm)?;
            run_once(&mut session, warm, args, &mut random_tokens)?;
        }
        let mut samples_ns = Vec::with_capacity(args.repetitions);
        let mut cost: Option<DecodeStats> = None;
        for rep in 0..args.repetitions {
            let mut session = new_session(test)?;
            let ns = run_once(&mut session, test, args, &mut random_tokens)?;
            if let Some(c) = session.cost() {
                cost.get_or_insert_with(DecodeStats::default).add(&c);
            }
            eprintln!(
                "{} rep {}/{}: {:.3} ms, {:.2} t/s",
                test.name(),
                rep + 1,
                args.repetitions,
                ns as f64 / 1e6,
                test.n_tokens() as f64 * 1e9 / ns as f64
            );
            samples_ns.push(ns);
        }
        results.push(TestResult {
            test,
            samples_ns,
            cost,
        });
    }
    Ok(results)
}

/// One timed run on a fresh session; returns nanoseconds. The depth is filled first, untimed
/// (already done when the session starts deeper, `--fast-depth`). Every timed section ends with
/// a read-back that waits for the last position's result (as llama-bench synchronizes).
fn run_once<E: Engine + DecodeCost>(
    session: &mut E,
    test: Test,
    args: &Args,
    random_tokens: &mut impl FnMut(usize) -> Vec<u32>,
) -> anyhow::Result<u64> {
    let fill = test.depth.saturating_sub(session.n_past());
    if fill > 0 {
        block_on(session.feed(&random_tokens(fill)))?;
    }
    match test.kind {
        Kind::Prompt(n) => {
            let tokens = random_tokens(n);
            let start = Instant::now();
            block_on(session.feed(&tokens))?;
            block_on(session.greedy())?;
            Ok(start.elapsed().as_nanos() as u64)
        }
        Kind::Gen(n) => {
            block_on(session.feed(&random_tokens(TG_PROMPT_TOKENS)))?;
            let queued = !args.step_by_step
                && block_on(session.begin_queued(&SamplerConfig::greedy(), &[]))?;
            let mut token = match queued {
                true => 0,
                false => block_on(session.greedy())?,
            };
            session.reset_cost();
            let start = Instant::now();
            if queued {
                // Step n+1 is submitted before step n's token is read.
                let (mut in_flight, mut done) = (0, 0);
                while done < n {
                    while in_flight < QUEUE_DEPTH && done + in_flight < n {
                        session.queue_step()?;
                        in_flight += 1;
                    }
                    block_on(session.next_queued())?;
                    (in_flight, done) = (in_flight - 1, done + 1);
                }
                let elapsed = start.elapsed().as_nanos() as u64;
                block_on(session.end_queued(session.n_past()))?;
                return Ok(elapsed);
            }
            for _ in 0..n {
                block_on(session.feed(&[token]))?;
                token = block_on(session.greedy())?;
            }
            Ok(start.elapsed().as_nanos() as u64)
        }
    }
}

/// What llama-bench reports about the model.
struct ModelInfo {
    filename: String,
    /// e.g. "qwen3 1.7B Q1_0", "qwen3 1.7B Q2_0"
    model_type: String,
    /// Bytes of all tensors.
    size: u64,
    n_params: u64,
}

impl ModelInfo {
    fn new(path: &Path, gguf: &Gguf, c: &Qwen3Config) -> Self {
        let n_params: u64 = gguf.tensors().iter().map(|t| t.n_elements()).sum();
        // llama.cpp's qwen3 type names, by block count and width.
        let size_name = match (c.n_layer, c.n_embd) {
            (28, 1024) => "0.6B".to_string(),
            (28, 2048) => "1.7B".to_string(),
            (36, 2560) => "4B".to_string(),
            (36, 4096) => "8B".to_string(),
            (40, 5120) => "14B".to_string(),
            (64, 5120) => "32B".to_string(),
            _ => format!("{:.2}B", n_params as f64 / 1e9),
        };
        // The type holding most bytes of the file, like llama.cpp's "mostly" file type (taken
        // from the tensor table, not general.file_type).
        let mut bytes_by_type: Vec<(GgmlType, u64)> = Vec::new();
        for t in gguf.tensors() {
            match bytes_by_type.iter_mut().find(|(ty, _)| *ty == t.ggml_type) {
                Some((_, n)) => *n += t.n_bytes,
                None => bytes_by_type.push((t.ggml_type, t.n_bytes)),
            }
        }
        let quant = bytes_by_type
            .iter()
            .max_by_key(|(_, n)| *n)
            .map_or("?".to_string(), |(ty, _)| ty.to_string());
        ModelInfo {
            filename: path.display().to_string(),
            model_type: format!("qwen3 {size_name} {quant}"),
            size: gguf.tensors().iter().map(|t| t.n_bytes).sum(),
            n_params,
        }
    }
}

/// Mean and sample standard deviation.
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = match xs.len() {
        0 | 1 => 0.0,
        _ => xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0),
    };
    (mean, var.sqrt())
}

fn samples_ts(r: &TestResult) -> Vec<f64> {
    let n = r.test.n_tokens() as f64;
    r.samples_ns.iter().map(|&ns| n * 1e9 / ns as f64).collect()
}

impl BackendInfo {
    /// The kernel path of a test's `--kernel-path` index.
    fn path_name(&self, i: usize) -> &str {
        self.kernel_paths.get(i).map_or("", String::as_str)
    }
}

fn print_table(model: &ModelInfo, backend: &BackendInfo, results: &[TestResult]) {
    let size = if model.size >= 1 << 30 {
        format!("{:.2} GiB", model.size as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.2} MiB", model.size as f64 / (1u64 << 20) as f64)
    };
    println!(
        "| model | size | params | backend | adapter | cache | decode | test | t/s | \
         dispatches/tok | passes/tok | host µs/tok | record µs/tok | host waits/tok |"
    );
    println!(
        "| --- | ---: | ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in results {
        let (ts, ts_std) = mean_std(&samples_ts(r));
        let cost = match r.per_token() {
            Some(c) => format!(
                "{:.1} | {:.1} | {:.1} | {:.1} | {:.3}",
                c.dispatches, c.passes, c.host_us, c.record_us, c.host_waits
            ),
            None => "- | - | - | - | -".into(),
        };
        let decode = format!("{} {}", r.test.plan, backend.path_name(r.test.path));
        println!(
            "| {} | {size} | {:.2} B | {} | {} | {} | {} | {} | {ts:.2} ± {ts_std:.2} | {cost} |",
            model.model_type,
            model.n_params as f64 / 1e9,
            backend.backends,
            backend.adapter,
            r.test.cache_type,
            decode,
            r.test.name()
        );
    }
}

fn print_json(
    model: &ModelInfo,
    backend: &BackendInfo,
    results: &[TestResult],
) -> anyhow::Result<()> {
    let rows: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            let ns: Vec<f64> = r.samples_ns.iter().map(|&x| x as f64).collect();
            let (avg_ns, stddev_ns) = mean_std(&ns);
            let ts = samples_ts(r);
            let (avg_ts, stddev_ts) = mean_std(&ts);
            let (n_prompt, n_gen) = match r.test.kind {
                Kind::Prompt(n) => (n, 0),
                Kind::Gen(n) => (0, n),
            };
            let cost = r.per_token();
            serde_json::json!({
                "model_filename": model.filename,
                "model_type": model.model_type,
                "model_size": model.size,
                "model_n_params": model.n_params,
                "backends": backend.backends,
                "gpu_info": backend.adapter,
                "n_prompt": n_prompt,
                "n_gen": n_gen,
                "n_depth": r.test.depth,
                "type_k": r.test.cache_type.name(),
                "type_v": r.test.cache_type.name(),
                "decode_plan": r.test.plan.to_string(),
                "kernel_path": backend.path_name(r.test.path),
                "avg_ns": avg_ns.round() as u64,
                "stddev_ns": stddev_ns.round() as u64,
                "avg_ts": avg_ts,
                "stddev_ts": stddev_ts,
                "samples_ns": r.samples_ns,
                "samples_ts": ts,
                "dispatches_per_token": cost.map(|c| c.dispatches),
                "passes_per_token": cost.map(|c| c.passes),
                "host_us_per_token": cost.map(|c| c.host_us),
                "record_us_per_token": cost.map(|c| c.record_us),
                "host_waits_per_token": cost.map(|c| c.host_waits),
            })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(())
}

/// The CPU's model name (Linux `/proc/cpuinfo`), or the architecture.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|n| n.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
