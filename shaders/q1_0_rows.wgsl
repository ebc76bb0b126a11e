// Shared core of the fused decode kernels (prepended to each of them, see Shader::source):
// dot products of a workgroup's ROWS_PER_WG rows of a Q1_0 weight (src/gpu/q1_0.rs layout) with
// an input vector that the including kernel supplies through `load_x(i)` (vec4 i of the input:
// a plain activation, a normed one, or a merge of attention partials). The epilogue is the
// kernel's own.
//
// Layout of the work: rows go in groups of 4 that share each load of x (a thread loads 32
// inputs, one sign word's worth, once and applies them to 4 rows); the WG / (ROWS_PER_WG / 4)
// threads of a group stride over the K/32 sign words. Their sums are reduced by the file
// prepended after this one: q1_0_reduce_shared.wgsl (a tree in workgroup memory, every
// adapter) or q1_0_reduce_subgroup.wgsl (one subgroupAdd, no barrier).
//
// Why the indices stay in range (these kernels are built without runtime bounds checks):
// rows are clamped to N - 1 before indexing signs/scales, words run below K/32, `load_x` gets
// indices below K/4, and the host checks every buffer against K and N before building.

override K: u32;                  // input size, multiple of 128
override N: u32;                  // rows of the weight
override ROWS_PER_WG: u32 = 32u;  // 4 * power of two, at most 4 * WG / 4 = WG

const WG: u32 = 256u;

fn block_scale(i: u32) -> f32 {
    let pair = unpack2x16float(scales[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Dot products of sign word `w` of rows first_row .. first_row + 3 with inputs 32 w .. 32 w + 32.
fn word_dots(first_row: u32, w: u32) -> vec4<f32> {
    var xs: array<vec4<u32>, 8>;  // float bits: the sign bit is flipped per weight
    for (var j = 0u; j < 8u; j++) {
        xs[j] = bitcast<vec4<u32>>(load_x(8u * w + j));
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
