// The part of the matvec kernels between the weight format (lib/q1_0_dots.wgsl or
// lib/q2_0_dots.wgsl, before it) and the reduction (matvec_shared.wgsl or matvec_subgroup.wgsl,
// after it; Shader::parts joins them): what the input is and where the outputs go.
//
// Plain: y[Y_OFFSET + r] (+)= W[W_ROW0 + r] . x for the N rows of one weight part.
// The fused decode plan (ARCHITECTURE.md, "A decode step") switches on, by override:
// - GAIN: every x load is multiplied by aux (a norm weight g): the input is x * g.
// - RMS: the outputs are scaled by 1/rms(r) of the residual r (a scalar commutes with the
//   matvec). aux holds r's sums of squares in groups of 4 (K / 4 values), as the previous
//   kernel's NORM_OUT epilogue wrote them, and x = r * g, as it also wrote: that is
//   W (rmsnorm(r) * g) at the cost of a plain matvec plus one pass over the K / 4 sums per
//   subgroup (or per workgroup, in the shared reduction), a quarter of a pass over r.
// - NORM_OUT: the epilogue also writes out_f[o] = y[o] * g_next[o], the next kernel's r * g
//   (the residual-adding Wo and down kernels: the next norm's weight times the new residual),
//   and each row group's sum of squares of its new y to out_u[(Y_OFFSET + first_row) / 4] (f32
//   bits; Y_OFFSET is a multiple of 4), the next RMS kernel's aux.
// - MERGE: the input is the attention output merged from attention_decode's per-chunk partials
//   (x = part_o, aux = part_ml): per head M = max_c m_c and L = sum_c exp(m_c - M) l_c, kept
//   with the (head, chunk) weights exp(m_c - M) / L in workgroup memory; a load combines the
//   live chunks. MERGE_ONE: the context is one chunk, which attention_decode (ROPE) wrote
//   already divided by its l: a load is part_o as it is, no table.
// - GLU: the weight is [gate; up] (N = 2 n_ff rows); row group p owns gate rows 2p, 2p + 1 and
//   up rows N/2 + 2p, N/2 + 2p + 1 and writes y[2p + i] = silu(gate_i) * up_i.
// - ARGMAX: also writes each row group's (max, lowest index) of its outputs to
//   out_f / out_u[ARG_BASE + row group], stage 1 of argmax.wgsl's two-stage reduction with its
//   rule (ties to the lowest index; NaN and -inf never win).
// Only MERGE (the table) and RMS in the shared reduction use workgroup barriers: CPU adapters
// (lavapipe) compile a kernel with barriers into coroutines, which slows every weight.
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
override GAIN: bool = false;
override RMS: bool = false;
override NORM_OUT: bool = false;
override EPS: f32 = 1e-6;            // RMS: RMSNorm epsilon
override MERGE: bool = false;
override MERGE_ONE: bool = false;
override HEAD_DIM: u32 = 128u;       // MERGE: K / HEAD_DIM heads, at most MAX_HEADS
override CHUNK: u32 = 128u;          // MERGE: positions per attention chunk
override MAX_CHUNKS: u32 = 1u;       // MERGE: chunk stride of the partial buffers
override GLU: bool = false;
override ARGMAX: bool = false;
override ARG_BASE: u32 = 0u;         // ARGMAX: row groups of the weight's earlier parts

const MAX_WG: u32 = 256u;           // workgroup arrays are sized for it
override WG: u32 = 256u;             // threads per workgroup: 256 (matvec_shared.wgsl); 64, 128 or
                                     // 256 (matvec_subgroup.wgsl, chosen per shape by the host)
const MAX_HEADS: u32 = 64u;
const MERGE_TABLE: u32 = 1024u;      // MERGE: (head, chunk) weights kept in workgroup memory
                                     // (4,096 positions of 32 heads; beyond, computed per load)
const NONE: u32 = 0xffffffffu;

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;       // (K/4); MERGE: part_o (n_head, MAX_CHUNKS, HEAD_DIM)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;       // (Y_OFFSET + outputs)
@group(0) @binding(4) var<storage, read> aux: array<f32>;           // GAIN: g (K); RMS: sums of squares of r (K/4); MERGE: part_ml (n_head, MAX_CHUNKS) (max, sum)
@group(0) @binding(5) var<uniform> step: StepParams;                // MERGE: n_kv
@group(0) @binding(6) var<storage, read_write> out_f: array<f32>;   // ARGMAX: values (partials); NORM_OUT: y * g_next
@group(0) @binding(7) var<storage, read_write> out_u: array<u32>;   // ARGMAX: indices (partials); NORM_OUT: sums of squares of y in groups of 4 (f32 bits)
@group(0) @binding(8) var<storage, read> g_next: array<f32>;        // NORM_OUT: the next norm's weight

var<workgroup> red: array<f32, MAX_WG>;
var<workgroup> inv_rms_wg: f32;
var<workgroup> head_max: array<f32, MAX_HEADS>;
var<workgroup> head_inv_l: array<f32, MAX_HEADS>;
var<workgroup> merge_w: array<f32, MERGE_TABLE>;

fn n_chunks() -> u32 {
    return min((step.n_kv + CHUNK - 1u) / CHUNK, MAX_CHUNKS);
}

fn merge_weight(h: u32, c: u32, nc: u32) -> f32 {
    if (K / HEAD_DIM * nc <= MERGE_TABLE) {
        return merge_w[h * nc + c];
    }
    return exp(aux[2u * (h * MAX_CHUNKS + c)] - head_max[h]) * head_inv_l[h];
}

