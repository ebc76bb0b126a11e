// One stage of a multi-stage top-k (k <= 64) for the sampler. Each workgroup takes
// CHUNK = 256 * ITEMS candidates and writes its best K as (value, index) pairs, best first.
// Stage 1 reads the logits (indices implied, USE_IDX = false, any buffer bound to `idx`); later
// stages read the previous stage's pairs (USE_IDX = true) until one workgroup remains.
// Order: larger value first, ties to the lower index; a group with fewer than K candidates pads
// with (-f32::MAX, 0xffffffff). On IEEE-exact drivers NaN and -inf are never selected; WGSL lets
// GPUs assume finite floats, so non-finite logits are unspecified.

override N: u32;                 // candidates
override K: u32;                 // results per workgroup, at most 64
override ITEMS: u32 = 8u;        // candidates per thread, at most MAX_ITEMS
override USE_IDX: bool = false;  // indices come from `idx` instead of positions

const WG: u32 = 256u;
const MAX_ITEMS: u32 = 8u;
const NONE_VAL: f32 = -0x1.fffffep+127f;  // -f32::MAX (hex: exact; Tint rejects the rounded-up decimal)
const NONE_IDX: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read> val: array<f32>;            // (N)
@group(0) @binding(1) var<storage, read> idx: array<u32>;            // (N), USE_IDX only
@group(0) @binding(2) var<storage, read_write> out_val: array<f32>;  // (n_workgroups, K)
@group(0) @binding(3) var<storage, read_write> out_idx: array<u32>;  // (n_workgroups, K)

var<workgroup> best_val: array<f32, WG>;
var<workgroup> best_idx: array<u32, WG>;

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
    if group >= (N + WG * ITEMS - 1u) / (WG * ITEMS) {
        return;  // padding workgroup of a split dispatch (workgroup-uniform)
    }
    let base = group * WG * ITEMS;
    var v: array<f32, MAX_ITEMS>;
    var ix: array<u32, MAX_ITEMS>;
    for (var it = 0u; it < ITEMS; it++) {
        let p = base + it * WG + lid;
        v[it] = NONE_VAL;
        ix[it] = NONE_IDX;
        if p < N {
            v[it] = val[p];
            ix[it] = select(p, idx[p], USE_IDX);
        }
    }
    // Round r selects the best candidate strictly worse than round r-1's pick.
    var last_val = 0.0;
    var last_idx = 0u;
    for (var r = 0u; r < K; r++) {
        var bv = NONE_VAL;
        var bi = NONE_IDX;
        for (var it = 0u; it < ITEMS; it++) {
            let eligible = r == 0u || better(last_val, last_idx, v[it], ix[it]);
            if eligible && better(v[it], ix[it], bv, bi) {
                bv = v[it];
                bi = ix[it];
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
        last_val = best_val[0];
        last_idx = best_idx[0];
        if lid == 0u {
            out_val[group * K + r] = last_val;
            out_idx[group * K + r] = last_idx;
        }
        workgroupBarrier();
    }
}
