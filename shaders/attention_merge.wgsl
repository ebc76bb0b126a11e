// Combines the per-chunk partial results of attention_decode.wgsl into the attention output:
// out = sum_c exp(m_c - M) o_c / sum_c exp(m_c - M) l_c with M = max_c m_c.
//
// Dispatch: (n_head, 1, 1).

struct StepParams {
    n_tokens: u32,
    pos: u32,
    n_kv: u32,
    _pad: u32,
}

override HEAD_DIM: u32 = 128u;
override MAX_CHUNKS: u32 = 512u;
override CHUNK: u32 = 64u; // the partial kernel's CHUNK
const WG: u32 = 128u;

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> part_o: array<f32>;       // (n_head, max_chunks, head_dim)
@group(0) @binding(2) var<storage, read> part_ml: array<vec2<f32>>; // (n_head, max_chunks) (max, sum)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;    // (n_head, head_dim)

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let n_chunks = (step.n_kv + CHUNK - 1u) / CHUNK;
    let ml = h * MAX_CHUNKS;
    var m = -1.0e30;
    for (var c = 0u; c < n_chunks; c++) {
        m = max(m, part_ml[ml + c].x);
    }
    var l = 0.0;
    for (var c = 0u; c < n_chunks; c++) {
        let e = part_ml[ml + c];
        l += exp(e.x - m) * e.y;
    }
    let inv_l = 1.0 / l;
    for (var d = lid; d < HEAD_DIM; d += WG) {
        var acc = 0.0;
        for (var c = 0u; c < n_chunks; c++) {
            acc += exp(part_ml[ml + c].x - m) * part_o[(ml + c) * HEAD_DIM + d];
        }
        out[h * HEAD_DIM + d] = acc * inv_l;
    }
}
