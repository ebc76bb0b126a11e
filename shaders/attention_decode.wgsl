// Attention of one query token over the KV cache, split into chunks of CHUNK positions
// (flash-decoding). Each workgroup takes one kv head and one chunk, computes the scores of all
// GROUP = n_head / n_head_kv query heads that share that kv head (so K and V are read once per
// group), and writes an unnormalised partial result: the chunk's score max m, the sum l of
// exp(score - m) and sum exp(score - m) * v. attention_merge.wgsl combines the chunks.
//
// Dispatch: (n_head_kv, max_chunks, 1) with max_chunks = ceil(n_ctx / CHUNK): the bind group and
// dispatch size never change; workgroups whose chunk starts at or past step.n_kv exit at once.

struct StepParams {
    n_tokens: u32,
    pos: u32,
    n_kv: u32, // positions 0 .. n_kv are attended (the query token is at n_kv - 1)
    _pad: u32,
}

override HEAD_DIM: u32 = 128u;   // even; GROUP * HEAD_DIM <= MAX_Q
override N_HEAD_KV: u32 = 8u;
override GROUP: u32 = 2u;        // n_head / n_head_kv, <= MAX_GROUP
override MAX_CHUNKS: u32 = 256u; // ceil(n_ctx / CHUNK): stride of the partial buffers
override SCALE: f32 = 0.08838834764831845; // 1 / sqrt(head_dim)

const CHUNK: u32 = 128u; // positions per workgroup = threads per workgroup
const MAX_GROUP: u32 = 8u;
const MAX_Q: u32 = 1024u;
const NEG_BIG: f32 = -1.0e30;

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;               // (n_head, head_dim)
@group(0) @binding(2) var<storage, read> k_cache: array<u32>;         // (n_ctx, n_head_kv, head_dim/2) f16x2
@group(0) @binding(3) var<storage, read> v_cache: array<u32>;         // (n_ctx, n_head_kv, head_dim/2) f16x2
@group(0) @binding(4) var<storage, read_write> part_o: array<f32>;    // (n_head, max_chunks, head_dim)
@group(0) @binding(5) var<storage, read_write> part_ml: array<vec2<f32>>; // (n_head, max_chunks) (max, sum)

var<workgroup> q_sh: array<f32, MAX_Q>;               // (group, head_dim)
var<workgroup> p_sh: array<f32, MAX_GROUP * CHUNK>;   // (group, chunk) scores, then probabilities
var<workgroup> red: array<f32, MAX_GROUP * CHUNK>;    // (group, chunk) reduction scratch

// Tree reduction of red[g * CHUNK + 0 .. CHUNK] for every g; result in red[g * CHUNK].
fn reduce_max(lid: u32) {
    for (var s = CHUNK / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var g = 0u; g < GROUP; g++) {
                red[g * CHUNK + lid] = max(red[g * CHUNK + lid], red[g * CHUNK + lid + s]);
            }
        }
        workgroupBarrier();
    }
}

fn reduce_sum(lid: u32) {
    for (var s = CHUNK / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var g = 0u; g < GROUP; g++) {
                red[g * CHUNK + lid] += red[g * CHUNK + lid + s];
            }
        }
        workgroupBarrier();
    }
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
    let half_dim = HEAD_DIM / 2u;

    // The group's query heads are consecutive: head kvh * GROUP + g.
    for (var i = lid; i < GROUP * HEAD_DIM; i += CHUNK) {
        q_sh[i] = q[kvh * GROUP * HEAD_DIM + i];
    }
    workgroupBarrier();

    // One position per thread: scores against every head of the group.
    var s: array<f32, MAX_GROUP>;
    for (var g = 0u; g < GROUP; g++) {
        s[g] = 0.0;
    }
    if (lid < n_valid) {
        let base = ((start + lid) * N_HEAD_KV + kvh) * half_dim;
        for (var w = 0u; w < half_dim; w++) {
            let kk = unpack2x16float(k_cache[base + w]);
            for (var g = 0u; g < GROUP; g++) {
                s[g] += q_sh[g * HEAD_DIM + 2u * w] * kk.x + q_sh[g * HEAD_DIM + 2u * w + 1u] * kk.y;
            }
        }
    }
    for (var g = 0u; g < GROUP; g++) {
        var sc = NEG_BIG;
        if (lid < n_valid) {
            sc = s[g] * SCALE;
        }
        p_sh[g * CHUNK + lid] = sc;
        red[g * CHUNK + lid] = sc;
    }
    workgroupBarrier();
    reduce_max(lid);

    var m: array<f32, MAX_GROUP>;
    for (var g = 0u; g < GROUP; g++) {
        m[g] = red[g * CHUNK];
    }
    workgroupBarrier(); // everyone has read the maxima before red is reused
    for (var g = 0u; g < GROUP; g++) {
        var p = 0.0;
        if (lid < n_valid) {
            p = exp(p_sh[g * CHUNK + lid] - m[g]);
        }
        p_sh[g * CHUNK + lid] = p;
        red[g * CHUNK + lid] = p;
    }
    workgroupBarrier();
    reduce_sum(lid);

    let head0 = kvh * GROUP;
    if (lid < GROUP) {
        part_ml[(head0 + lid) * MAX_CHUNKS + chunk] = vec2<f32>(m[lid], red[lid * CHUNK]);
    }

    // Weighted sum of V: one (head, dim pair) per thread and loop step; consecutive threads read
    // consecutive words of a V row.
    for (var i = lid; i < GROUP * half_dim; i += CHUNK) {
        let g = i / half_dim;
        let w = i % half_dim;
        var acc = vec2<f32>(0.0);
        for (var j = 0u; j < n_valid; j++) {
            let vv = unpack2x16float(v_cache[((start + j) * N_HEAD_KV + kvh) * half_dim + w]);
            acc += p_sh[g * CHUNK + j] * vv;
        }
        let dst = ((head0 + g) * MAX_CHUNKS + chunk) * HEAD_DIM + 2u * w;
        part_o[dst] = acc.x;
        part_o[dst + 1u] = acc.y;
    }
}
