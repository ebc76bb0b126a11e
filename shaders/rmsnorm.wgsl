// RMSNorm over rows of N: y[r, i] = x[r, i] / sqrt(mean(x[r, :]^2) + EPS) * w[i].
// One workgroup per row (a single vector is one row; per-head q/k norms are n_heads rows of
// head_dim). Entry `main` writes y; `main_inplace` normalises y in place.

override N: u32;           // row length
override EPS: f32;         // from the GGUF (attention.layer_norm_rms_epsilon)

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> w: array<f32>;            // (N)
@group(0) @binding(1) var<storage, read_write> y: array<f32>;      // (n_rows, N)
@group(0) @binding(2) var<storage, read> x: array<f32>;            // (n_rows, N), `main` only

var<workgroup> partial: array<f32, WG>;

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Sums the threads' partial sums of squares and returns 1 / rms of the row.
fn inv_rms(sum_sq: f32, lid: u32) -> f32 {
    partial[lid] = sum_sq;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    return inverseSqrt(partial[0] / f32(N) + EPS);
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = row_index(wid, nwg);
    if row >= arrayLength(&y) / N {
        return;  // padding workgroup of a split dispatch (uniform: no barrier skipped unevenly)
    }
    let base = row * N;
    var sum_sq = 0.0;
    for (var i = lid; i < N; i += WG) {
        let v = x[base + i];
        sum_sq += v * v;
    }
    let scale = inv_rms(sum_sq, lid);
    for (var i = lid; i < N; i += WG) {
        y[base + i] = x[base + i] * scale * w[i];
    }
}

@compute @workgroup_size(256)
fn main_inplace(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = row_index(wid, nwg);
    if row >= arrayLength(&y) / N {
        return;
    }
    let base = row * N;
    var sum_sq = 0.0;
    for (var i = lid; i < N; i += WG) {
        let v = y[base + i];
        sum_sq += v * v;
    }
    let scale = inv_rms(sum_sq, lid);
    for (var i = lid; i < N; i += WG) {
        y[base + i] = y[base + i] * scale * w[i];
    }
}
