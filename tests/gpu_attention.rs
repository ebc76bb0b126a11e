//! GPU attention ops (qk_norm_rope + KV write, decode, prefill) against their CPU references on
//! random inputs. Runs on any adapter, lavapipe included, natively and in the browser.

#[macro_use]
mod common;

use bonsai_wgpu::cache_type::CacheType;
use bonsai_wgpu::cpu::ops as cpu;
use bonsai_wgpu::gpu::buffers::{StepParams, read_buffer, storage_buffer};
use bonsai_wgpu::gpu::kernel::{Op, PipelineCache, submit_kernels};
use bonsai_wgpu::gpu::kv_cache::{AttnDims, KvCache, pack_f16, unpack_f16};
use bonsai_wgpu::gpu::ops::attention_decode::{self, AttentionDecode, AttentionDecodeBindings};
use bonsai_wgpu::gpu::ops::attention_prefill::{AttentionPrefill, AttentionPrefillBindings};
use bonsai_wgpu::gpu::ops::qk_norm_rope::{QkNormRope, QkNormRopeBindings};
use bonsai_wgpu::gpu::{GpuContext, GpuOptions};
use bonsai_wgpu::model::rope::RopeParams;
use bonsai_wgpu::{Error, Result};
use common::{gpu_test, random_f32};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// q after norm + RoPE is f32 on both sides; only summation order and rsqrt differ.
const TOL_Q: f32 = 1e-4;
/// Cached k/v are f16 (11 significant bits): half an ulp is 2^-11 = 4.9e-4 relative, and WGSL may
/// round either way, so allow one full ulp plus slack.
const TOL_KV_F16: f32 = 1.5e-3;
/// Attention over f16 cache values that both sides read identically; f32 accumulation order.
const TOL_ATTN: f32 = 2e-5;
/// Prefill (online softmax per key block) vs decode (per-chunk softmax + merge).
const TOL_PREFILL_VS_DECODE: f32 = 2e-5;

const EPS: f32 = 1e-6;

const TINY: AttnDims = AttnDims {
    n_head: 4,
    n_head_kv: 2,
    head_dim: 128,
};
const BONSAI_1_7B: AttnDims = AttnDims {
    n_head: 16,
    n_head_kv: 8,
    head_dim: 128,
};
/// head_dim 64 without GQA: exercises the shaders' non-128 paths.
const SMALL_MHA: AttnDims = AttnDims {
    n_head: 3,
    n_head_kv: 3,
    head_dim: 64,
};
const GROUP_4: AttnDims = AttnDims {
    n_head: 8,
    n_head_kv: 2,
    head_dim: 128,
};

/// Bonsai's RoPE: base 1e6, YaRN factor 4 over an original context of 8192.
fn rope(n_rot: usize) -> RopeParams {
    RopeParams {
        n_rot,
        freq_base: 1_000_000.0,
        freq_scale: 0.25,
        ext_factor: 1.0,
        attn_factor: 1.0,
        beta_fast: 32.0,
        beta_slow: 1.0,
        n_ctx_orig: 8192,
    }
}

async fn ctx() -> GpuContext {
    GpuContext::new(&GpuOptions::default())
        .await
        .expect("a wgpu adapter")
}

fn upload(ctx: &GpuContext, label: &str, data: &[f32]) -> wgpu::Buffer {
    bonsai_wgpu::gpu::buffers::storage_buffer_init(ctx, label, data).expect("buffer")
}

fn step_buffer(ctx: &GpuContext) -> wgpu::Buffer {
    bonsai_wgpu::gpu::buffers::uniform_buffer_init(ctx, "step", &StepParams::default())
}

fn set_step(ctx: &GpuContext, step: &wgpu::Buffer, pos: usize, n_tokens: usize) {
    let p = StepParams::new(pos, n_tokens);
    ctx.queue.write_buffer(step, 0, bytemuck::bytes_of(&p));
}

async fn read_f32(ctx: &GpuContext, buf: &wgpu::Buffer, len: usize) -> Vec<f32> {
    read_buffer::<f32>(ctx, buf, 0, len)
        .await
        .expect("read back")
}

async fn read_cache(ctx: &GpuContext, buf: &wgpu::Buffer, n_values: usize) -> Vec<f32> {
    unpack_f16(
        &read_buffer::<u32>(ctx, buf, 0, n_values / 2)
            .await
            .expect("read"),
    )
}

