// Q1_0 row core of the packed-f16 matvec kernels (the f16 path; prepended to matvec_shared.wgsl
// / matvec_subgroup.wgsl like lib/q1_0_dots.wgsl, see Shader::parts). Core WGSL only: no
// shader-f16 needed.
//
// For adapters with no fast packed integer dot product (Apple GPUs). The kernel that reads x
// stages it in workgroup memory as f16 pairs (half the f32 path's loads): word m of a group of
// 32 holds activations m (low half) and m + 16 (high half), so ((~signs >> m) & 0x00010001)
// << 15 is exactly the two sign flips the pair needs, one XOR applying two weights' signs.
// The pairs are then unpacked and added in f32 (unpack2x16float): naga 30 cannot bitcast a
// u32 to vec2<f16>, so summing the pairs as packed f16 waits for it. CPU reference: the f32 one
// (cpu::ops::Matrix::matvec), within the f16 rounding of x.
//
// The reduction loop of the main part walks words of WEIGHTS_PER_WORD = 128 weights (one Q1_0
// block: a vec4<u32> of signs per row), the input staged STAGE_WORDS blocks (2,048 values,
// 4 KiB) at a time.


const WEIGHTS_PER_WORD: u32 = 128u;
const BLOCK: u32 = 128u;
const STAGE_WORDS: u32 = 16u;
// One row group per subgroup in matvec_subgroup.wgsl.
const GROUPS: u32 = 1u;

@group(0) @binding(0) var<storage, read> codes: array<vec4<u32>>;  // (rows, K/128) 128 sign bits
@group(0) @binding(1) var<storage, read> scales: array<u32>;       // (rows * K/128) f16, 2 per word

// Staged block b (of the chunk), group g: vec4 index 16b + 4g + v holds words 4v .. 4v + 3.
var<workgroup> xh: array<vec4<u32>, 256>;

fn block_scale(i: u32) -> f32 {
    let pair = unpack2x16float(scales[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Converts the input's blocks first_block .. first_block + STAGE_WORDS (as load_x gives it) to
// f16 pairs in xh. Every thread calls it in uniform control flow (barriers as the q8 core's).
fn stage_x(lid: u32, first_block: u32) {
    if (first_block > 0u) {
        workgroupBarrier();
    }
    let n_groups = min(4u * STAGE_WORDS, K / 32u - 4u * first_block);
    for (var g = lid; g < n_groups; g += WG) {
        let i = 8u * (4u * first_block + g);
        let x0 = load_x(i);
        let x1 = load_x(i + 1u);
        let x2 = load_x(i + 2u);
        let x3 = load_x(i + 3u);
        let x4 = load_x(i + 4u);
        let x5 = load_x(i + 5u);
        let x6 = load_x(i + 6u);
        let x7 = load_x(i + 7u);
        // Activation j is component j % 4 of x(j / 4): word m pairs m (x0..x3) with m + 16
        // (x4..x7).
        let base = 4u * g;
        xh[base] = vec4<u32>(pack2x16float(vec2<f32>(x0.x, x4.x)),
                             pack2x16float(vec2<f32>(x0.y, x4.y)),
                             pack2x16float(vec2<f32>(x0.z, x4.z)),
                             pack2x16float(vec2<f32>(x0.w, x4.w)));
        xh[base + 1u] = vec4<u32>(pack2x16float(vec2<f32>(x1.x, x5.x)),
                                  pack2x16float(vec2<f32>(x1.y, x5.y)),
                                  pack2x16float(vec2<f32>(x1.z, x5.z)),
                                  pack2x16float(vec2<f32>(x1.w, x5.w)));
        xh[base + 2u] = vec4<u32>(pack2x16float(vec2<f32>(x2.x, x6.x)),
                                  pack2x16float(vec2<f32>(x2.y, x6.y)),
                                  pack2x16float(vec2<f32>(x2.z, x6.z)),
                                  pack2x16float(vec2<f32>(x2.w, x6.w)));
        xh[base + 3u] = vec4<u32>(pack2x16float(vec2<f32>(x3.x, x7.x)),
                                  pack2x16float(vec2<f32>(x3.y, x7.y)),
                                  pack2x16float(vec2<f32>(x3.z, x7.z)),
                                  pack2x16float(vec2<f32>(x3.w, x7.w)));
    }
    workgroupBarrier();
}

// Words 4v .. 4v + 3 of a group (vec4 w) with their sign flips from the inverted signs nc:
// one XOR per pair of activations, then the pairs unpacked and summed (in f32: naga 30 has no
// size-changing bitcast to vec2<f16>, so the packed-f16 adds wait for it).
fn flip4(w: vec4<u32>, nc: u32, v: u32) -> vec2<f32> {
    let m = vec4<u32>(4u * v) + vec4<u32>(0u, 1u, 2u, 3u);
    let f = w ^ (((vec4<u32>(nc) >> m) & vec4<u32>(0x00010001u)) << vec4<u32>(15u));
    return (unpack2x16float(f.x) + unpack2x16float(f.y))
        + (unpack2x16float(f.z) + unpack2x16float(f.w));
}

// The group's sum of +-x in f32: 4 pairs at a time summed in f16.
fn group_sum(b: u32, g: u32, c: u32) -> f32 {
    let nc = ~c;
    let base = 16u * b + 4u * g;
    let s = (flip4(xh[base], nc, 0u) + flip4(xh[base + 1u], nc, 1u))
        + (flip4(xh[base + 2u], nc, 2u) + flip4(xh[base + 3u], nc, 3u));
    return s.x + s.y;
}

fn row_dot(r: u32, b: u32) -> f32 {
    let i = r * (K / 128u) + b;
    let c = codes[i];
    let l = b % STAGE_WORDS;
    let s = (group_sum(l, 0u, c.x) + group_sum(l, 1u, c.y))
        + (group_sum(l, 2u, c.z) + group_sum(l, 3u, c.w));
    return block_scale(i) * s;
}

// Dot products of block `b` of the row group at `first_row` with the staged x.
fn word_dots(first_row: u32, b: u32) -> vec4<f32> {
    return vec4<f32>(
        row_dot(W_ROW0 + weight_row(first_row, 0u), b),
        row_dot(W_ROW0 + weight_row(first_row, 1u), b),
        row_dot(W_ROW0 + weight_row(first_row, 2u), b),
        row_dot(W_ROW0 + weight_row(first_row, 3u), b),
    );
}

fn group_dots(first_row: u32, w: u32) -> array<vec4<f32>, GROUPS> {
    return array<vec4<f32>, GROUPS>(word_dots(first_row, w));
}
