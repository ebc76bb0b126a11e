//! The whole batched (prefill) forward pass of the tiny Bonsai fixture on the GPU, built only
//! from the crate's ops: embed_q1_0, rmsnorm, matmul_q1_0 (+ fused residual), the attention core
//! (qk_norm_rope, f16 KV cache, attention_prefill), silu_mul, and the head as matvec_q1_0. The
//! 193-token prompt goes through in chunks of 64 (so later chunks attend to an earlier n_past),
//! then single tokens through the same batch kernels; every step's last logits must match the
//! CPU reference. This is the data flow a GPU session's prefill follows.

mod common;

use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::attention::{AttentionBuffers, LayerAttention};
use bonsai_wgpu::gpu::kv_cache::KvCache;
use bonsai_wgpu::gpu::op::{
    PipelineCache, StepParams, read_buffer, storage_buffer, storage_buffer_init,
    uniform_buffer_init,
};
use bonsai_wgpu::gpu::ops::attention_decode::DecodeScratch;
use bonsai_wgpu::gpu::ops::embed_q1_0::EmbedQ1_0;
use bonsai_wgpu::gpu::ops::matmul_q1_0::{self, MatmulQ1_0, MatmulQ1_0Bindings};
use bonsai_wgpu::gpu::ops::matvec_q1_0::MatvecQ1_0;
use bonsai_wgpu::gpu::ops::rmsnorm::Rmsnorm;
use bonsai_wgpu::gpu::ops::silu_mul::SiluMul;
use bonsai_wgpu::gpu::q1_0::Q1_0Weight;
use bonsai_wgpu::gpu::{GpuContext, GpuOptions};

/// The engine's end-to-end GPU-vs-CPU contract on logits.
const COSINE_MIN: f64 = 0.9999;
/// Tokens per prefill step.
const BATCH: usize = 64;

struct Layer {
    attn_norm: Rmsnorm,
    wq: MatmulQ1_0,
    wk: MatmulQ1_0,
    wv: MatmulQ1_0,
    attention: LayerAttention,
    wo: MatmulQ1_0,
    ffn_norm: Rmsnorm,
    w_gate: MatmulQ1_0,
    w_up: MatmulQ1_0,
    silu_mul: SiluMul,
    w_down: MatmulQ1_0,
    // The weights the kernels above bind, owned by the layer.
    _weights: Vec<Q1_0Weight>,
    _norms: [wgpu::Buffer; 4],
}

