// Q1_0 row core of the matvec kernels (prepended to matvec_shared.wgsl / matvec_subgroup.wgsl,
// see Shader::parts): the weight bindings and the dot products of one code word of 4 rows.
// Layout: src/gpu/q1_0.rs. A weight is +x or -x: the inverted sign bit is XORed into the
// float's sign bit. The main part defines K, W_ROW0, load_x (x, or x * norm, or merged
// attention) and weight_row (which 4 rows a row group owns).

const WEIGHTS_PER_WORD: u32 = 32u;
const BLOCK: u32 = 128u;

@group(0) @binding(0) var<storage, read> codes: array<u32>;        // (rows, K/32) sign bits
@group(0) @binding(1) var<storage, read> scales: array<u32>;       // (rows * K/128) f16, 2 per word

// Nothing to stage: x is read as it is, all words in one chunk (the q8 core's stage_x
// quantizes it into workgroup memory, a chunk at a time).
const STAGE_WORDS: u32 = 0x40000000u;
fn stage_x(lid: u32, first_word: u32) {}

// One row group per subgroup in matvec_subgroup.wgsl (the q8 core takes two).
const GROUPS: u32 = 1u;
fn group_dots(first_row: u32, w: u32) -> array<vec4<f32>, GROUPS> {
    return array<vec4<f32>, GROUPS>(word_dots(first_row, w));
}

fn block_scale(i: u32) -> f32 {
    let pair = unpack2x16float(scales[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Dot products of sign word `w` of the row group at `first_row` with x[32 w .. 32 w + 32].
fn word_dots(first_row: u32, w: u32) -> vec4<f32> {
    var xs: array<vec4<u32>, 8>;  // float bits: the sign bit is flipped per weight
    for (var j = 0u; j < 8u; j++) {
        xs[j] = bitcast<vec4<u32>>(load_x(8u * w + j));
    }
    let words = K / 32u;
    var dots = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        let r = W_ROW0 + weight_row(first_row, i);
        let flip_bits = vec4<u32>(~codes[r * words + w]);
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
