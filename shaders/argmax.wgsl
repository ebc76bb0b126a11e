// One stage of a two-stage argmax. Each workgroup reduces CHUNK = 256 * ITEMS values of `val`
// to one (max, index) pair. Stage 1 reads the logits (indices implied, USE_IDX = false, any
// buffer bound to `idx`); stage 2 reads stage 1's pairs (USE_IDX = true) with one workgroup.
// Ties go to the lowest index. On IEEE-exact drivers NaN and -inf never win (only such values:
// index 0xffffffff); WGSL lets GPUs assume finite floats, so non-finite logits are unspecified.
//
// Indices stay in range by construction (built without runtime checks, `Shader::trusted`): reads
// are guarded by p < N (Argmax::new checks `val` holds N values, stage 2's `idx` holds N) and
// padding workgroups return before writing, so a workgroup writes its own pair below
// ceil(N / (256 * ITEMS)), the size of the output buffers.

override N: u32;                 // values to reduce
override ITEMS: u32 = 8u;        // values per thread
override USE_IDX: bool = false;  // indices come from `idx` (stage 2) instead of positions

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> val: array<f32>;            // (N)
@group(0) @binding(1) var<storage, read> idx: array<u32>;            // (N), stage 2 only
@group(0) @binding(2) var<storage, read_write> out_val: array<f32>;  // (n_workgroups)
@group(0) @binding(3) var<storage, read_write> out_idx: array<u32>;  // (n_workgroups)

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
    var bv = -0x1.fffffep+127f;  // -f32::MAX (hex: exact; Tint rejects the rounded-up decimal): -inf (masked) values never win
    var bi = 0xffffffffu;
    for (var it = 0u; it < ITEMS; it++) {
        let p = base + it * WG + lid;
        if p < N {
            let v = val[p];
            let i = select(p, idx[p], USE_IDX);
            if better(v, i, bv, bi) {
                bv = v;
                bi = i;
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
        out_val[group] = best_val[0];
        out_idx[group] = best_idx[0];
    }
}