/// Fails with the first index where |got - want| > tol * max(1, |want|); returns the worst error.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0);
        assert!(
            err <= tol,
            "{what}: index {i}: got {g}, want {w} (tol {tol})"
        );
        if err > worst.0 {
            worst = (err, i);
        }
    }
    note!("{what}: max rel err {:.2e} at {}", worst.0, worst.1);
    worst.0
}

/// Random f16-representable cache contents for `n_pos` positions.
fn random_cache(rng: &mut StdRng, dims: AttnDims, n_pos: usize) -> Vec<f32> {
    unpack_f16(&pack_f16(&random_f32(rng, n_pos * dims.kv_dim(), 2.0)))
}

fn write_cache(ctx: &GpuContext, buf: &wgpu::Buffer, values: &[f32]) {
    ctx.queue
        .write_buffer(buf, 0, bytemuck::cast_slice(&pack_f16(values)));
}

async fn check_qk_norm_rope(dims: AttnDims, pos: usize, n_tokens: usize) {
    check_qk_norm_rope_at(dims, pos + n_tokens + 3, pos, n_tokens).await;
}

async fn check_qk_norm_rope_at(dims: AttnDims, n_ctx: usize, pos: usize, n_tokens: usize) {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64((pos * 1000 + n_tokens) as u64);
    let rp = rope(dims.head_dim);
    let kv = KvCache::with_dims(&ctx, 1, dims, &rp, n_ctx).expect("kv cache");
    let q = random_f32(&mut rng, n_tokens * dims.q_dim(), 3.0);
    let k = random_f32(&mut rng, n_tokens * dims.kv_dim(), 3.0);
    let v = random_f32(&mut rng, n_tokens * dims.kv_dim(), 3.0);
    let q_norm = random_f32(&mut rng, dims.head_dim, 2.0);
    let k_norm = random_f32(&mut rng, dims.head_dim, 2.0);
    // Buffers sized for more tokens than the step has: the extra rows must stay untouched.
    let max_tokens = n_tokens + 2;
    let padded = |x: &[f32], row: usize| {
        let mut x = x.to_vec();
        x.resize(max_tokens * row, 0.0);
        x
    };
    let q_buf = upload(&ctx, "q", &padded(&q, dims.q_dim()));
    let k_buf = upload(&ctx, "k", &padded(&k, dims.kv_dim()));
    let v_buf = upload(&ctx, "v", &padded(&v, dims.kv_dim()));
    let (qn_buf, kn_buf) = (
        upload(&ctx, "q_norm", &q_norm),
        upload(&ctx, "k_norm", &k_norm),
    );
    let step = step_buffer(&ctx);
    let op = QkNormRope::new(
        &ctx,
        &cache,
        &QkNormRopeBindings {
            step: &step,
            q: &q_buf,
            k: &k_buf,
            v: &v_buf,
            q_norm: &qn_buf,
            k_norm: &kn_buf,
            kv: &kv,
            layer: 0,
            eps: EPS,
            max_tokens,
        },
    )
    .expect("kernel");
    set_step(&ctx, &step, pos, n_tokens);
    submit_kernels(&ctx, "qk_norm_rope", &[&op.kernel]);

    let mut q_want = q.clone();
    let k_want = cpu_qk_norm_rope(dims, &rp, pos, &mut q_want, &k, &q_norm, &k_norm);
    let label = format!("qk_norm_rope {dims:?} pos {pos} T {n_tokens}");
    let q_got = read_f32(&ctx, &q_buf, max_tokens * dims.q_dim()).await;
    assert_close(&format!("{label} q"), &q_got[..q.len()], &q_want, TOL_Q);
    assert!(
        q_got[q.len()..].iter().all(|&x| x == 0.0),
        "{label}: q rows past n_tokens"
    );
    let kv_len = n_ctx * dims.kv_dim();
    let k_cache = read_cache(&ctx, &kv.layers[0].k, kv_len).await;
    let v_cache = read_cache(&ctx, &kv.layers[0].v, kv_len).await;
    let at = pos * dims.kv_dim()..(pos + n_tokens) * dims.kv_dim();
    assert_close(
        &format!("{label} k cache"),
        &k_cache[at.clone()],
        &k_want,
        TOL_KV_F16,
    );
    assert_close(
        &format!("{label} v cache"),
        &v_cache[at.clone()],
        &v,
        TOL_KV_F16,
    );
    // Positions outside the step stay untouched (zero).
    assert!(
        k_cache[..at.start]
            .iter()
            .chain(&k_cache[at.end..])
            .all(|&x| x == 0.0)
    );
    assert!(
        v_cache[..at.start]
            .iter()
            .chain(&v_cache[at.end..])
            .all(|&x| x == 0.0)
    );
    ctx.take_error().expect("no wgpu error");
}

