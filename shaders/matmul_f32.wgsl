// Batched dense f32 matrix multiply for prefill (F32 / F16 linear weights of mixed-type files):
// y[t, ROW0 + r] (+)= sum_k x[t, k] * W[r, k]. One thread per weight row and TB = 16 tokens:
// it reads each vec4 of its row once and applies it to the 16 tokens' activations.
//
// Dispatch: (ceil(N_ROWS / 64), ceil(n_tokens / TB), 1).

struct StepParams {
    n_tokens: u32,
    pos: u32,
    n_kv: u32,
    _pad: u32,
}

override K: u32 = 2048u;           // input dim, multiple of 4
override N: u32 = 2048u;           // output row length of y (all parts)
override ROW0: u32 = 0u;           // first row of this part
override N_ROWS: u32 = 2048u;      // rows in this part
override ACCUMULATE: bool = false; // y += W x (fused residual) instead of y = W x

const WG: u32 = 64u;
const TB: u32 = 16u;

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;      // (n_tokens, K)
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;      // (n_rows, K/4)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;      // (n_tokens, N)

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t0 = wid.y * TB;
    let n_tokens = step.n_tokens;
    let r = wid.x * WG + lid;
    if (t0 >= n_tokens || r >= N_ROWS) {
        return;
    }
    let k4 = K / 4u;
    let tokens = min(TB, n_tokens - t0);
    var acc: array<f32, TB>;
    for (var t = 0u; t < TB; t++) {
        acc[t] = 0.0;
    }
    for (var j = 0u; j < k4; j++) {
        let wv = w[r * k4 + j];
        for (var t = 0u; t < tokens; t++) {
            acc[t] += dot(wv, x[(t0 + t) * k4 + j]);
        }
    }
    for (var t = 0u; t < tokens; t++) {
        let o = (t0 + t) * N + ROW0 + r;
        if (ACCUMULATE) {
            y[o] = y[o] + acc[t];
        } else {
            y[o] = acc[t];
        }
    }
}
