// Combines the per-chunk partial results of attention_decode.wgsl into the attention output:
// out = sum_c exp(m_c - M) o_c / sum_c exp(m_c - M) l_c with M = max_c m_c.
//
// One workgroup per head. The chunk weights exp(m_c - M) are computed once, in parallel, into
// workgroup memory (up to TABLE chunks: 65,536 positions in chunks of 64; past that, per load),
// M and the sum by tree reductions; then thread (slice, d4) sums every slices-th chunk of dims
// 4 d4 .. 4 d4 + 4, and the slices are added through workgroup memory.
//
// Dispatch: (n_head, 1, 1).

struct StepParams {
    n_tokens: u32,
    pos: u32,
    n_kv: u32,
    _pad: u32,
}

override HEAD_DIM: u32 = 128u; // multiple of 4, at most 4 * WG
override MAX_CHUNKS: u32 = 512u;
override CHUNK: u32 = 64u; // the partial kernel's CHUNK
const WG: u32 = 128u;
const TABLE: u32 = 1024u;
const NEG_BIG: f32 = -1.0e30;

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> part_o: array<vec4<f32>>; // (n_head, max_chunks, head_dim)
@group(0) @binding(2) var<storage, read> part_ml: array<vec2<f32>>; // (n_head, max_chunks) (max, sum)
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>; // (n_head, head_dim)

var<workgroup> w_sh: array<f32, TABLE>;
var<workgroup> red: array<f32, WG>;
var<workgroup> acc_sh: array<vec4<f32>, WG>;

// The sum (is_max false) or max of red[0..WG]; every thread calls it, in uniform control flow.
fn reduce(lid: u32, v: f32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let o = red[lid + s];
            red[lid] = select(red[lid] + o, max(red[lid], o), is_max);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let n_chunks = min((step.n_kv + CHUNK - 1u) / CHUNK, MAX_CHUNKS);
    let ml = h * MAX_CHUNKS;
    var mp = NEG_BIG;
    for (var c = lid; c < n_chunks; c += WG) {
        mp = max(mp, part_ml[ml + c].x);
    }
    let m = reduce(lid, mp, true);
    var lp = 0.0;
    for (var c = lid; c < n_chunks; c += WG) {
        let e = part_ml[ml + c];
        let w = exp(e.x - m);
        if (c < TABLE) {
            w_sh[c] = w;
        }
        lp += w * e.y;
    }
    // The reduction's barriers also publish w_sh.
    let inv_l = 1.0 / reduce(lid, lp, false);

    let cols = HEAD_DIM / 4u;
    let slices = WG / cols;
    let d4 = lid % cols;
    let slice = lid / cols;
    var acc = vec4<f32>(0.0);
    if (slice < slices) {
        for (var c = slice; c < n_chunks; c += slices) {
            var w: f32;
            if (c < TABLE) {
                w = w_sh[c];
            } else {
                w = exp(part_ml[ml + c].x - m);
            }
            acc += w * part_o[(ml + c) * cols + d4];
        }
    }
    acc_sh[lid] = acc;
    workgroupBarrier();
    if (lid < cols) {
        var t = acc_sh[lid];
        for (var s = 1u; s < slices; s++) {
            t += acc_sh[s * cols + lid];
        }
        out[h * cols + lid] = t * inv_l;
    }
}
