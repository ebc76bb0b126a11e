// Attention of one query token over the KV cache, split into chunks of CHUNK positions
// (flash-decoding). Each workgroup takes one kv head and one chunk, computes the scores of all
// GROUP = n_head / n_head_kv query heads that share that kv head (so K and V are read once per
// group), and writes an unnormalised partial result: the chunk's score max m, the sum l of
// exp(score - m) and sum exp(score - m) * v. attention_merge.wgsl combines the chunks.
//
// Small chunks keep many workgroups busy at short contexts and keep every thread's serial loops
// short: WG / CHUNK threads ("lanes") share one position's K row, and in the V phase the threads
// split the chunk's positions into slices that are summed through shared memory at the end.
//
// Dispatch: (n_head_kv, max_chunks, 1) with max_chunks = ceil(n_ctx / CHUNK): the bind group and
// dispatch size never change; workgroups whose chunk starts at or past step.n_kv exit at once.

struct StepParams {
    n_tokens: u32,
    pos: u32,
    n_kv: u32, // positions 0 .. n_kv are attended (the query token is at n_kv - 1)
    _pad: u32,
}

override HEAD_DIM: u32 = 128u;   // multiple of 8; GROUP * HEAD_DIM <= MAX_Q
override N_HEAD_KV: u32 = 8u;
override GROUP: u32 = 2u;        // n_head / n_head_kv, <= MAX_GROUP
override CHUNK: u32 = 64u;       // positions per workgroup: 32, 64 or 128
override MAX_CHUNKS: u32 = 512u; // ceil(n_ctx / CHUNK): stride of the partial buffers
override SCALE: f32 = 0.08838834764831845; // 1 / sqrt(head_dim)

const WG: u32 = 128u;
const MAX_GROUP: u32 = 8u;
const MAX_Q: u32 = 1024u;
const MAX_CHUNK: u32 = 128u;
const NEG_BIG: f32 = -1.0e30;

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;                 // (n_head, head_dim)
@group(0) @binding(2) var<storage, read> k_cache: array<vec4<u32>>;     // (n_ctx, n_head_kv, head_dim/8) 4 x f16x2
@group(0) @binding(3) var<storage, read> v_cache: array<vec4<u32>>;     // (n_ctx, n_head_kv, head_dim/8) 4 x f16x2
@group(0) @binding(4) var<storage, read_write> part_o: array<f32>;      // (n_head, max_chunks, head_dim)
@group(0) @binding(5) var<storage, read_write> part_ml: array<vec2<f32>>; // (n_head, max_chunks) (max, sum)

var<workgroup> q_sh: array<f32, MAX_Q>;                  // (group, head_dim)
var<workgroup> p_sh: array<f32, MAX_GROUP * MAX_CHUNK>;  // (group, chunk) scores, then exp(score - m)
var<workgroup> scratch: array<f32, WG * 8u>;             // (thread, group) lane scores, then (thread, 8) V sums
var<workgroup> m_sh: array<f32, MAX_GROUP>;              // (group) chunk max

