// Batched Q1_0 matrix multiply for prefill on int8 activations (the q8 path, see
// src/gpu/context.rs KernelPath::Q8): y[t, row0 + r] (+)= sum_k x[t, k] * W[r, k], with x
// quantized per token in blocks of 32 by lib/q8.wgsl's quantize_q8, as the matvec's
// lib/q1_0_q8_dots.wgsl does, and the same arithmetic per 128-weight block:
//     d_w * (2 dot(d, S) - sx),   S_g = sum of q over the weights of group g whose sign bit is 1,
// S_g from dot4I8Packed of packed int8 words with the sign bits as 0/1 bytes. CPU reference:
// cpu::ops::Matrix::matvec_q8 per token.
//
// Same tiling and dispatch as matmul_q1_0.wgsl: a workgroup owns 128 weight rows (two per
// thread, 64 apart) and TOKENS (<= TB = 16) tokens, and walks K one block at a time: the 64
// threads quantize the tile's TB x 4 groups of the block into workgroup memory (one group
// each), then each thread applies its rows' block to every token. The staged block of a
// token is 8 vec4 words (word m of group g holds activations m, m + 8, m + 16, m + 24, so
// (signs >> m) & 0x01010101 selects their bits), a quarter of the f32 kernel's workgroup
// loads; the bit masks are made once per row and block for all the tokens.
//
// A row's result does not depend on TOKENS or the other rows (same order of sums per token).
// Dispatch: (ceil(N_ROWS / 128), ceil(n_tokens / TOKENS), 1).

struct StepParams {
    n_tokens: u32,
    pos: u32,
    n_kv: u32,
    _pad: u32,
}

override K: u32 = 2048u;          // input dim, multiple of 128
override N: u32 = 2048u;          // output row length of y (all parts)
override ROW0: u32 = 0u;          // first row of this part
override N_ROWS: u32 = 2048u;     // rows in this part
override W_ROW0: u32 = 0u;        // first row of this part in the weight buffers (row views)
override ACCUMULATE: bool = false; // y += W x (fused residual) instead of y = W x

const WG: u32 = 64u;
const RPT: u32 = 2u; // rows per thread (written out for 2 below)
const TB: u32 = 16u;
override TOKENS: u32 = 16u; // tokens per workgroup, 1..=TB

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;      // (n_tokens, K)
@group(0) @binding(2) var<storage, read> signs: array<vec4<u32>>;  // (n_rows, K/128) 128 sign bits
@group(0) @binding(3) var<storage, read> scales: array<u32>;       // (n_rows * K/128) f16, 2 per word
@group(0) @binding(4) var<storage, read_write> y: array<f32>;      // (n_tokens, N)

var<workgroup> xq: array<vec4<u32>, TB * 8u>;  // token t: 8t + m = word m of the block's 4 groups
var<workgroup> xd: array<vec4<f32>, TB>;       // token t: the 4 group scales
var<workgroup> xs: array<vec4<f32>, TB>;       // token t: d_g sum(q_g) of the 4 groups