#[gpu_test]
async fn qk_norm_rope_matches_cpu() {
    check_qk_norm_rope(TINY, 0, 1).await;
    check_qk_norm_rope(TINY, 5, 7).await;
    check_qk_norm_rope(BONSAI_1_7B, 3000, 3).await;
    check_qk_norm_rope(GROUP_4, 17, 33).await;
    check_qk_norm_rope(SMALL_MHA, 2, 5).await;
}

/// Decode attention for one query at position n_kv - 1 over a random f16 cache.
async fn check_decode(dims: AttnDims, chunk: usize, n_ctx: usize, n_kvs: &[usize]) {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(n_ctx as u64);
    let kv = KvCache::with_dims(&ctx, 1, dims, &rope(dims.head_dim), n_ctx).expect("kv cache");
    let k = random_cache(&mut rng, dims, n_ctx);
    let v = random_cache(&mut rng, dims, n_ctx);
    write_cache(&ctx, &kv.layers[0].k, &k);
    write_cache(&ctx, &kv.layers[0].v, &v);
    let q = random_f32(&mut rng, dims.q_dim(), 1.0);
    let q_buf = upload(&ctx, "q", &q);
    let out = storage_buffer(&ctx, "out", (dims.q_dim() * 4) as u64).expect("out");
    let scratch =
        attention_decode::DecodeScratch::with_chunk(&ctx, dims, n_ctx, chunk).expect("scratch");
    let step = step_buffer(&ctx);
    let attn = AttentionDecode::new(
        &ctx,
        &cache,
        &AttentionDecodeBindings {
            step: &step,
            q: &q_buf,
            kv: &kv,
            layer: 0,
            scratch: &scratch,
            out: &out,
        },
    )
    .expect("kernels");
    for &n_kv in n_kvs {
        set_step(&ctx, &step, n_kv - 1, 1);
        let want = cpu_attention(dims, &q, &k, &v, n_kv - 1);
        // Dispatched for the whole cache (empty chunks exit), then for exactly n_kv.
        submit_kernels(&ctx, "decode", &[&attn.partial, &attn.merge]);
        let got = read_f32(&ctx, &out, dims.q_dim()).await;
        let what = format!("decode {dims:?} chunk {chunk} n_kv {n_kv}");
        assert_close(&what, &got, &want, TOL_ATTN);
        ctx.queue
            .write_buffer(&out, 0, &vec![0u8; dims.q_dim() * 4]);
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        attn.encode(
            &mut encoder.begin_compute_pass(&Default::default()),
            &StepParams::new(n_kv - 1, 1),
        );
        ctx.queue.submit([encoder.finish()]);
        let exact = read_f32(&ctx, &out, dims.q_dim()).await;
        assert_eq!(
            exact, got,
            "{what}: encode_kv differs from the full dispatch"
        );
    }
    ctx.take_error().expect("no wgpu error");
}

#[gpu_test]
async fn attention_decode_matches_cpu() {
    // Every chunk size; one position, chunk boundaries, and more than two chunks.
    for chunk in attention_decode::DECODE_CHUNKS_SUPPORTED {
        let n_kvs = [1, 2, chunk, chunk + 1, 2 * chunk + 37, 3 * chunk + 50];
        check_decode(TINY, chunk, 3 * chunk + 50, &n_kvs).await;
        check_decode(GROUP_4, chunk, 3 * chunk, &[2 * chunk + 1]).await;
    }
    let chunk = attention_decode::DECODE_CHUNK;
    check_decode(BONSAI_1_7B, chunk, 2 * chunk + 9, &[7, 2 * chunk + 9]).await;
    check_decode(SMALL_MHA, chunk, 2 * chunk, &[3, 2 * chunk]).await;
    // Group of 8 with head_dim 128 fills the shader's shared q buffer exactly.
    let wide = AttnDims {
        n_head: 16,
        n_head_kv: 2,
        head_dim: 128,
    };
    check_decode(wide, 32, 100, &[100]).await;
}

/// More chunks than attention_merge.wgsl keeps weights for in workgroup memory (1,024): the
/// weights past the table are computed per load.
#[gpu_test]
async fn attention_decode_merges_past_its_weight_table() {
    let one_head = AttnDims {
        n_head: 1,
        n_head_kv: 1,
        head_dim: 16,
    };
    let n_ctx = 32 * 1030 + 5;
    check_decode(one_head, 32, n_ctx, &[n_ctx, 32 * 1024 + 1]).await;
}