fn unpack8(w: vec4<u32>) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(
        vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
        vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)),
    );
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let kvh = wid.x;
    let chunk = wid.y;
    let n_kv = step.n_kv;
    let start = chunk * CHUNK;
    if (start >= n_kv) {
        return;
    }
    let n_valid = min(CHUNK, n_kv - start);
    let row_vec4 = HEAD_DIM / 8u;
    let head0 = kvh * GROUP; // the group's query heads are head0 .. head0 + GROUP

    for (var i = lid; i < GROUP * HEAD_DIM; i += WG) {
        q_sh[i] = q[head0 * HEAD_DIM + i];
    }
    workgroupBarrier();

    // Scores: `lanes` threads per position, each over every lanes-th 8 dims of the K row.
    let lanes = WG / CHUNK;
    let pl = lid / lanes;
    let lane = lid % lanes;
    var s: array<f32, MAX_GROUP>;
    for (var g = 0u; g < GROUP; g++) {
        s[g] = 0.0;
    }
    if (pl < n_valid) {
        let base = ((start + pl) * N_HEAD_KV + kvh) * row_vec4;
        for (var w4 = lane; w4 < row_vec4; w4 += lanes) {
            let kk = unpack8(k_cache[base + w4]);
            let d = 8u * w4;
            for (var g = 0u; g < GROUP; g++) {
                let qo = g * HEAD_DIM + d;
                let q0 = vec4<f32>(q_sh[qo], q_sh[qo + 1u], q_sh[qo + 2u], q_sh[qo + 3u]);
                let q1 = vec4<f32>(q_sh[qo + 4u], q_sh[qo + 5u], q_sh[qo + 6u], q_sh[qo + 7u]);
                s[g] += dot(q0, kk[0]) + dot(q1, kk[1]);
            }
        }
    }
    for (var g = 0u; g < GROUP; g++) {
        scratch[lid * MAX_GROUP + g] = s[g];
    }
    workgroupBarrier();
    for (var i = lid; i < GROUP * CHUNK; i += WG) {
        let g = i / CHUNK;
        let p = i % CHUNK;
        var sc = NEG_BIG;
        if (p < n_valid) {
            var t = 0.0;
            for (var l = 0u; l < lanes; l++) {
                t += scratch[(p * lanes + l) * MAX_GROUP + g];
            }
            sc = t * SCALE;
        }
        p_sh[g * CHUNK + p] = sc;
    }
    workgroupBarrier();

    // Softmax statistics of the chunk, one thread per query head.
    if (lid < GROUP) {
        var m = NEG_BIG;
        for (var p = 0u; p < n_valid; p++) {
            m = max(m, p_sh[lid * CHUNK + p]);
        }
        m_sh[lid] = m;
    }
    workgroupBarrier();
    for (var i = lid; i < GROUP * CHUNK; i += WG) {
        let g = i / CHUNK;
        var e = 0.0;
        if (i % CHUNK < n_valid) {
            e = exp(p_sh[i] - m_sh[g]);
        }
        p_sh[i] = e;
    }
    workgroupBarrier();
    if (lid < GROUP) {
        var l = 0.0;
        for (var p = 0u; p < n_valid; p++) {
            l += p_sh[lid * CHUNK + p];
        }
        part_ml[(head0 + lid) * MAX_CHUNKS + chunk] = vec2<f32>(m_sh[lid], l);
    }

    // Weighted sum of V: thread = (slice, head of group, 8 dims); a slice takes every
    // slices-th position, and consecutive threads read consecutive 16 bytes of a V row.
    let pairs = GROUP * row_vec4; // <= WG since GROUP * HEAD_DIM <= MAX_Q
    let slices = WG / pairs;
    let slice = lid / pairs;
    let pr = lid % pairs;
    let g = pr / row_vec4;
    let w4 = pr % row_vec4;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    if (slice < slices) {
        for (var j = slice; j < n_valid; j += slices) {
            let p = p_sh[g * CHUNK + j];
            let vv = unpack8(v_cache[((start + j) * N_HEAD_KV + kvh) * row_vec4 + w4]);
            acc0 += p * vv[0];
            acc1 += p * vv[1];
        }
    }
    for (var e = 0u; e < 4u; e++) {
        scratch[lid * 8u + e] = acc0[e];
        scratch[lid * 8u + 4u + e] = acc1[e];
    }
    workgroupBarrier();
    if (lid < pairs) {
        let dst = ((head0 + g) * MAX_CHUNKS + chunk) * HEAD_DIM + 8u * w4;
        for (var e = 0u; e < 8u; e++) {
            var t = 0.0;
            for (var sl = 0u; sl < slices; sl++) {
                t += scratch[(sl * pairs + lid) * 8u + e];
            }
            part_o[dst + e] = t;
        }
    }
}
