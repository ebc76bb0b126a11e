//! `GpuBatch`, the GPU continuous-batching engine: one decode step advances several sequences
//! with every weight read once (matmuls over the rows, attention per sequence on its own
//! cache). Checked on tiny-bonsai-dev (Q1_0) and tiny-ternary-dev (Q2_0), both cache types:
//! - a sequence's greedy tokens and logits are bit-identical alone (a 1-slot batch) and among
//!   other sequences, whatever the batch's order and size (sequences join and leave);
//! - its logits match a plain `Session` (matvec decode) and the CPU reference within the GPU
//!   contracts, teacher-forced on the batch's tokens;
//! - bad batches (unknown or repeated slot, token past the vocabulary, full context) are typed
//!   errors that change nothing.

#[macro_use]
mod common;

use std::sync::Arc;

use bonsai_wgpu::Error;
use bonsai_wgpu::batch::{BatchEngine, Candidates};
use bonsai_wgpu::cache_type::CacheType;
use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::{
    DecodePlan, GpuBatch, GpuContext, GpuModel, GpuOptions, KernelPath, Session, SessionOptions,
};
use bonsai_wgpu::sampler::CandidateRequest;
use common::{cosine, fixture};
use pollster::block_on;

/// GPU batch vs plain GPU session and vs the CPU reference, teacher-forced.
const GPU_COSINE_MIN: f64 = 0.9999;
const N_CTX: usize = 64;
/// Decode steps of the batched run.
const STEPS: usize = 8;

/// Prompts of different lengths, so the sequences sit at different positions.
const PROMPTS: [&[u32]; 4] = [
    &[785, 3974, 13876, 38835, 374],
    &[9707, 11, 1879],
    &[151644, 872, 198, 9707, 0, 151645, 198, 151644, 77091, 198],
    &[40, 1075],
];

fn load(file: &str) -> (Gguf, Arc<GpuModel>) {
    let gguf = Gguf::open(fixture(file)).expect("fixture");
    let ctx = block_on(GpuContext::new(&GpuOptions::default())).expect("GPU adapter");
    let model = GpuModel::load(Arc::new(ctx), &gguf).expect("load");
    (gguf, model)
}

fn options(cache_type: CacheType) -> SessionOptions {
    SessionOptions {
        n_ctx: N_CTX,
        cache_type,
        ..SessionOptions::default()
    }
}