/// [`cpu::qk_norm_rope`] over the tokens of `q` at positions `pos..`: `q` in place, `k`
/// returned normalised and rotated.
fn cpu_qk_norm_rope(
    dims: AttnDims,
    rp: &RopeParams,
    pos: usize,
    q: &mut [f32],
    k: &[f32],
    q_norm: &[f32],
    k_norm: &[f32],
) -> Vec<f32> {
    let mut k = k.to_vec();
    let tokens = q
        .chunks_exact_mut(dims.q_dim())
        .zip(k.chunks_exact_mut(dims.kv_dim()));
    for (t, (qt, kt)) in tokens.enumerate() {
        cpu::qk_norm_rope(qt, kt, q_norm, k_norm, EPS, pos + t, rp);
    }
    k
}

/// [`cpu::attention`] for the queries of `q` at positions `pos..` (causal) over the cache `k`,
/// `v` (>= pos + n_tokens, n_head_kv, head_dim).
fn cpu_attention(dims: AttnDims, q: &[f32], k: &[f32], v: &[f32], pos: usize) -> Vec<f32> {
    let mut out = vec![0.0; q.len()];
    let rows = q
        .chunks_exact(dims.q_dim())
        .zip(out.chunks_exact_mut(dims.q_dim()));
    for (t, (qt, ot)) in rows.enumerate() {
        cpu::attention(ot, qt, k, v, pos + t + 1, dims.n_head_kv, dims.head_dim);
    }
    out
}

/// Prefill of `n_tokens` queries at positions `pos..` over a random cache, vs CPU and vs decode.
async fn check_prefill(dims: AttnDims, pos: usize, n_tokens: usize) {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64((pos * 7 + n_tokens) as u64);
    let n_ctx = pos + n_tokens + 5;
    let kv = KvCache::with_dims(&ctx, 1, dims, &rope(dims.head_dim), n_ctx).expect("kv cache");
    let k = random_cache(&mut rng, dims, n_ctx);
    let v = random_cache(&mut rng, dims, n_ctx);
    write_cache(&ctx, &kv.layers[0].k, &k);
    write_cache(&ctx, &kv.layers[0].v, &v);
    let q = random_f32(&mut rng, n_tokens * dims.q_dim(), 1.0);
    let max_tokens = n_tokens + 20; // extra workgroups must exit
    let mut q_pad = q.clone();
    q_pad.resize(max_tokens * dims.q_dim(), 0.0);
    let q_buf = upload(&ctx, "q", &q_pad);
    let out = storage_buffer(&ctx, "out", (q_pad.len() * 4) as u64).expect("out");
    let step = step_buffer(&ctx);
    let b = AttentionPrefillBindings {
        step: &step,
        q: &q_buf,
        kv: &kv,
        layer: 0,
        out: &out,
        max_tokens,
    };
    let prefill = AttentionPrefill::new(&ctx, &cache, &b).expect("kernel");
    set_step(&ctx, &step, pos, n_tokens);
    submit_kernels(&ctx, "prefill", &[&prefill.kernel]);
    let got_all = read_f32(&ctx, &out, q_pad.len()).await;
    assert!(
        got_all[q.len()..].iter().all(|&x| x == 0.0),
        "rows past n_tokens written"
    );
    let got = &got_all[..q.len()];
    let label = format!("prefill {dims:?} pos {pos} T {n_tokens}");
    let want = cpu_attention(dims, &q, &k, &v, pos);
    assert_close(&label, got, &want, TOL_ATTN);

    // The same queries one at a time through the decode kernels.
    let q1_buf = storage_buffer(&ctx, "q1", (dims.q_dim() * 4) as u64).expect("q1");
    let out1 = storage_buffer(&ctx, "out1", (dims.q_dim() * 4) as u64).expect("out1");
    let scratch = attention_decode::DecodeScratch::new(&ctx, dims, n_ctx).expect("scratch");
    let decode = AttentionDecode::new(
        &ctx,
        &cache,
        &AttentionDecodeBindings {
            step: &step,
            q: &q1_buf,
            kv: &kv,
            layer: 0,
            scratch: &scratch,
            out: &out1,
        },
    )
    .expect("decode kernels");
    let row = dims.q_dim();
    for t in 0..n_tokens {
        ctx.queue
            .write_buffer(&q1_buf, 0, bytemuck::cast_slice(&q[t * row..(t + 1) * row]));
        set_step(&ctx, &step, pos + t, 1);
        submit_kernels(&ctx, "decode", &[&decode.partial, &decode.merge]);
        let one = read_f32(&ctx, &out1, row).await;
        let what = format!("{label}: token {t} prefill vs decode");
        assert_close(
            &what,
            &got[t * row..(t + 1) * row],
            &one,
            TOL_PREFILL_VS_DECODE,
        );
    }
    note!("{label}: all {n_tokens} tokens match decode");
    ctx.take_error().expect("no wgpu error");
}