#[test]
fn batched_gpu_forward_matches_cpu() {
    let gguf = Gguf::open(common::fixture("tiny-bonsai-dev.gguf")).expect("fixture model");
    let model = CpuModel::from_gguf(&gguf).expect("model");
    let c = model.config.clone();
    let fixture = common::llama_fixture();
    let p = fixture
        .prompts
        .iter()
        .max_by_key(|p| p.tokens.len())
        .expect("prompts");
    let decode_tokens = &p.greedy[..3];
    let n_ctx = p.tokens.len() + decode_tokens.len();

    let ctx = pollster::block_on(GpuContext::new(&GpuOptions::default())).expect("adapter");
    let cache = PipelineCache::new();
    let f32s = |label: &str, n: usize| storage_buffer(&ctx, label, 4 * n as u64).unwrap();
    let (b, e, f) = (BATCH, c.n_embd, c.n_ff);
    // Run state, llama2.c names, one row per token of the batch.
    let x = f32s("x", b * e); // (batch, n_embd) residual stream
    let xb = f32s("xb", b * e); // (batch, n_embd) normed input
    let q = f32s("q", b * c.q_dim()); // (batch, n_head, head_dim)
    let k = f32s("k", b * c.kv_dim()); // (batch, n_head_kv, head_dim)
    let v = f32s("v", b * c.kv_dim()); // (batch, n_head_kv, head_dim)
    let att = f32s("att", b * c.q_dim()); // (batch, n_head, head_dim) attention output
    let hb = f32s("hb", b * f); // (batch, n_ff)
    let hb2 = f32s("hb2", b * f); // (batch, n_ff)
    let last = f32s("last", e); // (n_embd) normed last row
    let logits = f32s("logits", c.n_vocab); // (n_vocab)
    let tokens = storage_buffer(&ctx, "tokens", 4 * b as u64).unwrap(); // (batch) u32
    let step = uniform_buffer_init(&ctx, "step", &StepParams::default());
    let kv = KvCache::new(&ctx, &c, n_ctx).expect("kv cache");
    let scratch = DecodeScratch::new(&ctx, kv.dims, n_ctx).unwrap();

    let upload = |name: &str| {
        let info = gguf.tensor_info(name).expect("tensor");
        let (kk, n) = (info.dims[0] as usize, info.dims[1] as usize);
        Q1_0Weight::upload(&ctx, name, gguf.tensor_data(name).unwrap(), kk, n).unwrap()
    };
    let vector = |data: &[f32]| storage_buffer_init(&ctx, "norm", data).unwrap();
    let token_embd = upload("token_embd.weight");
    let output_norm = vector(&model.output_norm);
    let bufs = AttentionBuffers {
        step: &step,
        q: &q,
        k: &k,
        v: &v,
        out: &att,
        scratch: &scratch,
        kv: &kv,
    };
    let matmul = |w: &Q1_0Weight, x_in: &wgpu::Buffer, y: &wgpu::Buffer, acc: bool| {
        let mb = MatmulQ1_0Bindings {
            step: &step,
            x: x_in,
            w,
            y,
        };
        matmul_q1_0::build(&ctx, &cache, b, acc, &mb).unwrap()
    };
    let eps = c.rms_eps;
    let layers: Vec<Layer> = model
        .layers
        .iter()
        .enumerate()
        .map(|(l, w)| {
            let name = |t: &str| format!("blk.{l}.{t}.weight");
            let weights: Vec<Q1_0Weight> = [
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ]
            .iter()
            .map(|t| upload(&name(t)))
            .collect();
            let norms = [
                vector(&w.attn_norm),
                vector(&w.ffn_norm),
                vector(&w.attn_q_norm),
                vector(&w.attn_k_norm),
            ];
            Layer {
                attn_norm: Rmsnorm::new(
                    &ctx,
                    &cache,
                    &norms[0],
                    Some(&x),
                    &xb,
                    e as u32,
                    b as u32,
                    eps,
                )
                .unwrap(),
                wq: matmul(&weights[0], &xb, &q, false),
                wk: matmul(&weights[1], &xb, &k, false),
                wv: matmul(&weights[2], &xb, &v, false),
                attention: LayerAttention::new(
                    &ctx, &cache, &bufs, l, &norms[2], &norms[3], eps, b,
                )
                .unwrap(),
                wo: matmul(&weights[3], &att, &x, true),
                ffn_norm: Rmsnorm::new(
                    &ctx,
                    &cache,
                    &norms[1],
                    Some(&x),
                    &xb,
                    e as u32,
                    b as u32,
                    eps,
                )
                .unwrap(),
                w_gate: matmul(&weights[4], &xb, &hb, false),
                w_up: matmul(&weights[5], &xb, &hb2, false),
                silu_mul: SiluMul::new(&ctx, &cache, &hb, &hb2, (b * f) as u32).unwrap(),
                w_down: matmul(&weights[6], &hb, &x, true),
                _weights: weights,
                _norms: norms,
            }
        })
        .collect();
    let embed = EmbedQ1_0::new(&ctx, &cache, &token_embd, &tokens, &x, b as u32).unwrap();
    let final_norm = Rmsnorm::new(
        &ctx,
        &cache,
        &output_norm,
        Some(&x),
        &xb,
        e as u32,
        b as u32,
        eps,
    )
    .unwrap();
    let head = MatvecQ1_0::new(
        &ctx,
        &cache,
        &token_embd,
        &last,
        &logits,
        Default::default(),
    )
    .unwrap();

    // One batched step: tokens at positions pos.., returns the last token's logits.
    let forward = |chunk: &[u32], pos: usize| -> Vec<f32> {
        let n = chunk.len();
        ctx.queue
            .write_buffer(&tokens, 0, bytemuck::cast_slice(chunk));
        let params = StepParams {
            n_tokens: n as u32,
            pos: pos as u32,
            n_kv: (pos + n) as u32,
            _pad: 0,
        };
        ctx.queue
            .write_buffer(&step, 0, bytemuck::bytes_of(&params));
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            // Every op dispatched for exactly the n tokens of this step.
            let t = n as u32;
            embed.encode_tokens(&mut pass, t);
            for layer in &layers {
                layer.attn_norm.encode_rows(&mut pass, t);
                layer.wq.encode_tokens(&mut pass, t);
                layer.wk.encode_tokens(&mut pass, t);
                layer.wv.encode_tokens(&mut pass, t);
                layer.attention.encode_prefill_tokens(&mut pass, t);
                layer.wo.encode_tokens(&mut pass, t); // x += wo(att)
                layer.ffn_norm.encode_rows(&mut pass, t);
                layer.w_gate.encode_tokens(&mut pass, t);
                layer.w_up.encode_tokens(&mut pass, t);
                layer.silu_mul.encode_len(&mut pass, t * f as u32);
                layer.w_down.encode_tokens(&mut pass, t); // x += w_down(hb)
            }
            final_norm.encode_rows(&mut pass, t);
        }
        let row = (4 * e) as u64;
        encoder.copy_buffer_to_buffer(&xb, (n as u64 - 1) * row, &last, 0, row);
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            head.kernels.iter().for_each(|k| k.encode(&mut pass));
        }
        ctx.queue.submit([encoder.finish()]);
        pollster::block_on(read_buffer(&ctx, &logits, 0, c.n_vocab)).unwrap()
    };

    let mut cpu = CpuSession::new(model.clone(), n_ctx).expect("cpu session");
    let mut pos = 0;
    let chunks: Vec<&[u32]> = p
        .tokens
        .chunks(BATCH)
        .chain(decode_tokens.chunks(1))
        .collect();
    for chunk in chunks {
        let got = forward(chunk, pos);
        pollster::block_on(cpu.feed(chunk)).unwrap();
        let want = pollster::block_on(cpu.logits()).unwrap();
        let cos = common::cosine(&got, &want);
        eprintln!(
            "tokens {pos}..{}: cosine vs CPU {cos:.7}",
            pos + chunk.len()
        );
        assert!(
            cos >= COSINE_MIN,
            "step at {pos}: cosine {cos} < {COSINE_MIN}"
        );
        assert_eq!(
            common::argmax(&got),
            common::argmax(&want),
            "step at {pos}: argmax"
        );
        pos += chunk.len();
        if pos == p.tokens.len() {
            let llama = common::cosine(&got, &common::llama_logits(p));
            eprintln!("prompt end: cosine vs llama.cpp {llama:.6}");
            assert!(llama >= common::LLAMA_COSINE_MIN);
        }
    }
    ctx.take_error().expect("no wgpu error");
}
