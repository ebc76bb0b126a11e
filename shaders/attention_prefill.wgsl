// Causal attention for a batch of n_tokens query tokens at positions step.pos .. step.pos +
// n_tokens over the KV cache (already holding the batch's own keys and values), GQA.
//
// A workgroup takes one kv head and TOKENS = ROWS / GROUP consecutive query tokens: its ROWS =
// 32 (token, head-of-group) rows all share the kv head, so each K/V block is read from the
// cache once for them. A thread holds two rows (rows 2p and 2p + 1: the two heads of a GQA
// group, or two tokens when GROUP is 1), so every K or V value it reads from workgroup memory
// feeds two rows (register blocking: half the loads per FMA of one row per thread). Each row
// pair is served by TPR = 4 threads that each own HEAD_DIM / 4 dims of q and of the output.
// Keys are processed in blocks of BK (flash attention, online softmax): per block the threads
// write partial dot products; thread c of a pair sums the pair's four partials for its KPT
// keys; the pair's threads exchange maxima, each computes the exps of its own keys once and
// shares them, and every thread updates the running max and rescales its output slices.
//
// The cache is f16 pairs or (KV_Q8) Q8_0 blocks (layout in kv_cache.rs); a K/V block is copied
// to workgroup memory in the cache's own encoding (Q8_0: quants + f32 scales) and decoded four
// values at a time by k_sh4 / v_sh4.
//
// Dispatch: (n_head_kv, ceil(n_tokens / TOKENS), 1).

struct StepParams {
    n_tokens: u32,
    pos: u32,
    n_kv: u32,
    _pad: u32,
}

override HEAD_DIM: u32 = 128u; // multiple of 16, <= 4 * MAX_SLICE
override N_HEAD_KV: u32 = 8u;
override GROUP: u32 = 2u;      // n_head / n_head_kv, <= ROWS
override SCALE: f32 = 0.08838834764831845;
override KV_Q8: bool = false;  // cache type: f16 pairs (false) or Q8_0 (true)
override SCALE_BASE: u32 = 0u; // Q8_0: word offset of the scale region in k_cache / v_cache

const WG: u32 = 64u;
const TPR: u32 = 4u;           // threads per row pair
const PAIRS: u32 = 16u;        // WG / TPR
const ROWS: u32 = 32u;         // 2 * PAIRS (src/gpu/ops/attention_prefill.rs: PREFILL_ROWS)
const BK: u32 = 8u;            // keys per block
const KPT: u32 = 2u;           // BK / TPR: keys whose exp a thread computes
const MAX_SLICE: u32 = 32u;    // dims per thread
const MAX_HALF: u32 = 64u;     // HEAD_DIM / 2 upper bound
const QK: u32 = 32u;           // Q8_0 block
const MAX_BLOCKS: u32 = 4u;    // HEAD_DIM / QK upper bound
const NEG_BIG: f32 = -1.0e30;

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;         // (n_tokens, n_head, head_dim)
@group(0) @binding(2) var<storage, read> k_cache: array<u32>;   // f16: (n_ctx, n_head_kv, head_dim/2) f16x2; Q8_0: quants, scales
@group(0) @binding(3) var<storage, read> v_cache: array<u32>;   // same layout as k_cache
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // (n_tokens, n_head, head_dim)

var<workgroup> k_sh: array<u32, BK * MAX_HALF>;       // f16: (bk, head_dim/2) f16x2; Q8_0: (bk, head_dim/4) i8x4
var<workgroup> v_sh: array<u32, BK * MAX_HALF>;       // as k_sh
var<workgroup> ks_sh: array<f32, BK * MAX_BLOCKS>;    // Q8_0: (bk, head_dim/32) scales of k_sh
var<workgroup> vs_sh: array<f32, BK * MAX_BLOCKS>;    // Q8_0: scales of v_sh
var<workgroup> part: array<vec2<f32>, WG * BK>;       // (thread, bk) partial dot products of its two rows
var<workgroup> mx_sh: array<vec2<f32>, WG>;           // (thread) max of its keys' scores; at the end, its sums of exp
var<workgroup> p_sh: array<vec2<f32>, PAIRS * BK>;    // (pair, bk) exp(score - m) of the block

