// y = W x for one part of a Q1_0 weight (see src/gpu/q1_0.rs for the layout), reduced through
// workgroup memory. Works on every adapter; matvec_q1_0_subgroup.wgsl is the faster variant.
//
// Threads work on groups of 4 rows: a thread loads 32 values of x (one sign word's worth) once
// and applies them to the 4 rows, so x traffic per weight bit is 4x lower than row-at-a-time.
// The THREADS_PER_GROUP = 256 / (ROWS_PER_WG / 4) threads of a row group stride over the sign
// words, so neighbouring threads read neighbouring words. A weight is +x or -x: the inverted
// sign bit is XORed into the float's sign bit.
//
// Indices stay in range by construction (built without runtime checks, `Shader::trusted`): rows
// are clamped to N - 1 before a load and written only below N; sign words w < K/32 and block
// scales r * K/128 + w/4 < N * K/128 lie inside the part's buffers (made by the repack for
// exactly N rows of K); x is read below K/4 vec4s and y written below Y_OFFSET + N, which
// MatvecQ1_0::new checks against the bound buffers.

override K: u32;                     // input size (multiple of 128)
override N: u32;                     // rows in this part
override Y_OFFSET: u32 = 0u;         // index in y of this part's first row
override ROWS_PER_WG: u32 = 32u;     // 4 * power of two, at most 4 * 256
override ACCUMULATE: bool = false;   // y += W x (residual add) instead of y = W x

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> signs: array<u32>;        // (N, K/32) sign bits
@group(0) @binding(1) var<storage, read> scales: array<u32>;       // (N * K/128) f16, 2 per word
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;      // (K/4)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;      // (Y_OFFSET + N, ...)

var<workgroup> partial: array<vec4<f32>, WG>;

fn block_scale(i: u32) -> f32 {
    let pair = unpack2x16float(scales[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Dot products of sign word `w` of rows first_row .. first_row + 3 with x[32 w .. 32 w + 32].
fn word_dots(first_row: u32, w: u32) -> vec4<f32> {
    var xs: array<vec4<u32>, 8>;  // float bits: the sign bit is flipped per weight
    for (var j = 0u; j < 8u; j++) {
        xs[j] = bitcast<vec4<u32>>(x[8u * w + j]);
    }
    let words = K / 32u;
    var dots = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        let r = min(first_row + i, N - 1u);
        let flip_bits = vec4<u32>(~signs[r * words + w]);
        var acc = vec4<f32>(0.0);
        for (var j = 0u; j < 8u; j++) {
            // Bit 4j + c moves to bit 31 of lane c: shift, mask, xor, add per 4 weights.
            let shift = vec4<u32>(31u, 30u, 29u, 28u) - vec4<u32>(4u * j);
            let flip = (flip_bits << shift) & vec4<u32>(0x80000000u);
            acc += bitcast<vec4<f32>>(xs[j] ^ flip);
        }
        dots[i] = block_scale(r * (K / 128u) + w / 4u) * ((acc.x + acc.y) + (acc.z + acc.w));
    }
    return dots;
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let threads_per_group = WG / (ROWS_PER_WG / 4u);
    let lane = lid % threads_per_group;
    let first_row = (wid.x + wid.y * nwg.x) * ROWS_PER_WG + 4u * (lid / threads_per_group);

    var sum = vec4<f32>(0.0);
    if first_row < N {
        for (var w = lane; w < K / 32u; w += threads_per_group) {
            sum += word_dots(first_row, w);
        }
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var s = threads_per_group / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if lane == 0u {
        for (var i = 0u; i < 4u; i++) {
            if first_row + i < N {
                let o = Y_OFFSET + first_row + i;
                y[o] = select(0.0, y[o], ACCUMULATE) + partial[lid][i];
            }
        }
    }
}
