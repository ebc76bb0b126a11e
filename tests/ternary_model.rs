//! Ternary-Bonsai (Q2_0, GGML type 42) end to end: the CPU reference and the GPU engine against
//! llama.cpp's outputs for tiny-ternary-dev (the Q1_0 contract: cosine >= 0.999, argmax equal
//! where llama.cpp's margin is clear, teacher-forced greedy; GPU vs CPU >= 0.9999), and files
//! that mix Q1_0, Q2_0, F16 and F32 per tensor.

mod common;

use std::sync::Arc;

use bonsai_wgpu::Error;
use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::gguf::{GgmlType, Gguf, GgufWriter};
use bonsai_wgpu::gpu::{GpuContext, GpuModel, GpuOptions, Session, SessionOptions};
use bonsai_wgpu::quant::dequantize_row;
use bonsai_wgpu::quant::q1_0::quantize_row_q1_0;
use common::*;
use pollster::block_on;

/// GPU vs the exact-f32 CPU reference: f16 KV cache and another summation order (the Q1_0
/// tests' bound, tests/gpu_model.rs).
const GPU_CPU_COSINE_MIN: f64 = 0.9999;
/// A file whose F16 / F32 tensors hold the same values as the ternary file's Q2_0 ones (-d, 0,
/// +d are exact in f16) computes the same logits up to summation order.
const EXACT_CONVERSION_COSINE_MIN: f64 = 0.99999;

const MODEL: &str = "tiny-ternary-dev.gguf";
const GOLDENS: &str = "tiny-ternary-dev.llama.json";

fn ternary() -> Gguf {
    Gguf::open(fixture(MODEL)).expect("open tiny-ternary-dev")
}

fn gpu_ctx() -> Arc<GpuContext> {
    let ctx = block_on(GpuContext::new(&GpuOptions::default())).expect("GPU adapter");
    eprintln!("adapter: {} ({:?})", ctx.info.name, ctx.info.backend);
    Arc::new(ctx)
}

fn gpu_session(model: &Arc<GpuModel>, n_ctx: usize) -> Session {
    let opts = SessionOptions {
        n_ctx,
        ..SessionOptions::default()
    };
    Session::new(Arc::clone(model), opts).expect("session")
}

/// Feeds every prompt token one at a time, then llama.cpp's greedy tokens (teacher-forced),
/// collecting argmax mismatches where llama.cpp's margin is clear; returns them with the cosine
/// of the last prompt position's logits against llama.cpp's.
fn teacher_forced<E: Engine>(engine: &mut E, p: &LlamaPrompt) -> (Vec<String>, f64) {
    let mut mismatches = Vec::new();
    let mut last_cos = 0.0;
    for (i, &tok) in p.tokens.iter().enumerate() {
        block_on(engine.feed(&[tok])).expect("feed");
        let logits = block_on(engine.logits()).expect("logits");
        let got = argmax(&logits);
        if p.prompt_margin[i] > LLAMA_MARGIN_MIN && got != p.prompt_argmax[i] {
            let want = p.prompt_argmax[i];
            mismatches.push(format!("prompt pos {i}: got {got}, want {want}"));
        }
        if i + 1 == p.tokens.len() {
            last_cos = cosine(&logits, &llama_logits(p));
        }
    }
    for (j, &want) in p.greedy.iter().enumerate() {
        let got = block_on(engine.greedy()).expect("greedy");
        if p.greedy_margin[j] > LLAMA_MARGIN_MIN && got != want {
            mismatches.push(format!("greedy step {j}: got {got}, want {want}"));
        }
        block_on(engine.feed(&[want])).expect("feed");
    }
    (mismatches, last_cos)
}

fn assert_parity(what: &str, p: &LlamaPrompt, mismatches: &[String], cos: f64) {
    eprintln!(
        "{what} {} tokens: cosine vs llama.cpp {cos:.6}",
        p.tokens.len()
    );
    assert!(
        mismatches.is_empty(),
        "{what} prompt {:?}: argmax mismatches: {mismatches:#?}",
        p.text
    );
    assert!(
        cos >= LLAMA_COSINE_MIN,
        "{what} prompt {:?}: last-position cosine {cos:.6} < {LLAMA_COSINE_MIN}",
        p.text
    );
}