fn aux4(i: u32) -> vec4<f32> {
    let e = 4u * i;
    return vec4<f32>(aux[e], aux[e + 1u], aux[e + 2u], aux[e + 3u]);
}

// Input values 4i .. 4i + 4.
fn load_x(i: u32) -> vec4<f32> {
    if (GAIN) {
        return x[i] * aux4(i);
    }
    if (MERGE_ONE) {
        // One chunk, normalised by attention_decode (h * MAX_CHUNKS is chunk 0 of head h).
        let h = 4u * i / HEAD_DIM;
        return x[(h * MAX_CHUNKS * HEAD_DIM + 4u * i % HEAD_DIM) / 4u];
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

// RMS: sum of r's sums of squares aux[i] (each over 4 values of r) for i = start,
// start + stride, ... < K / 4.
fn rms_partial(start: u32, stride: u32) -> f32 {
    var ss = 0.0;
    for (var i = start; i < K / 4u; i += stride) {
        ss += aux[i];
    }
    return ss;
}

fn inv_rms(ss: f32) -> f32 {
    return inverseSqrt(ss / f32(K) + EPS);
}

// MERGE: thread lid < nh gets the max (is_max) or the sum of the tph threads' values v of head
// lid (threads h tph .. h tph + tph); the others get the identity. Every thread calls it: it
// exchanges v through red (one barrier; the caller's next barrier guards red's reuse).
fn head_combine(lid: u32, v: f32, tph: u32, nh: u32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    var r = select(0.0, -1.0e30, is_max);
    if (lid < nh) {
        for (var i = 0u; i < tph; i++) {
            let x = red[lid * tph + i];
            r = select(r + x, max(r, x), is_max);
        }
    }
    return r;
}

// The workgroup-memory parts of the options, run by every thread before the dot products
// (workgroup-uniform: overrides only): the merge table, and with `rms_tree` the RMS (the shared
// reduction; the subgroup one takes it per subgroup, without barriers).
fn prologue(lid: u32, rms_tree: bool) {
    if (RMS && rms_tree) {
        red[lid] = rms_partial(lid, WG);
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (lid < s) {
                red[lid] += red[lid + s];
            }
            workgroupBarrier();
        }
        if (lid == 0u) {
            inv_rms_wg = inv_rms(red[0]);
        }
        workgroupBarrier();
    }
    if (MERGE) {
        // Per head, M = max_c m_c and L = sum_c exp(m_c - M) l_c over the live chunks, by
        // WG / nh threads per head (each over every (WG / nh)-th chunk), combined through red:
        // no thread walks all chunks (32,768 positions are 512 chunks of 64).
        // (max: kernels without MERGE are built with K < HEAD_DIM too; the host checks K.)
        let nh = max(K / HEAD_DIM, 1u);
        let nc = n_chunks();
        let tph = WG / nh; // >= 1: nh <= MAX_HEADS = 64 <= WG
        let h = lid / tph;
        let t = lid % tph;
        let ml = 2u * h * MAX_CHUNKS;
        var mp = -1.0e30;
        if (h < nh) {
            for (var c = t; c < nc; c += tph) {
                mp = max(mp, aux[ml + 2u * c]);
            }
        }
        let m_head = head_combine(lid, mp, tph, nh, true);
        if (lid < nh) {
            head_max[lid] = m_head;
        }
        workgroupBarrier();
        var lp = 0.0;
        if (h < nh) {
            let m = head_max[h];
            for (var c = t; c < nc; c += tph) {
                lp += exp(aux[ml + 2u * c] - m) * aux[ml + 2u * c + 1u];
            }
        }
        let l_head = head_combine(lid, lp, tph, nh, false);
        if (lid < nh) {
            head_inv_l[lid] = 1.0 / l_head;
        }
        workgroupBarrier();
        if (nh * nc <= MERGE_TABLE) {
            for (var i = lid; i < nh * nc; i += WG) {
                let hh = i / nc;
                let c = i % nc;
                merge_w[i] = exp(aux[2u * (hh * MAX_CHUNKS + c)] - head_max[hh]) * head_inv_l[hh];
            }
        }
        workgroupBarrier();
    }
}

fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    return v > bv || (v == bv && i < bi);
}

// Writes the 4 dot products `total` of the row group at first_row (< N), scaled by `scale`
// (1/rms with RMS, else 1).
fn finish(first_row: u32, total: vec4<f32>, scale: f32) {
    let d = total * scale;
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
    var bv = -0x1.fffffep+127f;  // -f32::MAX: -inf never wins
    var bi = NONE;
    var ss = 0.0;
    for (var i = 0u; i < 4u; i++) {
        if (first_row + i < N) {
            let o = Y_OFFSET + first_row + i;
            let v = select(0.0, y[o], ACCUMULATE) + d[i];
            y[o] = v;
            if (NORM_OUT) {
                out_f[o] = v * g_next[o];
                ss += v * v;
            }
            if (better(v, o, bv, bi)) {
                bv = v;
                bi = o;
            }
        }
    }
    if (NORM_OUT) {
        out_u[(Y_OFFSET + first_row) / 4u] = bitcast<u32>(ss);
    }
    if (ARGMAX) {
        out_f[ARG_BASE + first_row / 4u] = bv;
        out_u[ARG_BASE + first_row / 4u] = bi;
    }
}
