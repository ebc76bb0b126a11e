// Q2_0 row core of the matvec kernels (prepended to matvec_shared.wgsl / matvec_subgroup.wgsl,
// see Shader::parts): code words of 16 2-bit codes, f16 scales of 64-weight blocks (layout:
// src/gpu/q1_0.rs). A weight is (c - 1) d, so a word's dot product is sum(c x) - sum(x): the
// sum of x is taken once for the 4 rows, and each row only converts its codes and multiplies.
// The main part defines K, W_ROW0, load_x and weight_row.

const WEIGHTS_PER_WORD: u32 = 16u;
const BLOCK: u32 = 64u;

@group(0) @binding(0) var<storage, read> codes: array<u32>;        // (rows, K/16) 2-bit codes
@group(0) @binding(1) var<storage, read> scales: array<u32>;       // (rows * K/64) f16, 2 per word

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

// Dot products of code word `w` of the row group at `first_row` with x[16 w .. 16 w + 16].
fn word_dots(first_row: u32, w: u32) -> vec4<f32> {
    var xs: array<vec4<f32>, 4>;
    var x_sum = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        xs[j] = load_x(4u * w + j);
        x_sum += xs[j];
    }
    let sum_x = (x_sum.x + x_sum.y) + (x_sum.z + x_sum.w);
    let words = K / 16u;
    var dots = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        let r = W_ROW0 + weight_row(first_row, i);
        let c = vec4<u32>(codes[r * words + w]);
        var acc = vec4<f32>(0.0);
        for (var j = 0u; j < 4u; j++) {
            // Codes 4j .. 4j + 3 sit at bits 8j + 2 lane.
            let shift = vec4<u32>(0u, 2u, 4u, 6u) + vec4<u32>(8u * j);
            acc += vec4<f32>((c >> shift) & vec4<u32>(3u)) * xs[j];
        }
        let dot_c = (acc.x + acc.y) + (acc.z + acc.w);
        dots[i] = block_scale(r * (K / 64u) + w / 4u) * (dot_c - sum_x);
    }
    return dots;
}
