//! The GPU attention path inside the real forward pass of the tiny Bonsai fixture: the CPU
//! reference computes norms, projections and the FFN, the GPU does per-head q/k norm + RoPE, the
//! f16 KV cache and attention (batched prefill of the prompt, then decode steps). The final logits
//! must match the all-CPU reference (f32 KV cache) to the engine's GPU-vs-CPU contract, which is
//! what decides that an f16 KV cache is good enough.

mod common;

use bonsai_wgpu::cpu::CpuModel;
use bonsai_wgpu::cpu::CpuSession;
use bonsai_wgpu::cpu::ops::{rmsnorm, silu};
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::attention::{AttentionBuffers, LayerAttention};
use bonsai_wgpu::gpu::buffers::{
    StepParams, read_buffer, storage_buffer, storage_buffer_init, uniform_buffer_init,
};
use bonsai_wgpu::gpu::kernel::PipelineCache;
use bonsai_wgpu::gpu::kv_cache::KvCache;
use bonsai_wgpu::gpu::ops::attention_decode;
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
    let kv = KvCache::new(&ctx, &c, n_ctx).expect("kv cache");
    let f32_buffer = |label: &str, n: usize| storage_buffer(&ctx, label, 4 * n as u64).unwrap();
    let q = f32_buffer("q", t_max * c.q_dim()); // (t_max, n_head, head_dim)
    let k = f32_buffer("k", t_max * c.kv_dim()); // (t_max, n_head_kv, head_dim)
    let v = f32_buffer("v", t_max * c.kv_dim()); // (t_max, n_head_kv, head_dim)
    let out = f32_buffer("out", t_max * c.q_dim()); // (t_max, n_head, head_dim)
    let step = uniform_buffer_init(&ctx, "step", &StepParams::default());
    let scratch = attention_decode::DecodeScratch::new(&ctx, kv.dims, n_ctx).unwrap();
    let norms: Vec<_> = model
        .weights
        .layers
        .iter()
        .map(|w| {
            (
                storage_buffer_init(&ctx, "q_norm", &w.attn_q_norm).unwrap(),
                storage_buffer_init(&ctx, "k_norm", &w.attn_k_norm).unwrap(),
            )
        })
        .collect();
    let bufs = AttentionBuffers {
        step: &step,
        q: &q,
        k: &k,
        v: &v,
        out: &out,
        scratch: &scratch,
        kv: &kv,
    };
    let layers: Vec<LayerAttention> = (0..c.n_layer)
        .map(|l| {
            let (q_norm, k_norm) = &norms[l];
            LayerAttention::new(&ctx, &cache, &bufs, l, q_norm, k_norm, c.rms_eps, t_max).unwrap()
        })
        .collect();

    // Forward of a batch of tokens at positions pos.. with the attention on the GPU.
    let forward = |tokens: &[u32], pos: usize| -> Vec<f32> {
        let n = tokens.len();
        let mut xs: Vec<Vec<f32>> = tokens
            .iter()
            .map(|&t| {
                let mut x = vec![0.0; c.n_embd];
                bonsai_wgpu::quant::q1_0::dequantize_row_q1_0(
                    model.weights.token_embd.row(t as usize),
                    &mut x,
                );
                x
            })
            .collect();
        let mut xb = vec![0.0; c.n_embd];
        for (l, w) in model.weights.layers.iter().enumerate() {
            let (mut qs, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
            for x in &xs {
                rmsnorm(&mut xb, x, &w.attn_norm, c.rms_eps);
                let mut row = vec![0.0; c.q_dim()];
                w.wq.matvec(&mut row, &xb);
                qs.extend_from_slice(&row);
                let mut row = vec![0.0; c.kv_dim()];
                w.wk.matvec(&mut row, &xb);
                ks.extend_from_slice(&row);
                w.wv.matvec(&mut row, &xb);
                vs.extend_from_slice(&row);
            }
            ctx.queue.write_buffer(&q, 0, bytemuck::cast_slice(&qs));
            ctx.queue.write_buffer(&k, 0, bytemuck::cast_slice(&ks));
            ctx.queue.write_buffer(&v, 0, bytemuck::cast_slice(&vs));
            let params = StepParams::new(pos, n);
            ctx.queue
                .write_buffer(&step, 0, bytemuck::bytes_of(&params));
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                if n == 1 {
                    layers[l].encode_decode_kv(&mut pass, (pos + 1) as u32);
                } else {
                    layers[l].encode_prefill(&mut pass, n as u32);
                }
            }
            ctx.queue.submit([encoder.finish()]);
            let att: Vec<f32> =
                pollster::block_on(read_buffer(&ctx, &out, 0, n * c.q_dim())).unwrap();
            for (t, x) in xs.iter_mut().enumerate() {
                let mut xb2 = vec![0.0; c.n_embd];
                w.wo.matvec(&mut xb2, &att[t * c.q_dim()..(t + 1) * c.q_dim()]);
                x.iter_mut().zip(&xb2).for_each(|(x, d)| *x += d);
                rmsnorm(&mut xb, x, &w.ffn_norm, c.rms_eps);
                let (mut hb, mut hb2) = (vec![0.0; c.n_ff], vec![0.0; c.n_ff]);
                w.w_gate.matvec(&mut hb, &xb);
                w.w_up.matvec(&mut hb2, &xb);
                hb.iter_mut().zip(&hb2).for_each(|(g, u)| *g = silu(*g) * u);
                w.w_down.matvec(&mut xb2, &hb);
                x.iter_mut().zip(&xb2).for_each(|(x, d)| *x += d);
            }
        }
        rmsnorm(&mut xb, &xs[n - 1], &model.weights.output_norm, c.rms_eps);
        let mut logits = vec![0.0; c.n_vocab];
        model.weights.head().matvec(&mut logits, &xb);
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
