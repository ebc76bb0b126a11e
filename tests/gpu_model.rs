//! The whole forward pass on the GPU (lavapipe in CI) against the CPU reference and llama.cpp.

mod common;

use std::sync::Arc;

use bonsai_wgpu::Error;
use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::{GpuContext, GpuModel, GpuOptions, KernelPath, Session, SessionOptions};
use common::*;
use pollster::block_on;

/// GPU vs the exact-f32 CPU reference: the KV cache is f16 on the GPU and sums run in another
/// order, which costs ~1e-5 of cosine; a wrong kernel costs far more.
const GPU_CPU_COSINE_MIN: f64 = 0.9999;
/// Where the CPU reference's top1-top2 gap is below this, f16 KV rounding may flip the argmax.
const GPU_CPU_MARGIN_MIN: f32 = 0.02;

fn load() -> (Arc<GpuModel>, Arc<CpuModel>) {
    load_path(KernelPath::Auto)
}

fn load_path(kernel_path: KernelPath) -> (Arc<GpuModel>, Arc<CpuModel>) {
    let gguf = Gguf::open(fixture("tiny-bonsai-dev.gguf")).expect("open fixture");
    let opts = GpuOptions {
        kernel_path,
        ..GpuOptions::default()
    };
    let ctx = block_on(GpuContext::new(&opts)).expect("GPU adapter (lavapipe in CI)");
    eprintln!("adapter: {} ({:?})", ctx.info.name, ctx.info.backend);
    let gpu = GpuModel::load(Arc::new(ctx), &gguf).expect("load on GPU");
    let cpu = CpuModel::from_gguf(&gguf).expect("load on CPU");
    (gpu, cpu)
}

fn session(model: &Arc<GpuModel>, n_ctx: usize) -> Session {
    Session::new(
        Arc::clone(model),
        SessionOptions {
            n_ctx,
            ..SessionOptions::default()
        },
    )
    .expect("session")
}

fn margin(logits: &[f32]) -> f32 {
    let top = bonsai_wgpu::cpu::ops::top_k(logits, 2);
    top[0].0 - top[1].0
}

/// Feeds `p` in one batch on the GPU and on the CPU (in the GPU path's arithmetic) and checks
/// the last logits against the CPU reference and llama.cpp; returns the GPU session and logits.
fn check_prompt(gpu: &Arc<GpuModel>, cpu: &Arc<CpuModel>, p: &LlamaPrompt) -> (Session, Vec<f32>) {
    let path = gpu.ctx.kernel_path;
    let mut s = session(gpu, 512);
    block_on(s.feed(&p.tokens)).expect("feed");
    let gpu_logits = block_on(s.logits()).expect("logits");
    let mut c = CpuSession::new(Arc::clone(cpu), 512)
        .expect("cpu session")
        .with_q8_activations(path == KernelPath::Q8);
    block_on(c.feed(&p.tokens)).expect("cpu feed");
    let cpu_logits = block_on(c.logits()).expect("cpu logits");
    let cos_cpu = cosine(&gpu_logits, &cpu_logits);
    let cos_llama = cosine(&gpu_logits, &llama_logits(p));
    eprintln!(
        "{path} path, {} tokens: cosine vs CPU {cos_cpu:.7}, vs llama.cpp {cos_llama:.6}",
        p.tokens.len()
    );
    assert!(
        cos_cpu >= model_cosine_min(&gpu.ctx, GPU_CPU_COSINE_MIN),
        "{path} prompt {:?}: GPU vs CPU cosine {cos_cpu:.7}",
        p.text
    );
    assert!(
        cos_llama >= LLAMA_COSINE_MIN,
        "{path} prompt {:?}: GPU vs llama.cpp cosine {cos_llama:.6}",
        p.text
    );
    (s, gpu_logits)
}

#[test]
fn gpu_matches_cpu_reference_and_llama_cpp() {
    let (gpu, cpu) = load();
    for p in &llama_fixture().prompts {
        // the prompt in one batched feed
        let (mut s, gpu_logits) = check_prompt(&gpu, &cpu, p);
        assert_eq!(
            block_on(s.greedy()).unwrap(),
            argmax(&gpu_logits),
            "GPU argmax != argmax of its logits"
        );
    }
}

/// Token by token (the decode kernels), with llama.cpp's argmax at every prompt position and
/// every teacher-forced greedy step where llama.cpp's margin is clear.
#[test]
fn gpu_decode_argmax_matches_llama_cpp_at_every_position() {
    decode_argmax_matches_llama_cpp(&load().0);
}

/// The q8 kernel path through the whole model: prefill logits against the CPU reference in the
/// same arithmetic and against llama.cpp (whose CPU matmuls also take q8 activations), and the
/// decode argmax at every confident position.
#[test]
fn q8_path_matches_cpu_q8_and_llama_cpp() {
    let (gpu, cpu) = load_path(KernelPath::Q8);
    assert_eq!(gpu.ctx.kernel_path, KernelPath::Q8);
    for p in &llama_fixture().prompts {
        check_prompt(&gpu, &cpu, p);
    }
    decode_argmax_matches_llama_cpp(&gpu);
}