#[gpu_test]
async fn attention_prefill_matches_cpu_and_decode() {
    check_prefill(TINY, 0, 1).await;
    check_prefill(TINY, 5, 7).await;
    check_prefill(TINY, 40, 33).await;
    check_prefill(BONSAI_1_7B, 3, 7).await;
    check_prefill(GROUP_4, 150, 33).await;
    check_prefill(SMALL_MHA, 9, 17).await;
    // A thread's two rows: heads of different tokens (group 3: 10 tokens, 2 idle rows per
    // workgroup), and a group of 8 (4 tokens per workgroup).
    let group_3 = AttnDims {
        n_head: 6,
        n_head_kv: 2,
        head_dim: 128,
    };
    check_prefill(group_3, 20, 23).await;
    let group_8 = AttnDims {
        n_head: 16,
        n_head_kv: 2,
        head_dim: 64,
    };
    check_prefill(group_8, 2, 9).await;
}

/// A layer's attention over several steps, all on the GPU: prefill a prompt through
/// qk_norm_rope + attention_prefill, then decode tokens with qk_norm_rope + attention_decode.
#[gpu_test]
async fn attention_block_prefill_then_decode_matches_cpu() {
    attention_block_prefill_then_decode()
        .await
        .expect("GPU attention block");
}

async fn attention_block_prefill_then_decode() -> Result<()> {
    let dims = TINY;
    let (n_prompt, n_decode, n_ctx) = (20, 4, 32);
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let mut rng = StdRng::seed_from_u64(99);
    let rp = rope(dims.head_dim);
    let kv = KvCache::with_dims(&ctx, 1, dims, &rp, n_ctx)?;
    let n_all = n_prompt + n_decode;
    let q = random_f32(&mut rng, n_all * dims.q_dim(), 3.0);
    let k = random_f32(&mut rng, n_all * dims.kv_dim(), 3.0);
    let v = random_f32(&mut rng, n_all * dims.kv_dim(), 3.0);
    let q_norm = random_f32(&mut rng, dims.head_dim, 2.0);
    let k_norm = random_f32(&mut rng, dims.head_dim, 2.0);
    let bytes = |n: usize| (n * 4) as u64;
    let q_buf = storage_buffer(&ctx, "q", bytes(n_prompt * dims.q_dim()))?;
    let k_buf = storage_buffer(&ctx, "k", bytes(n_prompt * dims.kv_dim()))?;
    let v_buf = storage_buffer(&ctx, "v", bytes(n_prompt * dims.kv_dim()))?;
    let out = storage_buffer(&ctx, "out", bytes(n_prompt * dims.q_dim()))?;
    let (qn_buf, kn_buf) = (
        upload(&ctx, "q_norm", &q_norm),
        upload(&ctx, "k_norm", &k_norm),
    );
    let scratch = attention_decode::DecodeScratch::new(&ctx, dims, n_ctx)?;
    let step = step_buffer(&ctx);
    let rope_op = QkNormRope::new(
        &ctx,
        &cache,
        &QkNormRopeBindings {
            step: &step,
            q: &q_buf,
            k: &k_buf,
            v: &v_buf,
            q_norm: &qn_buf,
            k_norm: &kn_buf,
            kv: &kv,
            layer: 0,
            eps: EPS,
            max_tokens: n_prompt,
        },
    )?;
    let prefill = AttentionPrefill::new(
        &ctx,
        &cache,
        &AttentionPrefillBindings {
            step: &step,
            q: &q_buf,
            kv: &kv,
            layer: 0,
            out: &out,
            max_tokens: n_prompt,
        },
    )?;
    let decode = AttentionDecode::new(
        &ctx,
        &cache,
        &AttentionDecodeBindings {
            step: &step,
            q: &q_buf,
            kv: &kv,
            layer: 0,
            scratch: &scratch,
            out: &out,
        },
    )?;

    // CPU: normalise + rotate everything, keep k/v as the f16 cache holds them.
    let mut q_rot = q.clone();
    let k_rot = cpu_qk_norm_rope(dims, &rp, 0, &mut q_rot, &k, &q_norm, &k_norm);
    let k_cpu = unpack_f16(&pack_f16(&k_rot));
    let v_cpu = unpack_f16(&pack_f16(&v));

    let (qd, kd) = (dims.q_dim(), dims.kv_dim());
    let mut pos = 0;
    for n in std::iter::once(n_prompt).chain(std::iter::repeat_n(1, n_decode)) {
        ctx.queue.write_buffer(
            &q_buf,
            0,
            bytemuck::cast_slice(&q[pos * qd..(pos + n) * qd]),
        );
        ctx.queue.write_buffer(
            &k_buf,
            0,
            bytemuck::cast_slice(&k[pos * kd..(pos + n) * kd]),
        );
        ctx.queue.write_buffer(
            &v_buf,
            0,
            bytemuck::cast_slice(&v[pos * kd..(pos + n) * kd]),
        );
        set_step(&ctx, &step, pos, n);
        if n == 1 {
            submit_kernels(
                &ctx,
                "decode step",
                &[&rope_op.kernel, &decode.partial, &decode.merge],
            );
        } else {
            submit_kernels(&ctx, "prefill step", &[&rope_op.kernel, &prefill.kernel]);
        }
        let got = read_f32(&ctx, &out, n * qd).await;
        let want = cpu_attention(dims, &q_rot[pos * qd..(pos + n) * qd], &k_cpu, &v_cpu, pos);
        // The GPU's own f16 rounding of k may differ from the CPU's by one step.
        assert_close(&format!("block pos {pos} T {n}"), &got, &want, TOL_KV_F16);
        pos += n;
    }
    ctx.take_error()
}