#[test]
fn cpu_reference_matches_llama_cpp_on_ternary() {
    let gguf = ternary();
    assert_eq!(
        gguf.tensor_info("blk.0.attn_q.weight").map(|t| t.ggml_type),
        Some(GgmlType::Q2_0)
    );
    let model = CpuModel::from_gguf(&gguf).expect("load ternary on the CPU");
    let fx = llama_fixture_named(GOLDENS);
    assert_eq!(fx.n_vocab, model.config.n_vocab);
    for p in &fx.prompts {
        let n_ctx = p.tokens.len() + p.greedy.len() + 1;
        let mut s = CpuSession::new(Arc::clone(&model), n_ctx).expect("session");
        let (mismatches, cos) = teacher_forced(&mut s, p);
        assert_parity("CPU", p, &mismatches, cos);
    }
}

/// The prompt in one batched prefill (the matmul kernels) against the CPU reference and
/// llama.cpp, then token by token (the matvec kernels) with teacher-forced greedy steps.
#[test]
fn gpu_matches_cpu_reference_and_llama_cpp_on_ternary() {
    let gguf = ternary();
    let gpu = GpuModel::load(gpu_ctx(), &gguf).expect("load ternary on the GPU");
    let cpu = CpuModel::from_gguf(&gguf).expect("load ternary on the CPU");
    for p in &llama_fixture_named(GOLDENS).prompts {
        let mut g = gpu_session(&gpu, 512);
        block_on(g.feed(&p.tokens)).expect("prefill");
        let gpu_logits = block_on(g.logits()).expect("logits");
        let mut c = CpuSession::new(Arc::clone(&cpu), 512).expect("cpu session");
        block_on(c.feed(&p.tokens)).expect("cpu feed");
        let cpu_logits = block_on(c.logits()).expect("cpu logits");
        let cos_cpu = cosine(&gpu_logits, &cpu_logits);
        let cos_llama = cosine(&gpu_logits, &llama_logits(p));
        eprintln!(
            "GPU prefill {} tokens: cosine vs CPU {cos_cpu:.7}, vs llama.cpp {cos_llama:.6}",
            p.tokens.len()
        );
        assert!(
            cos_cpu >= GPU_CPU_COSINE_MIN,
            "GPU vs CPU cosine {cos_cpu:.7}"
        );
        assert!(
            cos_llama >= LLAMA_COSINE_MIN,
            "GPU vs llama.cpp cosine {cos_llama:.6}"
        );

        if p.tokens.len() < 100 {
            let n_ctx = p.tokens.len() + p.greedy.len() + 1;
            let mut g = gpu_session(&gpu, n_ctx);
            let (mismatches, cos) = teacher_forced(&mut g, p);
            assert_parity("GPU decode", p, &mismatches, cos);
        }
    }
}

/// How a tensor of the mixed file is stored.
#[derive(Clone, Copy)]
enum Store {
    Keep,
    F32,
    F16,
    Q1_0,
}

/// The ternary fixture with some tensors re-stored as F32, F16 or Q1_0 (by name), every other
/// tensor and all metadata copied.
fn mixed_file(g: &Gguf, store: &dyn Fn(&str) -> Store) -> Gguf {
    let mut w = GgufWriter::new();
    for (key, value) in g.metadata() {
        if key != "general.alignment" {
            w.set(key.clone(), value.clone());
        }
    }
    for t in g.tensors() {
        let bytes = g.tensor_bytes(t).expect("tensor bytes");
        let mut values = vec![0.0f32; t.n_elements() as usize];
        let data = match store(&t.name) {
            Store::Keep => bytes.to_vec(),
            s => {
                dequantize_row(t.ggml_type, bytes, &mut values).expect("dequantize");
                match s {
                    Store::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    Store::F16 => values
                        .iter()
                        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                        .collect(),
                    _ => {
                        let mut q = vec![0u8; values.len() / 128 * 18];
                        quantize_row_q1_0(&values, &mut q);
                        q
                    }
                }
            }
        };
        let ty = match store(&t.name) {
            Store::Keep => t.ggml_type,
            Store::F32 => GgmlType::F32,
            Store::F16 => GgmlType::F16,
            Store::Q1_0 => GgmlType::Q1_0,
        };
        w.add_tensor(t.name.clone(), t.dims.clone(), ty, data);
    }
    Gguf::from_bytes(w.to_bytes()).expect("mixed file parses")
}

fn last_logits<E: Engine>(engine: &mut E, tokens: &[u32]) -> Vec<f32> {
    block_on(engine.feed(tokens)).expect("feed");
    block_on(engine.logits()).expect("logits")
}

