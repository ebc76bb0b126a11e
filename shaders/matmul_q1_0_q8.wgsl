// Batched Q1_0 matrix multiply for prefill on int8 activations (the q8 path, see
// src/gpu/context.rs KernelPath::Q8): y[t, row0 + r] (+)= sum_k x[t, k] * W[r, k], with x
// quantized per token in blocks of 32 (q = round(x * 127 / amax), d = amax / 127) as
// lib/q1_0_q8_dots.wgsl does for the matvec, and the same arithmetic per 128-weight block:
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

fn pack_i8(q: vec4<i32>) -> u32 {
    let b = bitcast<vec4<u32>>(q) & vec4<u32>(0xffu);
    return b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);
}

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
    let a = max(max(max(abs(x0), abs(x1)), max(abs(x2), abs(x3))),
                max(max(abs(x4), abs(x5)), max(abs(x6), abs(x7))));
    let amax = max(max(a.x, a.y), max(a.z, a.w));
    let inv = select(0.0, 127.0 / amax, amax > 0.0);
    let q0 = vec4<i32>(round(x0 * inv));
    let q1 = vec4<i32>(round(x1 * inv));
    let q2 = vec4<i32>(round(x2 * inv));
    let q3 = vec4<i32>(round(x3 * inv));
    let q4 = vec4<i32>(round(x4 * inv));
    let q5 = vec4<i32>(round(x5 * inv));
    let q6 = vec4<i32>(round(x6 * inv));
    let q7 = vec4<i32>(round(x7 * inv));
    let base = 8u * tl;
    xq[base][g] = pack_i8(vec4<i32>(q0.x, q2.x, q4.x, q6.x));
    xq[base + 1u][g] = pack_i8(vec4<i32>(q0.y, q2.y, q4.y, q6.y));
    xq[base + 2u][g] = pack_i8(vec4<i32>(q0.z, q2.z, q4.z, q6.z));
    xq[base + 3u][g] = pack_i8(vec4<i32>(q0.w, q2.w, q4.w, q6.w));
    xq[base + 4u][g] = pack_i8(vec4<i32>(q1.x, q3.x, q5.x, q7.x));
    xq[base + 5u][g] = pack_i8(vec4<i32>(q1.y, q3.y, q5.y, q7.y));
    xq[base + 6u][g] = pack_i8(vec4<i32>(q1.z, q3.z, q5.z, q7.z));
    xq[base + 7u][g] = pack_i8(vec4<i32>(q1.w, q3.w, q5.w, q7.w));
    let qs = ((q0 + q1) + (q2 + q3)) + ((q4 + q5) + (q6 + q7));
    let d = amax / 127.0;
    xd[tl][g] = d;
    xs[tl][g] = d * f32((qs.x + qs.y) + (qs.z + qs.w));
}

// S_g of the 4 groups for word m: the staged word against the row's bits m, m + 8, ...
fn sums(w: vec4<u32>, bits: vec4<u32>) -> vec4<i32> {
    return vec4<i32>(dot4I8Packed(w.x, bits.x), dot4I8Packed(w.y, bits.y),
                     dot4I8Packed(w.z, bits.z), dot4I8Packed(w.w, bits.w));
}

fn bits(c: vec4<u32>, m: u32) -> vec4<u32> {
    return (c >> vec4<u32>(m)) & vec4<u32>(0x01010101u);
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
        let a0 = bits(c0, 0u);
        let a1 = bits(c0, 1u);
        let a2 = bits(c0, 2u);
        let a3 = bits(c0, 3u);
        let a4 = bits(c0, 4u);
        let a5 = bits(c0, 5u);
        let a6 = bits(c0, 6u);
        let a7 = bits(c0, 7u);
        let e0 = bits(c1, 0u);
        let e1 = bits(c1, 1u);
        let e2 = bits(c1, 2u);
        let e3 = bits(c1, 3u);
        let e4 = bits(c1, 4u);
        let e5 = bits(c1, 5u);
        let e6 = bits(c1, 6u);
        let e7 = bits(c1, 7u);
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
            let s0 = ((sums(w0, a0) + sums(w1, a1)) + (sums(w2, a2) + sums(w3, a3)))
                + ((sums(w4, a4) + sums(w5, a5)) + (sums(w6, a6) + sums(w7, a7)));
            let s1 = ((sums(w0, e0) + sums(w1, e1)) + (sums(w2, e2) + sums(w3, e3)))
                + ((sums(w4, e4) + sums(w5, e5)) + (sums(w6, e6) + sums(w7, e7)));
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