#[gpu_test]
async fn kv_cache_too_big_is_a_limit_error() {
    let ctx = ctx().await;
    let n_ctx = (ctx.max_binding_bytes() / (BONSAI_1_7B.kv_dim() as u64 * 2)) as usize + 1;
    match KvCache::with_dims(&ctx, 28, BONSAI_1_7B, &rope(128), n_ctx) {
        Err(Error::Limit {
            needed, allowed, ..
        }) => assert!(needed > allowed),
        other => panic!("expected a limit error, got {other:?}"),
    }
    // 1.7B at its full 32k context fits one binding per layer (64 MiB per K and per V).
    assert_eq!(
        KvCache::layer_bytes(BONSAI_1_7B, 32768, CacheType::F16),
        64 << 20
    );
}

#[gpu_test]
async fn too_small_buffers_and_bad_shapes_are_errors() {
    let ctx = ctx().await;
    let cache = PipelineCache::new();
    let kv = KvCache::with_dims(&ctx, 1, TINY, &rope(128), 16).expect("kv cache");
    let step = step_buffer(&ctx);
    let small = storage_buffer(&ctx, "small", 64).expect("buffer");
    let b = AttentionPrefillBindings {
        step: &step,
        q: &small,
        kv: &kv,
        layer: 0,
        out: &small,
        max_tokens: 4,
    };
    assert!(matches!(
        AttentionPrefill::new(&ctx, &cache, &b),
        Err(Error::InvalidArgument(_))
    ));
    let b = AttentionPrefillBindings { layer: 1, ..b };
    assert!(matches!(
        AttentionPrefill::new(&ctx, &cache, &b),
        Err(Error::InvalidArgument(_))
    ));
    for dims in [
        AttnDims {
            n_head: 3,
            n_head_kv: 2,
            head_dim: 128,
        }, // not a multiple
        AttnDims {
            n_head: 4,
            n_head_kv: 2,
            head_dim: 256,
        }, // head too wide
        AttnDims {
            n_head: 18,
            n_head_kv: 1,
            head_dim: 64,
        }, // group too large
    ] {
        assert!(KvCache::with_dims(&ctx, 1, dims, &rope(dims.head_dim.min(128)), 16).is_err());
    }
}

/// The far end of Bonsai's 32k context: RoPE at the last positions and decode over all 32768
/// positions (512 chunks of 64 to merge).
#[gpu_test]
async fn long_context_rope_and_decode_match_cpu() {
    let n_ctx = 32768;
    check_qk_norm_rope_at(TINY, n_ctx, n_ctx - 3, 3).await;
    check_decode(TINY, attention_decode::DECODE_CHUNK, n_ctx, &[n_ctx]).await;
}