/// A file mixing Q1_0, Q2_0, F16 and F32 linear weights (and F16 norms) loads on the CPU and the
/// GPU, each tensor dispatched on its own type: the GPU agrees with the CPU, and where the
/// conversion is exact (F16 / F32 of ternary values) with the all-Q2_0 file.
#[test]
fn mixed_type_file_loads_on_cpu_and_gpu() {
    let g = ternary();
    let store = |name: &str| match name {
        "token_embd.weight" | "blk.1.attn_v.weight" => Store::F16,
        "blk.0.attn_q.weight" | "blk.1.ffn_down.weight" | "blk.0.ffn_norm.weight" => Store::F32,
        "blk.0.ffn_up.weight" | "blk.1.attn_output.weight" => Store::Q1_0,
        "output_norm.weight" => Store::F16,
        _ => Store::Keep,
    };
    let mixed = mixed_file(&g, &store);
    let types: Vec<GgmlType> = [
        "token_embd.weight",
        "blk.0.attn_q.weight",
        "blk.0.ffn_up.weight",
    ]
    .iter()
    .map(|n| mixed.tensor_info(n).expect("tensor").ggml_type)
    .collect();
    assert_eq!(types, [GgmlType::F16, GgmlType::F32, GgmlType::Q1_0]);
    let p = &llama_fixture_named(GOLDENS).prompts[0];
    let n_ctx = p.tokens.len() + 1;

    let cpu = CpuModel::from_gguf(&mixed).expect("mixed file on the CPU");
    let mut c = CpuSession::new(cpu, n_ctx).unwrap();
    let cpu_logits = last_logits(&mut c, &p.tokens);
    let gpu = GpuModel::load(gpu_ctx(), &mixed).expect("mixed file on the GPU");
    let gpu_logits = last_logits(&mut gpu_session(&gpu, n_ctx), &p.tokens);
    let cos = cosine(&gpu_logits, &cpu_logits);
    eprintln!("mixed file: GPU vs CPU cosine {cos:.7}");
    assert!(
        cos >= GPU_CPU_COSINE_MIN,
        "mixed file: GPU vs CPU cosine {cos:.7}"
    );

    // Only exact conversions: the logits of the all-Q2_0 file.
    let exact = mixed_file(&g, &|name| match store(name) {
        Store::Q1_0 => Store::Keep,
        s => s,
    });
    let mut c = CpuSession::new(CpuModel::from_gguf(&exact).unwrap(), n_ctx).unwrap();
    let exact_logits = last_logits(&mut c, &p.tokens);
    let mut c = CpuSession::new(CpuModel::from_gguf(&g).unwrap(), n_ctx).unwrap();
    let ternary_logits = last_logits(&mut c, &p.tokens);
    let cos = cosine(&exact_logits, &ternary_logits);
    assert!(
        cos >= EXACT_CONVERSION_COSINE_MIN,
        "F16/F32 copies of ternary tensors: cosine {cos:.7} vs the Q2_0 file"
    );
}

/// A linear weight of a type no engine computes with is refused at load, naming the tensor.
#[test]
fn unsupported_tensor_type_is_named() {
    let g = ternary();
    let mut w = GgufWriter::new();
    for (key, value) in g.metadata() {
        if key != "general.alignment" {
            w.set(key.clone(), value.clone());
        }
    }
    for t in g.tensors() {
        let bytes = g.tensor_bytes(t).unwrap();
        if t.name == "blk.1.ffn_gate.weight" {
            // Same byte count, as Q4_0 (32 weights per 18 bytes) would need twice the rows.
            let dims = vec![t.dims[0], t.dims[1] / 2];
            let data = vec![0u8; (t.dims[0] * t.dims[1] / 2 / 32 * 18) as usize];
            w.add_tensor(t.name.clone(), dims, GgmlType::Q4_0, data);
        } else {
            w.add_tensor(t.name.clone(), t.dims.clone(), t.ggml_type, bytes.to_vec());
        }
    }
    let bad = Gguf::from_bytes(w.to_bytes()).expect("parses");
    let check = |e: Error| match e {
        Error::BadTensor { name, reason } => {
            assert_eq!(name, "blk.1.ffn_gate.weight", "{reason}");
        }
        other => panic!("expected BadTensor, got {other}"),
    };
    check(CpuModel::from_gguf(&bad).err().expect("CPU refuses"));
    check(GpuModel::load(gpu_ctx(), &bad).err().expect("GPU refuses"));
}
