// Batched Q2_0 matrix multiply for prefill: y[t, row0 + r] (+)= sum_k x[t, k] * W[r, k] for the
// rows r of one weight part (see src/gpu/q1_0.rs for the codes / scales layout).
//
// The plan of matmul_q1_0.wgsl with Q2_0's 64-weight blocks: a workgroup owns 128 weight rows
// (two per thread, 64 apart) and TB = 16 tokens; per block the 16 tokens' 64 activations are
// staged in shared memory, each thread loads its rows' 64 codes (one vec4<u32>) and scale once
// and applies them to all 16 tokens (4 levels (c - 1) at a time as a vec4 dotted with 4
// activations).
//
// TOKENS (<= TB, override) is how many tokens a workgroup takes: 16 for prefill, fewer for a
// small batch of decode rows (GpuBatch), so lavapipe does not multiply-add 16 lanes for 2 rows.
// A row's result does not depend on TOKENS or on the other rows: each token's sums run in the
// same order whatever the tile.
//
// Dispatch: (ceil(N_ROWS / 128), ceil(n_tokens / TOKENS), 1).

struct StepParams {
    n_tokens: u32,
    pos: u32,
    n_kv: u32,
    _pad: u32,
}

override K: u32 = 2048u;          // input dim, multiple of 64
override N: u32 = 2048u;          // output row length of y (all parts)
override ROW0: u32 = 0u;          // first row of this part
override N_ROWS: u32 = 2048u;     // rows in this part
override W_ROW0: u32 = 0u;        // first row of this part in the weight buffers (row views)
override ACCUMULATE: bool = false; // y += W x (fused residual) instead of y = W x

const WG: u32 = 64u;
const RPT: u32 = 2u; // rows per thread (the code loop below is written out for 2)
const TB: u32 = 16u;
override TOKENS: u32 = 16u; // tokens per workgroup, 1..=TB
const BLOCK_VEC4: u32 = 16u; // 64 activations as vec4

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;      // (n_tokens, K)
@group(0) @binding(2) var<storage, read> codes: array<vec4<u32>>;  // (n_rows, K/64) 64 2-bit codes
@group(0) @binding(3) var<storage, read> scales: array<u32>;       // (n_rows * K/64) f16, 2 per word
@group(0) @binding(4) var<storage, read_write> y: array<f32>;      // (n_tokens, N)

var<workgroup> x_sh: array<vec4<f32>, TB * BLOCK_VEC4>; // (TB, 64) activations of one block

// Levels (c - 1) of the 4 codes in the low byte of `bits`.
fn level4(bits: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(bits) >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u)) - vec4<f32>(1.0);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t0 = wid.y * TOKENS;
    let n_tokens = step.n_tokens;
    if (t0 >= n_tokens) {
        return;
    }
    let r0 = wid.x * WG * RPT + lid;
    let blocks = K / 64u;
    let k_vec4 = K / 4u;

    var acc: array<f32, TB * RPT>;
    for (var t = 0u; t < TB * RPT; t++) {
        acc[t] = 0.0;
    }

    for (var b = 0u; b < blocks; b++) {
        for (var i = lid; i < TOKENS * BLOCK_VEC4; i += WG) {
            let t = t0 + i / BLOCK_VEC4;
            var xv = vec4<f32>(0.0);
            if (t < n_tokens) {
                xv = x[t * k_vec4 + b * BLOCK_VEC4 + i % BLOCK_VEC4];
            }
            x_sh[i] = xv;
        }
        workgroupBarrier();

        var bits: array<vec4<u32>, RPT>;
        var d: array<f32, RPT>;
        for (var q = 0u; q < RPT; q++) {
            let r = r0 + q * WG;
            bits[q] = vec4<u32>(0x55555555u); // code 1 everywhere: zero weights
            d[q] = 0.0;
            if (r < N_ROWS) {
                let bi = (W_ROW0 + r) * blocks + b;
                bits[q] = codes[bi];
                d[q] = unpack2x16float(scales[bi / 2u])[bi % 2u];
            }
        }
        var bacc: array<f32, TB * RPT>;
        for (var t = 0u; t < TB * RPT; t++) {
            bacc[t] = 0.0;
        }
        for (var wd = 0u; wd < 4u; wd++) {
            for (var byte = 0u; byte < 4u; byte++) {
                let l0 = level4(bits[0][wd] >> (8u * byte));
                let l1 = level4(bits[1][wd] >> (8u * byte));
                let j = wd * 4u + byte;
                for (var t = 0u; t < TOKENS; t++) {
                    let xv = x_sh[t * BLOCK_VEC4 + j];
                    bacc[t] += dot(l0, xv);
                    bacc[TB + t] += dot(l1, xv);
                }
            }
        }
        for (var t = 0u; t < TOKENS; t++) {
            acc[t] += d[0] * bacc[t];
            acc[TB + t] += d[1] * bacc[TB + t];
        }
        workgroupBarrier();
    }

    for (var q = 0u; q < RPT; q++) {
        let r = r0 + q * WG;
        if (r < N_ROWS) {
            for (var t = 0u; t < TOKENS; t++) {
                if (t0 + t < n_tokens) {
                    let o = (t0 + t) * N + ROW0 + r;
                    if (ACCUMULATE) {
                        y[o] = y[o] + acc[q * TB + t];
                    } else {
                        y[o] = acc[q * TB + t];
                    }
                }
            }
        }
    }
}