// Four i8 (little-endian in a word) to f32.
fn i8x4(w: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w << 24u, w << 16u, w << 8u, w)) >> vec4<u32>(24u));
}

// u32 words of one cached row in workgroup memory.
fn row_words() -> u32 {
    return select(HEAD_DIM / 2u, HEAD_DIM / 4u, KV_Q8);
}

// Values 4g .. 4g + 4 of key j of the block in workgroup memory.
fn k_sh4(j: u32, g: u32) -> vec4<f32> {
    if (KV_Q8) {
        return i8x4(k_sh[j * (HEAD_DIM / 4u) + g]) * ks_sh[j * MAX_BLOCKS + 4u * g / QK];
    }
    let w = j * (HEAD_DIM / 2u) + 2u * g;
    return vec4<f32>(unpack2x16float(k_sh[w]), unpack2x16float(k_sh[w + 1u]));
}

// As k_sh4 for values.
fn v_sh4(j: u32, g: u32) -> vec4<f32> {
    if (KV_Q8) {
        return i8x4(v_sh[j * (HEAD_DIM / 4u) + g]) * vs_sh[j * MAX_BLOCKS + 4u * g / QK];
    }
    let w = j * (HEAD_DIM / 2u) + 2u * g;
    return vec4<f32>(unpack2x16float(v_sh[w]), unpack2x16float(v_sh[w + 1u]));
}

// q values 4g .. 4g + 4 of row `row` of the workgroup (zeros for an invalid row).
fn q4(t: u32, h: u32, valid: bool, g: u32) -> vec4<f32> {
    if (!valid) {
        return vec4<f32>(0.0);
    }
    let qo = (t * N_HEAD_KV * GROUP + h) * HEAD_DIM + 4u * g;
    return vec4<f32>(q[qo], q[qo + 1u], q[qo + 2u], q[qo + 3u]);
}

