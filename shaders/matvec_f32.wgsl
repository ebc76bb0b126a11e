// y = W x for one part of a dense f32 weight: the GPU path of F32 and F16 linear weights (F16
// widened to f32 at upload), which only mixed-type files use; Q1_0 / Q2_0 have their own
// kernels. 64 threads per row stride over the row's vec4s, 4 rows per workgroup, one
// workgroup-memory reduction.

override K: u32;                     // input size (multiple of 4)
override N: u32;                     // rows in this part
override Y_OFFSET: u32 = 0u;         // index in y of this part's first row
override ACCUMULATE: bool = false;   // y += W x (residual add) instead of y = W x

const WG: u32 = 256u;
const TPR: u32 = 64u;                // threads per row
const ROWS_PER_WG: u32 = WG / TPR;

@group(0) @binding(0) var<storage, read> w: array<vec4<f32>>;      // (N, K/4)
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;      // (K/4)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;      // (Y_OFFSET + N, ...)

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lane = lid % TPR;
    let row = (wid.x + wid.y * nwg.x) * ROWS_PER_WG + lid / TPR;
    let k4 = K / 4u;
    var acc = 0.0;
    if row < N {
        for (var j = lane; j < k4; j += TPR) {
            acc += dot(w[row * k4 + j], x[j]);
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if lane == 0u && row < N {
        let o = Y_OFFSET + row;
        y[o] = select(0.0, y[o], ACCUMULATE) + partial[lid];
    }
}
