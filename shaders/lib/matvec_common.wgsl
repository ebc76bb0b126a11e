// The part of the matvec kernels between the weight format (lib/q1_0_dots.wgsl or
// lib/q2_0_dots.wgsl, before it) and the reduction (matvec_shared.wgsl or matvec_subgroup.wgsl,
// after it; Shader::parts joins them): what the input is and where the outputs go.
//
// Plain: y[Y_OFFSET + r] (+)= W[W_ROW0 + r] . x for the N rows of one weight part.
// The fused decode plan (ARCHITECTURE.md, "A decode step") switches on, by override:
// - NORM: the input is rmsnorm(r) * g for the residual r: `x` holds r * g (written by the
//   previous kernel's NORM_OUT epilogue), `aux` holds r. Every workgroup computes 1/rms(r) in
//   its prologue (K values, from cache) and scales its dot products by it at the end (a scalar
//   commutes with the matvec): the dot products themselves cost what a plain matvec's do.
// - NORM_LOAD: as NORM where no kernel wrote r * g (the first layer, after the embedding):
//   `x` is r, `aux` is g, and every x load is multiplied by g.
// - NORM_OUT: the epilogue also writes out_f[o] = y[o] * g_next[o], the next NORM's input
//   (the residual-adding Wo and down kernels: the next norm's weight times the new residual).
// - MERGE: the input is the attention output, merged from attention_decode's per-chunk partials
//   (x = part_o, aux = part_ml): per head the prologue takes M = max_c m_c and
//   L = sum_c exp(m_c - M) l_c; a load combines the live chunks with weights exp(m_c - M) / L.
//   With one chunk (short contexts) that is one multiply per value.
// - GLU: the weight is [gate; up] (N = 2 n_ff rows); row group p owns gate rows 2p, 2p + 1 and
//   up rows N/2 + 2p, N/2 + 2p + 1 and writes y[2p + i] = silu(gate_i) * up_i.
// - ARGMAX: also writes the workgroup's (max, lowest index) of its outputs to
//   out_f / out_u[ARG_BASE + workgroup], stage 1 of argmax.wgsl's two-stage reduction, with its
//   rule (ties to the lowest index; NaN and -inf never win).
// Bindings unused by the options get small placeholder buffers (UnusedBindings): 8 storage
// buffers at most, WebGPU's default limit.
//
// Indices: rows are clamped to N - 1 (weight_row) and outputs checked against N; x loads stay
// below K / 4 because the reduction walks words w < K / WEIGHTS_PER_WORD; the host checks every
// buffer against K, N, W_ROW0 and the merge shape before building (src/gpu/ops/matvec_q1_0.rs).

struct StepParams {
    n_tokens: u32,
    pos: u32,
    n_kv: u32,
    _pad: u32,
}

override K: u32;                     // input size (multiple of the format's block)
override N: u32;                     // weight rows of this part (GLU: 2 * outputs, outputs even)
override Y_OFFSET: u32 = 0u;         // index in y of this part's first output
override W_ROW0: u32 = 0u;           // first row of this part in the weight buffers (row views)
override ROWS_PER_WG: u32 = 32u;     // multiple of 4
override ACCUMULATE: bool = false;   // y += W x (residual add) instead of y = W x
override NORM: bool = false;
override NORM_LOAD: bool = false;
override NORM_OUT: bool = false;
override EPS: f32 = 1e-6;            // NORM, NORM_LOAD: RMSNorm epsilon
override MERGE: bool = false;
override HEAD_DIM: u32 = 128u;       // MERGE: K / HEAD_DIM heads, at most MAX_HEADS
override CHUNK: u32 = 128u;          // MERGE: positions per attention chunk
override MAX_CHUNKS: u32 = 1u;       // MERGE: chunk stride of the partial buffers
override GLU: bool = false;
override ARGMAX: bool = false;
override ARG_BASE: u32 = 0u;         // ARGMAX: partials of the weight's earlier parts

const WG: u32 = 256u;
const MAX_HEADS: u32 = 64u;
const MAX_WEIGHTS: u32 = 2048u;      // MERGE: (head, chunk) weights kept in workgroup memory
const NONE: u32 = 0xffffffffu;

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;       // (K/4); NORM: r * g; MERGE: part_o (n_head, MAX_CHUNKS, HEAD_DIM)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;       // (Y_OFFSET + outputs)
@group(0) @binding(4) var<storage, read> aux: array<f32>;           // NORM: r (K); NORM_LOAD: g (K); MERGE: part_ml (n_head, MAX_CHUNKS) (max, sum)
@group(0) @binding(5) var<uniform> step: StepParams;                // MERGE: n_kv
@group(0) @binding(6) var<storage, read_write> out_f: array<f32>;   // ARGMAX: values (partials); NORM_OUT: y * g_next
@group(0) @binding(7) var<storage, read_write> out_u: array<u32>;   // ARGMAX: indices (partials)
@group(0) @binding(8) var<storage, read> g_next: array<f32>;        // NORM_OUT: the next norm's weight

var<workgroup> red: array<f32, WG>;
var<workgroup> inv_rms: f32;
var<workgroup> head_max: array<f32, MAX_HEADS>;
var<workgroup> head_inv_l: array<f32, MAX_HEADS>;
var<workgroup> merge_w: array<f32, MAX_WEIGHTS>;
var<workgroup> best_val: array<f32, WG>;
var<workgroup> best_idx: array<u32, WG>;

