//! The GPU attention path inside the real forward pass of the tiny Bonsai fixture: the CPU
//! reference's own layer steps ([`RunState`]) compute norms, projections and the FFN, the GPU
//! forward's attention step ([`LayerAttention`]) does per-head q/k norm + RoPE, the f16 KV cache
//! and attention (batched prefill of the prompt, then decode steps). The final logits
//! must match the all-CPU reference (f32 KV cache) to the engine's GPU-vs-CPU contract, which is
//! what decides that an f16 KV cache is good enough.

mod common;

use bonsai_wgpu::cache_type::CacheType;
use bonsai_wgpu::cpu::CpuModel;
use bonsai_wgpu::cpu::CpuSession;
use bonsai_wgpu::cpu::session::RunState;
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::attention::{AttentionBindings, LayerAttention};
use bonsai_wgpu::gpu::buffers::{
    StepParams, read_buffer, storage_buffer, storage_buffer_init, uniform_buffer_init,
};
use bonsai_wgpu::gpu::kernel::{Op, PipelineCache};
use bonsai_wgpu::gpu::kv_cache::KvCache;
use bonsai_wgpu::gpu::ops::attention_decode::DecodeScratch;
use bonsai_wgpu::gpu::{GpuContext, GpuOptions};

/// The engine's end-to-end GPU-vs-CPU contract on logits.
const COSINE_MIN: f64 = 0.9999;

#[test]
fn f16_kv_attention_on_gpu_matches_cpu_forward() {
    let gguf = Gguf::open(common::fixture("tiny-bonsai-dev.gguf")).expect("fixture model");
    let model = CpuModel::from_gguf(&gguf).expect("model");
    let c = model.config.clone();
    let fixture = common::llama_fixture();
    // The longest prompt (193 tokens) then a few decode steps with llama.cpp's greedy tokens.
    let p = fixture
        .prompts
        .iter()
        .max_by_key(|p| p.tokens.len())
        .expect("prompts");
    let prompt = &p.tokens;
    let decode_tokens = &p.greedy[..4];
    let n_ctx = prompt.len() + decode_tokens.len();
    let t_max = prompt.len();

    let ctx = pollster::block_on(GpuContext::new(&GpuOptions::default())).expect("adapter");
    let cache = PipelineCache::new();
    let kv = KvCache::new(&ctx, &c, n_ctx, CacheType::F16).expect("kv cache");
    let f32_buffer = |label: &str, n: usize| storage_buffer(&ctx, label, 4 * n as u64).unwrap();
    let q = f32_buffer("q", t_max * c.q_dim()); // (t_max, n_head, head_dim)
    let k = f32_buffer("k", t_max * c.kv_dim()); // (t_max, n_head_kv, head_dim)
    let v = f32_buffer("v", t_max * c.kv_dim()); // (t_max, n_head_kv, head_dim)
    let out = f32_buffer("out", t_max * c.q_dim()); // (t_max, n_head, head_dim)
    let step = uniform_buffer_init(&ctx, "step", &StepParams::default());
    let scratch = DecodeScratch::new(&ctx, kv.dims, n_ctx).unwrap();
    // The GPU forward's own attention step of each layer, over this test's buffers.
    let layers: Vec<LayerAttention> = (model.weights.layers.iter().enumerate())
        .map(|(l, w)| {
            let q_norm = storage_buffer_init(&ctx, "q_norm", &w.attn_q_norm).unwrap();
            let k_norm = storage_buffer_init(&ctx, "k_norm", &w.attn_k_norm).unwrap();
            let b = AttentionBindings {
                step: &step,
                q: &q,
                k: &k,
                v: &v,
                q_norm: &q_norm,
                k_norm: &k_norm,
                kv: &kv,
                layer: l,
                scratch: &scratch,
                out: &out,
                eps: c.rms_eps,
                max_tokens: t_max,
            };
            LayerAttention::new(&ctx, &cache, &b).unwrap()
        })
        .collect();

    // Forward of a batch of tokens at positions pos..: the CPU reference's own layer steps
    // around the attention core, which runs on the GPU.
    let forward = |tokens: &[u32], pos: usize| -> Vec<f32> {
        let n = tokens.len();
        let mut states: Vec<RunState> = tokens
            .iter()
            .map(|&t| {
                let mut s = RunState::new(&c);
                model.weights.token_embd.embed(t as usize, &mut s.x);
                s
            })
            .collect();
        for (w, attention) in model.weights.layers.iter().zip(&layers) {
            for s in &mut states {
                s.attention_input(&c, w);
            }
            let qs: Vec<f32> = states.iter().flat_map(|s| s.q.iter().copied()).collect();
            let ks: Vec<f32> = states.iter().flat_map(|s| s.k.iter().copied()).collect();
            let vs: Vec<f32> = states.iter().flat_map(|s| s.v.iter().copied()).collect();
            ctx.queue.write_buffer(&q, 0, bytemuck::cast_slice(&qs));
            ctx.queue.write_buffer(&k, 0, bytemuck::cast_slice(&ks));
            ctx.queue.write_buffer(&v, 0, bytemuck::cast_slice(&vs));
            let params = StepParams::new(pos, n);
            ctx.queue
                .write_buffer(&step, 0, bytemuck::bytes_of(&params));
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            attention.encode(
                &mut encoder.begin_compute_pass(&Default::default()),
                &params,
            );
            ctx.queue.submit([encoder.finish()]);
            let att: Vec<f32> =
                pollster::block_on(read_buffer(&ctx, &out, 0, n * c.q_dim())).unwrap();
            for (s, att) in states.iter_mut().zip(att.chunks_exact(c.q_dim())) {
                s.xb[..c.q_dim()].copy_from_slice(att);
                s.attention_output(&c, w);
            }
        }
        let mut logits = vec![0.0; c.n_vocab];
        states[n - 1].logits(&model, &mut logits);
        logits
    };

    let mut cpu = CpuSession::new(model.clone(), n_ctx).expect("cpu session");
    let check = |what: &str, got: &[f32], cpu: &mut CpuSession| {
        let want = pollster::block_on(cpu.logits()).unwrap();
        let cos = common::cosine(got, &want);
        let max_diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!("{what}: cosine vs CPU (f32 KV) {cos:.7}, max |diff| {max_diff:.2e}");
        assert!(cos >= COSINE_MIN, "{what}: cosine {cos} < {COSINE_MIN}");
        assert_eq!(common::argmax(got), common::argmax(&want), "{what}: argmax");
    };

    let logits = forward(prompt, 0);
    pollster::block_on(cpu.feed(prompt)).unwrap();
    check(
        &format!("prefill of {} tokens", prompt.len()),
        &logits,
        &mut cpu,
    );
    let llama_cos = common::cosine(&logits, &common::llama_logits(p));
    eprintln!("prefill: cosine vs llama.cpp {llama_cos:.6}");
    assert!(llama_cos >= common::LLAMA_COSINE_MIN);

    for (i, &t) in decode_tokens.iter().enumerate() {
        let logits = forward(&[t], prompt.len() + i);
        pollster::block_on(cpu.feed(&[t])).unwrap();
        check(&format!("decode step {i}"), &logits, &mut cpu);
    }
    ctx.take_error().expect("no wgpu error");
}