// Quantizes group g (0..4) of block b of token t (< n_tokens) into the staged tile.
fn stage(t: u32, tl: u32, b: u32, g: u32) {
    let i = t * (K / 4u) + b * 32u + g * 8u;
    let x0 = x[i];
    let x1 = x[i + 1u];
    let x2 = x[i + 2u];
    let x3 = x[i + 3u];
    let x4 = x[i + 4u];
    let x5 = x[i + 5u];
    let x6 = x[i + 6u];
    let x7 = x[i + 7u];
    let q = quantize_q8(x0, x1, x2, x3, x4, x5, x6, x7);
    let base = 8u * tl;
    xq[base][g] = q.lo.x;
    xq[base + 1u][g] = q.lo.y;
    xq[base + 2u][g] = q.lo.z;
    xq[base + 3u][g] = q.lo.w;
    xq[base + 4u][g] = q.hi.x;
    xq[base + 5u][g] = q.hi.y;
    xq[base + 6u][g] = q.hi.z;
    xq[base + 7u][g] = q.hi.w;
    xd[tl][g] = q.d;
    xs[tl][g] = q.dsum;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t0 = wid.y * TOKENS;
    let n_tokens = step.n_tokens;
    if (t0 >= n_tokens) {
        return;
    }
    let r0 = wid.x * WG * RPT + lid;
    let blocks = K / 128u;

    var acc: array<f32, TB * RPT>;
    for (var t = 0u; t < TB * RPT; t++) {
        acc[t] = 0.0;
    }

    for (var b = 0u; b < blocks; b++) {
        // One (token, group) per thread: TB * 4 = 64 = WG.
        let tl = lid / 4u;
        if (tl < TOKENS && t0 + tl < n_tokens) {
            stage(t0 + tl, tl, b, lid % 4u);
        } else if (tl < TOKENS) {
            xq[8u * tl][lid % 4u] = 0u;
            xq[8u * tl + 1u][lid % 4u] = 0u;
            xq[8u * tl + 2u][lid % 4u] = 0u;
            xq[8u * tl + 3u][lid % 4u] = 0u;
            xq[8u * tl + 4u][lid % 4u] = 0u;
            xq[8u * tl + 5u][lid % 4u] = 0u;
            xq[8u * tl + 6u][lid % 4u] = 0u;
            xq[8u * tl + 7u][lid % 4u] = 0u;
            xd[tl][lid % 4u] = 0.0;
            xs[tl][lid % 4u] = 0.0;
        }
        workgroupBarrier();

        var c0 = vec4<u32>(0u);
        var c1 = vec4<u32>(0u);
        var d0 = 0.0;
        var d1 = 0.0;
        if (r0 < N_ROWS) {
            let bi = (W_ROW0 + r0) * blocks + b;
            c0 = signs[bi];
            d0 = unpack2x16float(scales[bi / 2u])[bi % 2u];
        }
        if (r0 + WG < N_ROWS) {
            let bi = (W_ROW0 + r0 + WG) * blocks + b;
            c1 = signs[bi];
            d1 = unpack2x16float(scales[bi / 2u])[bi % 2u];
        }
        let a0 = q8_bits(c0, 0u);
        let a1 = q8_bits(c0, 1u);
        let a2 = q8_bits(c0, 2u);
        let a3 = q8_bits(c0, 3u);
        let a4 = q8_bits(c0, 4u);
        let a5 = q8_bits(c0, 5u);
        let a6 = q8_bits(c0, 6u);
        let a7 = q8_bits(c0, 7u);
        let e0 = q8_bits(c1, 0u);
        let e1 = q8_bits(c1, 1u);
        let e2 = q8_bits(c1, 2u);
        let e3 = q8_bits(c1, 3u);
        let e4 = q8_bits(c1, 4u);
        let e5 = q8_bits(c1, 5u);
        let e6 = q8_bits(c1, 6u);
        let e7 = q8_bits(c1, 7u);
        for (var t = 0u; t < TOKENS; t++) {
            let w0 = xq[8u * t];
            let w1 = xq[8u * t + 1u];
            let w2 = xq[8u * t + 2u];
            let w3 = xq[8u * t + 3u];
            let w4 = xq[8u * t + 4u];
            let w5 = xq[8u * t + 5u];
            let w6 = xq[8u * t + 6u];
            let w7 = xq[8u * t + 7u];
            let d = xd[t];
            let g = xs[t];
            let sx = (g.x + g.y) + (g.z + g.w);
            let s0 = ((q8_sums(w0, a0) + q8_sums(w1, a1)) + (q8_sums(w2, a2) + q8_sums(w3, a3)))
                + ((q8_sums(w4, a4) + q8_sums(w5, a5)) + (q8_sums(w6, a6) + q8_sums(w7, a7)));
            let s1 = ((q8_sums(w0, e0) + q8_sums(w1, e1)) + (q8_sums(w2, e2) + q8_sums(w3, e3)))
                + ((q8_sums(w4, e4) + q8_sums(w5, e5)) + (q8_sums(w6, e6) + q8_sums(w7, e7)));
            acc[t] += d0 * (2.0 * dot(d, vec4<f32>(s0)) - sx);
            acc[TB + t] += d1 * (2.0 * dot(d, vec4<f32>(s1)) - sx);
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
                        y[o] += acc[q * TB + t];
                    } else {
                        y[o] = acc[q * TB + t];
                    }
                }
            }
        }
    }
}
