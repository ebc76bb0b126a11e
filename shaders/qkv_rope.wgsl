// Decode step D1 of a layer: xb = rmsnorm(x) * attn_norm folded into the q|k|v matvec, and the
// per-head epilogue (Qwen3 QK-norm, NEOX RoPE with the YaRN table, KV cache write).
//
// The q, k and v weights are concatenated at load time (rows: n_head q heads, then n_head_kv k
// heads, then n_head_kv v heads; see src/gpu/ops/qkv_rope.rs), so one workgroup owns exactly one
// head: HEAD_DIM rows, in HEAD_DIM / ROWS_PER_WG rounds of the row core. Each workgroup recomputes 1/rms(x) (K floats from cache),
// loads x * attn_norm, and scales the dot products by 1/rms at the end (a scalar commutes with
// the matvec). Then a q head is normalised, rotated and stored in `q`; a k head is normalised,
// rotated and stored in the f16 K cache at step.pos; a v head goes to the f16 V cache as is.
//
// Dispatch: (n_head + 2 * n_head_kv, 1, 1).
//
// Indices in range by construction (built without runtime checks): the head index is below the
// dispatch size, which the host sets to N / HEAD_DIM; dims run below HEAD_DIM; step.pos is below
// n_ctx because the host checks every position before writing the step (Error::ContextOverflow),
// and the rope table and caches hold n_ctx positions (checked when the kernel is built).

struct StepParams {
    n_tokens: u32,
    pos: u32,
    n_kv: u32,
    _pad: u32,
}

override HEAD_DIM: u32 = 128u; // a multiple of ROWS_PER_WG, at most MAX_HEAD_DIM
override N_ROT: u32 = 128u;    // rotated dims (even, <= HEAD_DIM)
override N_HEAD: u32 = 16u;
override N_HEAD_KV: u32 = 8u;
override EPS: f32 = 1e-6;

const MAX_HEAD_DIM: u32 = 256u;

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;       // (K/4) residual stream
@group(0) @binding(2) var<storage, read> norms: array<f32>;         // (K + 2 * head_dim) attn_norm | q_norm | k_norm
@group(0) @binding(3) var<storage, read> signs: array<u32>;         // (N, K/32) wq | wk | wv sign bits
@group(0) @binding(4) var<storage, read> scales: array<u32>;        // (N * K/128) f16, 2 per word
@group(0) @binding(5) var<storage, read> rope: array<vec2<f32>>;    // (n_ctx, n_rot/2) (cos, sin)
@group(0) @binding(6) var<storage, read_write> q: array<f32>;       // (n_head, head_dim)
@group(0) @binding(7) var<storage, read_write> k_cache: array<u32>; // (n_ctx, n_head_kv, head_dim/2) f16x2
@group(0) @binding(8) var<storage, read_write> v_cache: array<u32>; // (n_ctx, n_head_kv, head_dim/2) f16x2

var<workgroup> ys: array<f32, MAX_HEAD_DIM>; // this head's row

fn load_x(i: u32) -> vec4<f32> {
    let g = vec4<f32>(norms[4u * i], norms[4u * i + 1u], norms[4u * i + 2u], norms[4u * i + 3u]);
    return x[i] * g;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = wid.x;

    var ss = 0.0;
    for (var i = lid; i < K / 4u; i += WG) {
        let v = x[i];
        ss += dot(v, v);
    }
    let inv_rms = inverseSqrt(workgroup_sum(lid, ss) / f32(K) + EPS);

    let tpg = row_group_threads();
    for (var round = 0u; round < HEAD_DIM / ROWS_PER_WG; round++) {
        let dots = row_group_dots(lid, head * HEAD_DIM + round * ROWS_PER_WG);
        if lid % tpg == 0u {
            let d0 = round * ROWS_PER_WG + 4u * (lid / tpg);
            for (var i = 0u; i < 4u; i++) {
                ys[d0 + i] = dots[i] * inv_rms;
            }
        }
    }
    workgroupBarrier();

    let is_v = head >= N_HEAD + N_HEAD_KV;
    let pos = step.pos;
    let half_dim = HEAD_DIM / 2u;
    if is_v {
        let dst = (pos * N_HEAD_KV + (head - N_HEAD - N_HEAD_KV)) * half_dim;
        for (var w = lid; w < half_dim; w += WG) {
            v_cache[dst + w] = pack2x16float(vec2<f32>(ys[2u * w], ys[2u * w + 1u]));
        }
        return;
    }

    // Per-head RMSNorm (q_norm for q heads, k_norm for k heads), workgroup-uniform branch above.
    var hss = 0.0;
    if lid < HEAD_DIM {
        hss = ys[lid] * ys[lid];
    }
    let scale = inverseSqrt(workgroup_sum(lid, hss) / f32(HEAD_DIM) + EPS);
    let is_q = head < N_HEAD;
    let w_base = select(K + HEAD_DIM, K, is_q);
    var normed = 0.0;
    if lid < HEAD_DIM {
        normed = ys[lid] * scale * norms[w_base + lid];
    }
    workgroupBarrier();
    if lid < HEAD_DIM {
        ys[lid] = normed;
    }
    workgroupBarrier();

    // NEOX RoPE: pairs (i, i + n_rot/2); dims past n_rot pass through.
    let half_rot = N_ROT / 2u;
    var out = normed;
    if lid < half_rot {
        let cs = rope[pos * half_rot + lid];
        out = ys[lid] * cs.x - ys[lid + half_rot] * cs.y;
    } else if lid < N_ROT {
        let cs = rope[pos * half_rot + lid - half_rot];
        out = ys[lid - half_rot] * cs.y + ys[lid] * cs.x;
    }
    workgroupBarrier();
    if lid < HEAD_DIM {
        ys[lid] = out;
    }
    workgroupBarrier();

    if is_q {
        if lid < HEAD_DIM {
            q[head * HEAD_DIM + lid] = ys[lid];
        }
    } else {
        let dst = (pos * N_HEAD_KV + (head - N_HEAD)) * half_dim;
        for (var w = lid; w < half_dim; w += WG) {
            k_cache[dst + w] = pack2x16float(vec2<f32>(ys[2u * w], ys[2u * w + 1u]));
        }
    }
}