/// Teacher-forced decode over the short fixture prompts and llama.cpp's greedy replies: the
/// argmax must be llama.cpp's wherever its top1-top2 gap exceeds LLAMA_MARGIN_MIN.
fn decode_argmax_matches_llama_cpp(gpu: &Arc<GpuModel>) {
    for p in llama_fixture()
        .prompts
        .iter()
        .filter(|p| p.tokens.len() < 100)
    {
        let mut s = session(gpu, 128);
        let mut mismatches = Vec::new();
        let steps = p
            .tokens
            .iter()
            .zip(p.prompt_argmax.iter().zip(&p.prompt_margin));
        for (i, (&tok, (&want, &m))) in steps.enumerate() {
            block_on(s.feed(&[tok])).expect("feed");
            let got = block_on(s.greedy()).expect("greedy");
            if m > LLAMA_MARGIN_MIN && got != want {
                mismatches.push(format!("prompt pos {i}: got {got}, want {want}"));
            }
        }
        for (j, (&want, &m)) in p.greedy.iter().zip(&p.greedy_margin).enumerate() {
            let got = block_on(s.greedy()).expect("greedy");
            if m > LLAMA_MARGIN_MIN && got != want {
                mismatches.push(format!("greedy step {j}: got {got}, want {want}"));
            }
            block_on(s.feed(&[want])).expect("feed");
        }
        assert!(
            mismatches.is_empty(),
            "prompt {:?}: {mismatches:#?}",
            p.text
        );
    }
}

/// The 193-token prompt in one prefill, then 260 teacher-forced decode steps (past two
/// attention chunks), against the CPU reference fed the same tokens.
#[test]
fn long_generation_agrees_with_cpu_reference() {
    let (gpu, cpu) = load();
    let fx = llama_fixture();
    let p = fx
        .prompts
        .iter()
        .find(|p| p.tokens.len() > 100)
        .expect("long prompt");
    let n_gen = 260;
    let n_ctx = p.tokens.len() + n_gen + 1;
    let mut g = session(&gpu, n_ctx);
    let mut c = CpuSession::new(Arc::clone(&cpu), n_ctx)
        .expect("cpu session")
        .with_q8_activations(gpu.ctx.kernel_path == KernelPath::Q8);
    block_on(g.feed(&p.tokens)).expect("gpu prefill");
    block_on(c.feed(&p.tokens)).expect("cpu prefill");
    let mut flips = Vec::new();
    for step in 0..n_gen {
        let cpu_logits = block_on(c.logits()).expect("cpu logits");
        let want = argmax(&cpu_logits);
        let got = block_on(g.greedy()).expect("gpu greedy");
        if got != want && margin(&cpu_logits) > GPU_CPU_MARGIN_MIN {
            flips.push(format!(
                "step {step} (pos {}): GPU {got}, CPU {want}",
                g.n_past()
            ));
        }
        if step % 50 == 0 || step + 1 == n_gen {
            let cos = cosine(&block_on(g.logits()).expect("gpu logits"), &cpu_logits);
            assert!(
                cos >= model_cosine_min(&gpu.ctx, GPU_CPU_COSINE_MIN),
                "step {step} (pos {}): cosine {cos:.7}",
                g.n_past()
            );
        }
        // both continue with the CPU's choice so they see the same tokens
        block_on(g.feed(&[want])).expect("gpu feed");
        block_on(c.feed(&[want])).expect("cpu feed");
    }
    assert!(
        flips.is_empty(),
        "argmax differs where the CPU is confident: {flips:#?}"
    );
}

#[test]
fn prefill_equals_token_by_token_decode() {
    let (gpu, _) = load();
    let fx = llama_fixture();
    let tokens = &fx.prompts[0].tokens;
    let mut batched = session(&gpu, 64);
    block_on(batched.feed(tokens)).expect("prefill");
    let mut stepped = session(&gpu, 64);
    for &t in tokens {
        block_on(stepped.feed(&[t])).expect("decode");
    }
    let cos = cosine(
        &block_on(batched.logits()).unwrap(),
        &block_on(stepped.logits()).unwrap(),
    );
    assert!(
        cos >= GPU_CPU_COSINE_MIN,
        "prefill vs decode cosine {cos:.7}"
    );
    // a second prefill on top of cached tokens (a chat turn) too
    let more = &fx.prompts[1].tokens;
    block_on(batched.feed(more)).expect("prefill 2");
    for &t in more {
        block_on(stepped.feed(&[t])).expect("decode 2");
    }
    let cos = cosine(
        &block_on(batched.logits()).unwrap(),
        &block_on(stepped.logits()).unwrap(),
    );
    assert!(
        cos >= GPU_CPU_COSINE_MIN,
        "second prefill vs decode cosine {cos:.7}"
    );
}

#[test]
fn context_overflow_and_bad_tokens_are_errors() {
    let (gpu, _) = load();
    let mut s = session(&gpu, 8);
    let err = block_on(s.feed(&[1; 9])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ContextOverflow {
                needed: 9,
                capacity: 8
            }
        ),
        "{err}"
    );
    block_on(s.feed(&[1; 8])).expect("exactly full");
    let err = block_on(s.feed(&[1])).unwrap_err();
    assert!(matches!(err, Error::ContextOverflow { .. }), "{err}");
    let err = block_on(s.feed(&[200_000])).unwrap_err();
    assert!(matches!(err, Error::BadToken { id: 200_000, .. }), "{err}");
    s.reset();
    assert!(block_on(s.greedy()).is_err(), "no logits after a reset");
    let too_big = Session::new(
        Arc::clone(&gpu),
        SessionOptions {
            n_ctx: 1 << 20,
            ..Default::default()
        },
    );
    assert!(too_big.is_err());
}