fn n_chunks() -> u32 {
    return min((step.n_kv + CHUNK - 1u) / CHUNK, MAX_CHUNKS);
}

fn merge_weight(h: u32, c: u32, nc: u32) -> f32 {
    if (K / HEAD_DIM * nc <= MAX_WEIGHTS) {
        return merge_w[h * nc + c];
    }
    return exp(aux[2u * (h * MAX_CHUNKS + c)] - head_max[h]) * head_inv_l[h];
}

// Input values 4i .. 4i + 4.
fn load_x(i: u32) -> vec4<f32> {
    if (NORM_LOAD) {
        let e = 4u * i;
        return x[i] * vec4<f32>(aux[e], aux[e + 1u], aux[e + 2u], aux[e + 3u]);
    }
    if (MERGE) {
        let e = 4u * i;
        let h = e / HEAD_DIM;
        let d = e % HEAD_DIM;
        let nc = n_chunks();
        var acc = vec4<f32>(0.0);
        for (var c = 0u; c < nc; c++) {
            acc += x[((h * MAX_CHUNKS + c) * HEAD_DIM + d) / 4u] * merge_weight(h, c, nc);
        }
        return acc;
    }
    return x[i];
}

// Weight row (of this part) of value i of the row group whose first row is first_row.
fn weight_row(first_row: u32, i: u32) -> u32 {
    if (GLU) {
        let p = first_row / 4u;
        let r = select(N / 2u + 2u * p + i - 2u, 2u * p + i, i < 2u);
        return min(r, N - 1u);
    }
    return min(first_row + i, N - 1u);
}

// Run by every thread before the dot products (workgroup-uniform: overrides only).
fn prologue(lid: u32) {
    if (NORM || NORM_LOAD) {
        var ss = 0.0;
        for (var i = lid; i < K / 4u; i += WG) {
            var v: vec4<f32>;
            if (NORM) {
                let e = 4u * i;
                v = vec4<f32>(aux[e], aux[e + 1u], aux[e + 2u], aux[e + 3u]);
            } else {
                v = x[i];
            }
            ss += dot(v, v);
        }
        red[lid] = ss;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (lid < s) {
                red[lid] += red[lid + s];
            }
            workgroupBarrier();
        }
        if (lid == 0u) {
            inv_rms = inverseSqrt(red[0] / f32(K) + EPS);
        }
    }
    if (MERGE) {
        let nh = K / HEAD_DIM;
        let nc = n_chunks();
        if (lid < nh) {
            let ml = 2u * lid * MAX_CHUNKS;
            var m = -1.0e30;
            for (var c = 0u; c < nc; c++) {
                m = max(m, aux[ml + 2u * c]);
            }
            var l = 0.0;
            for (var c = 0u; c < nc; c++) {
                l += exp(aux[ml + 2u * c] - m) * aux[ml + 2u * c + 1u];
            }
            head_max[lid] = m;
            head_inv_l[lid] = 1.0 / l;
        }
        workgroupBarrier();
        if (nh * nc <= MAX_WEIGHTS) {
            for (var i = lid; i < nh * nc; i += WG) {
                let h = i / nc;
                let c = i % nc;
                merge_w[i] = exp(aux[2u * (h * MAX_CHUNKS + c)] - head_max[h]) * head_inv_l[h];
            }
        }
    }
    if (NORM || NORM_LOAD || MERGE) {
        workgroupBarrier();
    }
}

fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    return v > bv || (v == bv && i < bi);
}

// Writes the 4 dot products `total` of the row group at first_row (< N); with ARGMAX keeps the
// best output in (bv, bi).
fn finish(first_row: u32, total: vec4<f32>, bv: ptr<function, f32>, bi: ptr<function, u32>) {
    var d = total;
    if (NORM || NORM_LOAD) {
        d *= inv_rms;
    }
    if (GLU) {
        let p = first_row / 4u;
        for (var i = 0u; i < 2u; i++) {
            let o = 2u * p + i;
            if (o < N / 2u) {
                let g = d[i];
                let v = g / (1.0 + exp(-g)) * d[2u + i];
                y[Y_OFFSET + o] = select(0.0, y[Y_OFFSET + o], ACCUMULATE) + v;
            }
        }
        return;
    }
    for (var i = 0u; i < 4u; i++) {
        if (first_row + i < N) {
            let o = Y_OFFSET + first_row + i;
            let v = select(0.0, y[o], ACCUMULATE) + d[i];
            y[o] = v;
            if (NORM_OUT) {
                out_f[o] = v * g_next[o];
            }
            if (ARGMAX && better(v, o, *bv, *bi)) {
                *bv = v;
                *bi = o;
            }
        }
    }
}

// ARGMAX: the workgroup's best (value, index) into the partials (all threads call it).
fn argmax_store(lid: u32, group: u32, bv: f32, bi: u32) {
    best_val[lid] = bv;
    best_idx[lid] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s && better(best_val[lid + s], best_idx[lid + s], best_val[lid], best_idx[lid])) {
            best_val[lid] = best_val[lid + s];
            best_idx[lid] = best_idx[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u && group < (N + ROWS_PER_WG - 1u) / ROWS_PER_WG) {
        out_f[ARG_BASE + group] = best_val[0];
        out_u[ARG_BASE + group] = best_idx[0];
    }
}