fn write4(t: u32, h: u32, g: u32, a: vec4<f32>) {
    let o = (t * N_HEAD_KV * GROUP + h) * HEAD_DIM + 4u * g;
    out[o] = a.x;
    out[o + 1u] = a.y;
    out[o + 2u] = a.z;
    out[o + 3u] = a.w;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let kvh = wid.x;
    let tokens = ROWS / GROUP;
    let t_first = wid.y * tokens;
    if (t_first >= step.n_tokens) {
        return;
    }
    // Keys any row of this workgroup may see: up to the position of its last valid token.
    let kv_end = step.pos + min(t_first + tokens, step.n_tokens);

    let pair = lid / TPR;
    let c = lid % TPR;
    let pb = pair * TPR; // the pair's first thread
    // The pair's rows 2 pair (a) and 2 pair + 1 (b): row r is token r / GROUP, head r % GROUP.
    let ra = 2u * pair;
    let rb = ra + 1u;
    let ta = t_first + ra / GROUP;
    let tb = t_first + rb / GROUP;
    let ha = kvh * GROUP + ra % GROUP;
    let hb = kvh * GROUP + rb % GROUP;
    let valid_a = ra < tokens * GROUP && ta < step.n_tokens;
    let valid_b = rb < tokens * GROUP && tb < step.n_tokens;
    let qpos_a = step.pos + ta;
    let qpos_b = step.pos + tb;
    let n4 = HEAD_DIM / 4u / TPR; // groups of 4 dims per thread
    let g0 = c * n4;              // this thread's first group

    var qa: array<vec4<f32>, MAX_SLICE / 4u>;
    var qb: array<vec4<f32>, MAX_SLICE / 4u>;
    var acca: array<vec4<f32>, MAX_SLICE / 4u>;
    var accb: array<vec4<f32>, MAX_SLICE / 4u>;
    for (var i = 0u; i < n4; i++) {
        qa[i] = q4(ta, ha, valid_a, g0 + i);
        qb[i] = q4(tb, hb, valid_b, g0 + i);
        acca[i] = vec4<f32>(0.0);
        accb[i] = vec4<f32>(0.0);
    }
    var m = vec2<f32>(NEG_BIG);
    var l = vec2<f32>(0.0);
    let rw = row_words();
    let nb = HEAD_DIM / QK;
    let sw = (nb + 1u) / 2u; // Q8_0 scale words per cache row

    for (var kb = 0u; kb < kv_end; kb += BK) {
        for (var i = lid; i < BK * rw; i += WG) {
            let j = i / rw;
            let w = i % rw;
            var kw = 0u;
            var vw = 0u;
            if (kb + j < kv_end) {
                let src = ((kb + j) * N_HEAD_KV + kvh) * rw + w;
                kw = k_cache[src];
                vw = v_cache[src];
            }
            k_sh[j * rw + w] = kw;
            v_sh[j * rw + w] = vw;
        }
        if (KV_Q8) {
            for (var i = lid; i < BK * nb; i += WG) {
                let j = i / nb;
                let b = i % nb;
                var kd = 0.0;
                var vd = 0.0;
                if (kb + j < kv_end) {
                    let src = SCALE_BASE + ((kb + j) * N_HEAD_KV + kvh) * sw + b / 2u;
                    kd = unpack2x16float(k_cache[src])[b & 1u];
                    vd = unpack2x16float(v_cache[src])[b & 1u];
                }
                ks_sh[j * MAX_BLOCKS + b] = kd;
                vs_sh[j * MAX_BLOCKS + b] = vd;
            }
        }
        workgroupBarrier();

        // Partial scores: each K value read once for both rows.
        for (var j = 0u; j < BK; j++) {
            var s = vec2<f32>(0.0);
            for (var i = 0u; i < n4; i++) {
                let kk = k_sh4(j, g0 + i);
                s += vec2<f32>(dot(qa[i], kk), dot(qb[i], kk));
            }
            part[lid * BK + j] = s;
        }
        workgroupBarrier();

        // The softmax of the block, each exp once: thread c finishes the scores of keys KPT c ..
        // KPT c + KPT of both rows (summing the pair's TPR partials); the pair's threads
        // exchange their maxima, then their exps, through workgroup memory.
        let j0 = c * KPT;
        var sc: array<vec2<f32>, KPT>;
        var mx = vec2<f32>(NEG_BIG);
        for (var e = 0u; e < KPT; e++) {
            let j = j0 + e;
            let key = kb + j;
            let tot = (part[pb * BK + j] + part[(pb + 1u) * BK + j])
                + (part[(pb + 2u) * BK + j] + part[(pb + 3u) * BK + j]);
            let live = key < kv_end;
            let s = vec2<f32>(
                select(NEG_BIG, tot.x * SCALE, live && key <= qpos_a),
                select(NEG_BIG, tot.y * SCALE, live && key <= qpos_b),
            );
            sc[e] = s;
            mx = max(mx, s);
        }
        mx_sh[lid] = mx;
        workgroupBarrier();
        let m_new = max(m, max(max(mx_sh[pb], mx_sh[pb + 1u]), max(mx_sh[pb + 2u], mx_sh[pb + 3u])));
        let corr = exp(m - m_new);
        l *= corr;
        for (var e = 0u; e < KPT; e++) {
            // Masked keys: exp(-1e30 - m_new) = 0 (m_new is finite once key 0 is seen, and key
            // 0 is in the first block of every row).
            let p = exp(sc[e] - m_new);
            p_sh[pair * BK + j0 + e] = p;
            l += p;
        }
        workgroupBarrier();
        for (var i = 0u; i < n4; i++) {
            acca[i] *= corr.x;
            accb[i] *= corr.y;
        }
        // Each V value read once for both rows.
        for (var j = 0u; j < BK; j++) {
            let p = p_sh[pair * BK + j];
            for (var i = 0u; i < n4; i++) {
                let vv = v_sh4(j, g0 + i);
                acca[i] += p.x * vv;
                accb[i] += p.y * vv;
            }
        }
        m = m_new;
        workgroupBarrier(); // k_sh, v_sh, part, mx_sh and p_sh are overwritten by the next block
    }

    // Each thread summed the exps of its own keys: a row's sum is its pair's TPR threads'.
    mx_sh[lid] = l;
    workgroupBarrier();
    let inv_l = 1.0 / ((mx_sh[pb] + mx_sh[pb + 1u]) + (mx_sh[pb + 2u] + mx_sh[pb + 3u]));
    for (var i = 0u; i < n4; i++) {
        if (valid_a) {
            write4(ta, ha, g0 + i, acca[i] * inv_l.x);
        }
        if (valid_b) {
            write4(tb, hb, g0 + i, accb[i] * inv_l.y);
        }
    }
}
