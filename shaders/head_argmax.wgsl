// The LM head of a decode step: logits = W rmsnorm(x) * output_norm (the norm folded into the
// matvec as in ffn_gate_up.wgsl) and stage 1 of the greedy argmax in the epilogue: each
// workgroup writes the (max, index) of its ROWS_PER_WG rows; argmax.wgsl's stage 2 (USE_IDX)
// reduces those pairs. Ties go to the lowest index; NaN never wins (argmax.wgsl's rule).
//
// Dispatch per weight part: (ceil(N / ROWS_PER_WG), 1, 1) split over x/y past the limit;
// workgroup g of the part writes pair GROUP_OFFSET + g.
//
// Indices in range by construction (built without runtime checks): rows are clamped by the
// shared core and written only below N; pairs are written for workgroups below
// ceil(N / ROWS_PER_WG), for which the host sized the pair buffers (padding workgroups of a
// split dispatch exit first, a workgroup-uniform return).

override EPS: f32 = 1e-6;
override Y_OFFSET: u32 = 0u;     // logit index of this part's first row
override GROUP_OFFSET: u32 = 0u; // pair index of this part's first workgroup

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;        // (K/4) residual stream
@group(0) @binding(1) var<storage, read> norm: array<vec4<f32>>;     // (K/4) output_norm
@group(0) @binding(2) var<storage, read> signs: array<u32>;          // (N, K/32) head part
@group(0) @binding(3) var<storage, read> scales: array<u32>;         // (N * K/128) f16, 2 per word
@group(0) @binding(4) var<storage, read_write> logits: array<f32>;   // (n_vocab)
@group(0) @binding(5) var<storage, read_write> pair_val: array<f32>; // (n_pairs) stage-1 maxima
@group(0) @binding(6) var<storage, read_write> pair_idx: array<u32>; // (n_pairs) their indices

var<workgroup> best_val: array<f32, WG>;
var<workgroup> best_idx: array<u32, WG>;

fn load_x(i: u32) -> vec4<f32> {
    return x[i] * norm[i];
}

fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    return v > bv || (v == bv && i < bi);
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let group = wid.x + wid.y * nwg.x;
    if group >= (N + ROWS_PER_WG - 1u) / ROWS_PER_WG {
        return; // padding workgroup of a split dispatch (workgroup-uniform)
    }
    var ss = 0.0;
    for (var i = lid; i < K / 4u; i += WG) {
        let v = x[i];
        ss += dot(v, v);
    }
    let inv_rms = inverseSqrt(workgroup_sum(lid, ss) / f32(K) + EPS);

    let row0 = group * ROWS_PER_WG;
    let dots = row_group_dots(lid, row0) * inv_rms;
    let tpg = row_group_threads();
    let first_row = row0 + 4u * (lid / tpg);
    var bv = -0x1.fffffep+127f; // -f32::MAX, as in argmax.wgsl
    var bi = 0xffffffffu;
    if lid % tpg == 0u {
        for (var i = 0u; i < 4u; i++) {
            let r = first_row + i;
            if r < N {
                logits[Y_OFFSET + r] = dots[i];
                if better(dots[i], Y_OFFSET + r, bv, bi) {
                    bv = dots[i];
                    bi = Y_OFFSET + r;
                }
            }
        }
    }
    best_val[lid] = bv;
    best_idx[lid] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s && better(best_val[lid + s], best_idx[lid + s], best_val[lid], best_idx[lid]) {
            best_val[lid] = best_val[lid + s];
            best_idx[lid] = best_idx[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        pair_val[GROUP_OFFSET + group] = best_val[0];
        pair_idx[GROUP_OFFSET + group] = best_idx[0];
    }
}
