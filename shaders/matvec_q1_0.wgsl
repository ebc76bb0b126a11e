// y = W x for one part of a Q1_0 weight (see src/gpu/q1_0.rs for the layout), reduced through
// workgroup memory. Works on every adapter; matvec_q1_0_subgroup.wgsl is the faster variant.
//
// Each workgroup computes ROWS_PER_WG rows; the THREADS_PER_ROW = 256 / ROWS_PER_WG threads of
// a row stride over its u32 sign words (32 weights each), so neighbouring threads read
// neighbouring words. A weight is +x or -x: the sign bit is XORed into the float's sign.

override K: u32;                     // input size (multiple of 128)
override N: u32;                     // rows in this part
override Y_OFFSET: u32 = 0u;         // index in y of this part's first row
override ROWS_PER_WG: u32 = 8u;      // power of two, divides 256
override ACCUMULATE: bool = false;   // y += W x (residual add) instead of y = W x

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> signs: array<u32>;        // (N, K/32) sign bits
@group(0) @binding(1) var<storage, read> scales: array<u32>;       // (N * K/128) f16, 2 per word
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;      // (K/4)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;      // (Y_OFFSET + N, ...)

var<workgroup> partial: array<f32, WG>;

fn block_scale(i: u32) -> f32 {
    let pair = unpack2x16float(scales[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Sum over the 32 weights of sign word `bits` times x[32 * w .. 32 * w + 32].
fn word_dot(bits: u32, w: u32) -> f32 {
    let flip_bits = ~bits;
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < 8u; j++) {
        let shift = vec4<u32>(0u, 1u, 2u, 3u) + vec4<u32>(4u * j);
        let flip = ((vec4<u32>(flip_bits) >> shift) & vec4<u32>(1u)) << vec4<u32>(31u);
        acc += bitcast<vec4<f32>>(bitcast<vec4<u32>>(x[8u * w + j]) ^ flip);
    }
    return (acc.x + acc.y) + (acc.z + acc.w);
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let threads_per_row = WG / ROWS_PER_WG;
    let lane = lid % threads_per_row;
    let row = (wid.x + wid.y * nwg.x) * ROWS_PER_WG + lid / threads_per_row;
    let words = K / 32u;

    var sum = 0.0;
    if row < N {
        let base = row * words;
        let scale_base = row * (K / 128u);
        for (var w = lane; w < words; w += threads_per_row) {
            sum += block_scale(scale_base + w / 4u) * word_dot(signs[base + w], w);
        }
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var s = threads_per_row / 2u; s > 0u; s >>= 1u) {
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
