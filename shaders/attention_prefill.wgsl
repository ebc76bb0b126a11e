// Causal attention for a batch of n_tokens query tokens at positions step.pos .. step.pos +
// n_tokens over the KV cache (already holding the batch's own keys and values), GQA.
//
// A workgroup takes one kv head and TOKENS = 16 / GROUP consecutive query tokens: its ROWS
// (token, head-of-group) pairs all share the kv head, so each K/V block is read once for them.
// Each row is served by TPR = 4 threads that each own HEAD_DIM / 4 dims of q and of the output.
// Keys are processed in blocks of BK (flash attention, online softmax): per block the threads
// write partial dot products, every thread of a row sums its row's four partials, updates the
// running max / sum and rescales its output slice.
//
// Dispatch: (n_head_kv, ceil(n_tokens / TOKENS), 1).

struct StepParams {
    n_tokens: u32,
    pos: u32,
    n_kv: u32,
    _pad: u32,
}

override HEAD_DIM: u32 = 128u; // multiple of 8, <= 4 * MAX_SLICE
override N_HEAD_KV: u32 = 8u;
override GROUP: u32 = 2u;      // n_head / n_head_kv, <= ROWS
override SCALE: f32 = 0.08838834764831845;

const WG: u32 = 64u;
const TPR: u32 = 4u;           // threads per row
const ROWS: u32 = 16u;         // WG / TPR
const BK: u32 = 16u;           // keys per block
const MAX_SLICE: u32 = 32u;    // dims per thread
const MAX_HALF: u32 = 64u;     // HEAD_DIM / 2 upper bound
const NEG_BIG: f32 = -1.0e30;

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;         // (n_tokens, n_head, head_dim)
@group(0) @binding(2) var<storage, read> k_cache: array<u32>;   // (n_ctx, n_head_kv, head_dim/2) f16x2
@group(0) @binding(3) var<storage, read> v_cache: array<u32>;   // (n_ctx, n_head_kv, head_dim/2) f16x2
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // (n_tokens, n_head, head_dim)

var<workgroup> k_sh: array<u32, BK * MAX_HALF>;  // (bk, head_dim/2) f16x2
var<workgroup> v_sh: array<u32, BK * MAX_HALF>;  // (bk, head_dim/2) f16x2
var<workgroup> part: array<f32, WG * BK>;        // (thread, bk) partial dot products

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let kvh = wid.x;
    let tokens = ROWS / GROUP;
    let n_head = N_HEAD_KV * GROUP;
    let half_dim = HEAD_DIM / 2u;
    let slice_words = half_dim / TPR; // f16 pairs per thread
    let t_first = wid.y * tokens;
    if (t_first >= step.n_tokens) {
        return;
    }
    // Keys any row of this workgroup may see: up to the position of its last valid token.
    let kv_end = step.pos + min(t_first + tokens, step.n_tokens);

    let row = lid / TPR;
    let c = lid % TPR;
    let t = t_first + row / GROUP;
    let h = kvh * GROUP + row % GROUP;
    let valid = row < tokens * GROUP && t < step.n_tokens;
    let q_pos = step.pos + t;
    let word0 = c * slice_words;

    var qr: array<f32, MAX_SLICE>;
    var acc: array<f32, MAX_SLICE>;
    for (var i = 0u; i < 2u * slice_words; i++) {
        acc[i] = 0.0;
        qr[i] = 0.0;
        if (valid) {
            qr[i] = q[(t * n_head + h) * HEAD_DIM + 2u * word0 + i];
        }
    }
    var m = NEG_BIG;
    var l = 0.0;

    for (var kb = 0u; kb < kv_end; kb += BK) {
        for (var i = lid; i < BK * half_dim; i += WG) {
            let j = i / half_dim;
            let w = i % half_dim;
            var kw = 0u;
            var vw = 0u;
            if (kb + j < kv_end) {
                let src = ((kb + j) * N_HEAD_KV + kvh) * half_dim + w;
                kw = k_cache[src];
                vw = v_cache[src];
            }
            k_sh[i] = kw;
            v_sh[i] = vw;
        }
        workgroupBarrier();

        for (var j = 0u; j < BK; j++) {
            var s = 0.0;
            for (var w = 0u; w < slice_words; w++) {
                let kk = unpack2x16float(k_sh[j * half_dim + word0 + w]);
                s += qr[2u * w] * kk.x + qr[2u * w + 1u] * kk.y;
            }
            part[lid * BK + j] = s;
        }
        workgroupBarrier();

        var sc: array<f32, BK>;
        var m_blk = NEG_BIG;
        let rb = row * TPR;
        for (var j = 0u; j < BK; j++) {
            var s = NEG_BIG;
            if (kb + j <= q_pos && kb + j < kv_end) {
                s = (part[rb * BK + j] + part[(rb + 1u) * BK + j] + part[(rb + 2u) * BK + j]
                    + part[(rb + 3u) * BK + j]) * SCALE;
            }
            sc[j] = s;
            m_blk = max(m_blk, s);
        }
        let m_new = max(m, m_blk);
        let corr = exp(m - m_new);
        l *= corr;
        for (var i = 0u; i < 2u * slice_words; i++) {
            acc[i] *= corr;
        }
        for (var j = 0u; j < BK; j++) {
            let p = exp(sc[j] - m_new);
            l += p;
            for (var w = 0u; w < slice_words; w++) {
                let vv = unpack2x16float(v_sh[j * half_dim + word0 + w]);
                acc[2u * w] += p * vv.x;
                acc[2u * w + 1u] += p * vv.y;
            }
        }
        m = m_new;
        workgroupBarrier(); // k_sh, v_sh and part are overwritten by the next block
    }

    if (valid) {
        let inv_l = 1.0 / l;
        for (var i = 0u; i < 2u * slice_words; i++) {
            out[(t * n_head + h) * HEAD_DIM + 2u * word0 + i] = acc[i] * inv_l;
        }
    }
}
