// Q1_0 row core of the integer matvec kernels (the q8 path; prepended to matvec_shared.wgsl /
// matvec_subgroup.wgsl like lib/q1_0_dots.wgsl, after lib/q8.wgsl: see Shader::parts).
//
// The input is quantized once per workgroup (stage_x, called by matvec_common's prologue) to
// int8 in blocks of 32 with an f32 scale d_g each, llama.cpp's q8_0 arithmetic: q = round(x *
// 127 / amax), x ~ d_g q with d_g = amax / 127. A weight is +-d_w, so with S_g = the sum of q
// over the weights whose sign bit is 1 in group g, a 128-weight block's dot product is
//     d_w * sum_g d_g (2 S_g - sum(q_g)) = d_w * (2 dot(d, S) - sx)
// where sx = sum_g d_g sum(q_g) is a property of x alone (staged with it). S_g is integer work:
// dot4I8Packed of a packed word of 4 activations with the 4 matching sign bits as 0/1 bytes,
// one op per 4 weights where the GPU has a packed dot product (dp4a), two more (shift, mask)
// to place the bits. To make that placement one shift for any 4 weights, word m of group g
// holds activations m, m + 8, m + 16, m + 24 of the group: (signs >> m) & 0x01010101 puts
// exactly their bits in bytes 0..3.
//
// The reduction loop of the main part walks "words" of WEIGHTS_PER_WORD = 128 weights: one
// Q1_0 block (16 bytes of signs, one vec4<u32> load per row), the staged int8 x read once per
// block for the 4 rows of a row group. CPU reference: cpu::ops::Matrix::matvec_q8 (the same
// quantization and integer sums).
//
// The input is staged STAGE_WORDS blocks (4,096 values) at a time: 5 KiB of workgroup memory
// (int8 x, the scales and the sums), one chunk for every Bonsai matvec but ffn_down (2 or 3).

const WEIGHTS_PER_WORD: u32 = 128u;
const BLOCK: u32 = 128u;

@group(0) @binding(0) var<storage, read> codes: array<vec4<u32>>;  // (rows, K/128) 128 sign bits
@group(0) @binding(1) var<storage, read> scales: array<u32>;       // (rows * K/128) f16, 2 per word

const STAGE_WORDS: u32 = 32u;
var<workgroup> xq: array<vec4<u32>, 256>;      // staged block b: 8b + m = word m of its 4 groups
var<workgroup> xd: array<vec4<f32>, STAGE_WORDS>; // staged block b: its 4 group scales d_g
var<workgroup> xs: array<vec4<f32>, STAGE_WORDS>; // staged block b: d_g sum(q_g) of its groups

fn block_scale(i: u32) -> f32 {
    let pair = unpack2x16float(scales[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Quantizes the input's blocks first_block .. first_block + STAGE_WORDS (as load_x gives it)
// into xq / xd / xs. Every thread of the workgroup calls it, in uniform control flow: barriers
// before a later chunk (the previous one may still be read) and after (before the dot products
// read it). A barrier costs every thread a switch on CPU adapters: the first chunk has one.
fn stage_x(lid: u32, first_block: u32) {
    if (first_block > 0u) {
        workgroupBarrier();
    }
    let n_groups = min(4u * STAGE_WORDS, K / 32u - 4u * first_block);
    for (var g = lid; g < n_groups; g += WG) {
        let i = 8u * (4u * first_block + g); // the group's first vec4 of input
        let x0 = load_x(i);
        let x1 = load_x(i + 1u);
        let x2 = load_x(i + 2u);
        let x3 = load_x(i + 3u);
        let x4 = load_x(i + 4u);
        let x5 = load_x(i + 5u);
        let x6 = load_x(i + 6u);
        let x7 = load_x(i + 7u);
        let q = quantize_q8(x0, x1, x2, x3, x4, x5, x6, x7);
        let base = 8u * (g / 4u);
        let c = g % 4u;
        xq[base][c] = q.lo.x;
        xq[base + 1u][c] = q.lo.y;
        xq[base + 2u][c] = q.lo.z;
        xq[base + 3u][c] = q.lo.w;
        xq[base + 4u][c] = q.hi.x;
        xq[base + 5u][c] = q.hi.y;
        xq[base + 6u][c] = q.hi.z;
        xq[base + 7u][c] = q.hi.w;
        xd[g / 4u][c] = q.d;
        xs[g / 4u][c] = q.dsum;
    }
    workgroupBarrier();
}

// A staged block: its 8 int8 words (each the word of its 4 groups), scales and sum.
struct Staged {
    w0: vec4<u32>, w1: vec4<u32>, w2: vec4<u32>, w3: vec4<u32>,
    w4: vec4<u32>, w5: vec4<u32>, w6: vec4<u32>, w7: vec4<u32>,
    d: vec4<f32>,
    sx: f32,
}

// Block b of the staged chunk (its index there is b % STAGE_WORDS), read once for every row
// that uses it.
fn staged(b: u32) -> Staged {
    let l = b % STAGE_WORDS;
    let g = xs[l];
    return Staged(xq[8u * l], xq[8u * l + 1u], xq[8u * l + 2u], xq[8u * l + 3u],
                  xq[8u * l + 4u], xq[8u * l + 5u], xq[8u * l + 6u], xq[8u * l + 7u],
                  xd[l], (g.x + g.y) + (g.z + g.w));
}

// Block b of weight row r against the staged block s.
fn row_dot(r: u32, b: u32, s: Staged) -> f32 {
    let i = r * (K / 128u) + b;
    let c = codes[i];
    let sum = ((q8_sums(s.w0, q8_bits(c, 0u)) + q8_sums(s.w1, q8_bits(c, 1u)))
        + (q8_sums(s.w2, q8_bits(c, 2u)) + q8_sums(s.w3, q8_bits(c, 3u))))
        + ((q8_sums(s.w4, q8_bits(c, 4u)) + q8_sums(s.w5, q8_bits(c, 5u)))
        + (q8_sums(s.w6, q8_bits(c, 6u)) + q8_sums(s.w7, q8_bits(c, 7u))));
    return block_scale(i) * (2.0 * dot(s.d, vec4<f32>(sum)) - s.sx);
}

// The 4 rows of the row group at first_row against the staged block s. Written out: a loop
// keeps the staged words in an indexed array on drivers that do not unroll it (lavapipe),
// which costs more than the products.
fn rows4(first_row: u32, b: u32, s: Staged) -> vec4<f32> {
    return vec4<f32>(
        row_dot(W_ROW0 + weight_row(first_row, 0u), b, s),
        row_dot(W_ROW0 + weight_row(first_row, 1u), b, s),
        row_dot(W_ROW0 + weight_row(first_row, 2u), b, s),
        row_dot(W_ROW0 + weight_row(first_row, 3u), b, s),
    );
}

// Dot products of block `b` of the row group at `first_row` with the staged x.
fn word_dots(first_row: u32, b: u32) -> vec4<f32> {
    return rows4(first_row, b, staged(b));
}

// Two row groups (8 rows) per subgroup in matvec_subgroup.wgsl: each staged block is loaded
// once for 8 rows (on lavapipe the loads, not the products, are the cost).
const GROUPS: u32 = 2u;

// word_dots of the row groups at first_row and first_row + 4.
fn group_dots(first_row: u32, b: u32) -> array<vec4<f32>, GROUPS> {
    let s = staged(b);
    return array<vec4<f32>, GROUPS>(rows4(first_row, b, s), rows4(first_row + 4u, b, s));
}
