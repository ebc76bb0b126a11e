// Decode step D3 of a layer: x += Wo attn, where attn is the merge of attention_decode.wgsl's
// per-chunk partials, done in the matvec's input load instead of a merge pass:
// attn[h, d] = sum_c exp(m_c - M_h) o_c[d] / sum_c exp(m_c - M_h) l_c with M_h = max_c m_c.
// Each workgroup first computes M_h and 1 / L_h of every head into workgroup memory; with one
// chunk (contexts up to CHUNK) a load is one partial times 1 / l.
//
// Dispatch: (ceil(N / ROWS_PER_WG), 1, 1) (split over x/y past the per-dimension limit).
//
// Indices in range by construction (built without runtime checks): chunks run below
// ceil(step.n_kv / CHUNK) <= MAX_CHUNKS (n_kv <= n_ctx, checked by the host before the step),
// heads below N_HEAD <= MAX_HEADS (checked when built), `load_x` indices below K/4 = q_dim/4,
// and rows are clamped by the shared core.

struct StepParams {
    n_tokens: u32,
    pos: u32,
    n_kv: u32,
    _pad: u32,
}

override HEAD_DIM: u32 = 128u;   // multiple of 4; K = N_HEAD * HEAD_DIM
override N_HEAD: u32 = 16u;      // <= MAX_HEADS
override CHUNK: u32 = 64u;       // attention_decode's positions per chunk
override MAX_CHUNKS: u32 = 512u; // stride of the partial buffers

const MAX_HEADS: u32 = 128u;

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> part_o: array<vec4<f32>>;  // (n_head, max_chunks, head_dim/4)
@group(0) @binding(2) var<storage, read> part_ml: array<vec2<f32>>; // (n_head, max_chunks) (max, sum)
@group(0) @binding(3) var<storage, read> signs: array<u32>;         // (N, K/32) sign bits of Wo
@group(0) @binding(4) var<storage, read> scales: array<u32>;        // (N * K/128) f16, 2 per word
@group(0) @binding(5) var<storage, read_write> y: array<f32>;       // (N) residual stream, += Wo attn

var<workgroup> head_max: array<f32, MAX_HEADS>;   // M_h
var<workgroup> head_inv_l: array<f32, MAX_HEADS>; // 1 / L_h

fn load_x(i: u32) -> vec4<f32> {
    let h = (4u * i) / HEAD_DIM;
    let d4 = i % (HEAD_DIM / 4u);
    let ml = h * MAX_CHUNKS;
    let m = head_max[h];
    let n_chunks = (step.n_kv + CHUNK - 1u) / CHUNK;
    var acc = vec4<f32>(0.0);
    for (var c = 0u; c < n_chunks; c++) {
        acc += exp(part_ml[ml + c].x - m) * part_o[(ml + c) * (HEAD_DIM / 4u) + d4];
    }
    return acc * head_inv_l[h];
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n_chunks = (step.n_kv + CHUNK - 1u) / CHUNK;
    for (var h = lid; h < N_HEAD; h += WG) {
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
        head_max[h] = m;
        head_inv_l[h] = 1.0 / l;
    }
    workgroupBarrier();

    let row0 = (wid.x + wid.y * nwg.x) * ROWS_PER_WG;
    let dots = row_group_dots(lid, row0);
    let tpg = row_group_threads();
    let first_row = row0 + 4u * (lid / tpg);
    if lid % tpg == 0u {
        for (var i = 0u; i < 4u; i++) {
            if first_row + i < N {
                y[first_row + i] += dots[i];
            }
        }
    }
}