/// What one sequence went through: its greedy tokens and the logits before each.
#[derive(Default, Clone)]
struct Trace {
    tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

fn read(batch: &mut GpuBatch, slot: usize, request: CandidateRequest) -> Candidates {
    block_on(batch.candidates(&[(slot, request)]))
        .expect("candidates")
        .remove(0)
}

/// Runs the sequences `which` (indices into PROMPTS) in one batch of `n_slots` slots, the
/// sequence `which[j]` in slot `slots[j]`. Sequence j joins at step `join[j]` (its prompt is
/// prefilled then, while the others decode) and all run until STEPS tokens each.
fn run_batch(
    model: &Arc<GpuModel>,
    cache_type: CacheType,
    n_slots: usize,
    which: &[usize],
    slots: &[usize],
    join: &[usize],
) -> Vec<Trace> {
    let mut batch = GpuBatch::new(model.clone(), n_slots, options(cache_type)).expect("batch");
    let mut traces = vec![Trace::default(); which.len()];
    let mut step = 0;
    while traces.iter().any(|t| t.tokens.len() < STEPS) {
        let mut decode = Vec::new();
        for (j, &seq) in which.iter().enumerate() {
            let slot = slots[j];
            if step == join[j] {
                block_on(batch.prefill(slot, PROMPTS[seq])).expect("prefill");
            }
            if step < join[j] || traces[j].tokens.len() >= STEPS {
                continue;
            }
            let Candidates::Logits(logits) = read(&mut batch, slot, CandidateRequest::Full) else {
                panic!("full logits asked");
            };
            let Candidates::Argmax(id) = read(&mut batch, slot, CandidateRequest::Greedy) else {
                panic!("argmax asked");
            };
            assert_eq!(
                id,
                common::argmax(&logits),
                "slot {slot}: GPU argmax vs logits"
            );
            traces[j].logits.push(logits);
            traces[j].tokens.push(id);
            decode.push((slot, id));
        }
        // Rows in a different order than the slots, to check the row <-> slot mapping.
        decode.reverse();
        block_on(batch.decode(&decode)).expect("batched decode");
        step += 1;
    }
    traces
}

/// Teacher-forces `trace` through `engine` after `prompt`; returns the logits before each token.
fn forced<E: Engine>(engine: &mut E, prompt: &[u32], trace: &Trace) -> Vec<Vec<f32>> {
    block_on(engine.feed(prompt)).expect("feed");
    let mut out = Vec::new();
    for &t in &trace.tokens {
        out.push(block_on(engine.logits()).expect("logits"));
        block_on(engine.feed(&[t])).expect("feed");
    }
    out
}

fn check(file: &str, cache_type: CacheType) {
    let (gguf, model) = load(file);
    let all = [0, 1, 2, 3];
    // Together, joining at different steps, in slots out of order.
    let together = run_batch(&model, cache_type, 4, &all, &[2, 0, 3, 1], &[0, 0, 3, 5]);
    let cpu_model = CpuModel::from_gguf(&gguf).expect("CPU model");
    for seq in all {
        // Alone in a batch of one: the same bits.
        let alone = run_batch(&model, cache_type, 1, &[seq], &[0], &[0]).remove(0);
        let t = &together[seq];
        assert_eq!(
            t.tokens, alone.tokens,
            "{file} {cache_type} seq {seq}: tokens alone vs batched"
        );
        assert!(
            t.logits == alone.logits,
            "{file} {cache_type} seq {seq}: logits alone vs batched differ"
        );
        // A plain session (matvec decode; unfused, so its matvecs read the normed input the
        // batch's matmuls do: on the q8 path the same int8 values) and the CPU reference (in
        // the kernels' arithmetic), on the batch's tokens.
        let unfused = SessionOptions {
            decode_plan: DecodePlan::Unfused,
            ..options(cache_type)
        };
        let mut session = Session::new(model.clone(), unfused).expect("session");
        let plain = forced(&mut session, PROMPTS[seq], t);
        let mut cpu = CpuSession::with_cache_type(cpu_model.clone(), N_CTX, Some(cache_type))
            .expect("CPU session")
            .with_q8_activations(model.ctx.kernel_path == KernelPath::Q8);
        let reference = forced(&mut cpu, PROMPTS[seq], t);
        let mut worst = (1.0f64, 1.0f64);
        for (i, got) in t.logits.iter().enumerate() {
            let (a, b) = (cosine(got, &plain[i]), cosine(got, &reference[i]));
            worst = (worst.0.min(a), worst.1.min(b));
            assert!(
                a >= GPU_COSINE_MIN,
                "{file} {cache_type} seq {seq} step {i}: vs session {a}"
            );
            assert!(
                b >= common::model_cosine_min(&model.ctx, GPU_COSINE_MIN),
                "{file} {cache_type} seq {seq} step {i}: vs CPU {b}"
            );
        }
        note!(
            "{file} {cache_type} seq {seq}: worst cosine vs session {:.7}, vs CPU {:.7}",
            worst.0,
            worst.1
        );
    }
}

#[test]
fn batched_decode_q1_0() {
    check("tiny-bonsai-dev.gguf", CacheType::F16);
    check("tiny-bonsai-dev.gguf", CacheType::Q8_0);
}

#[test]
fn batched_decode_ternary() {
    check("tiny-ternary-dev.gguf", CacheType::F16);
}

#[test]
fn bad_batches_are_typed_errors() {
    let (_, model) = load("tiny-bonsai-dev.gguf");
    let n_vocab = model.config.n_vocab as u32;
    let mut batch = GpuBatch::new(model, 2, options(CacheType::F16)).expect("batch");
    block_on(batch.prefill(0, PROMPTS[0])).expect("prefill");
    block_on(batch.prefill(1, PROMPTS[1])).expect("prefill");
    let before = (batch.n_past(0), batch.n_past(1));
    let invalid = |e: Error, what: &str| match e {
        Error::InvalidArgument(m) => assert!(m.contains(what), "`{m}` does not say {what}"),
        other => panic!("{what}: {other:?}"),
    };
    let e = block_on(batch.decode(&[(0, 1), (0, 2)])).unwrap_err();
    invalid(e, "twice");
    let e = block_on(batch.decode(&[(5, 1)])).unwrap_err();
    invalid(e, "does not exist");
    let e = block_on(batch.decode(&[(0, 1), (1, n_vocab)])).unwrap_err();
    assert!(matches!(e, Error::BadToken { .. }), "{e:?}");
    assert_eq!(
        (batch.n_past(0), batch.n_past(1)),
        before,
        "a refused step changed nothing"
    );
    // Fill slot 1's context: the step that would pass it is refused.
    let room = N_CTX - batch.n_past(1);
    for _ in 0..room {
        block_on(batch.decode(&[(1, 9707)])).expect("decode");
    }
    let e = block_on(batch.decode(&[(0, 1), (1, 9707)])).unwrap_err();
    assert!(matches!(e, Error::ContextOverflow { .. }), "{e:?}");
    assert_eq!(batch.n_past(0), before.0);
    assert!(GpuBatch::new(batch_model(), 0, options(CacheType::F16)).is_err());
}

fn batch_model() -> Arc<GpuModel> {
    load("tiny-bonsai-dev.gguf").1
}
