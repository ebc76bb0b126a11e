// Q1_0 row core of the integer matvec kernels (the q8 path; prepended to matvec_shared.wgsl /
// matvec_subgroup.wgsl like lib/q1_0_dots.wgsl, see Shader::parts).
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

// 4 signed bytes of a packed word.
fn pack_i8(q: vec4<i32>) -> u32 {
    let b = bitcast<vec4<u32>>(q) & vec4<u32>(0xffu);
    return b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);
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
        // Activation j of the group is component j % 4 of q(j / 4): word m takes m, m + 8,
        // m + 16, m + 24, that is component m % 4 of q(m / 4), q(m / 4 + 2), ...
        let base = 8u * (g / 4u);
        let c = g % 4u;
        xq[base][c] = pack_i8(vec4<i32>(q0.x, q2.x, q4.x, q6.x));
        xq[base + 1u][c] = pack_i8(vec4<i32>(q0.y, q2.y, q4.y, q6.y));
        xq[base + 2u][c] = pack_i8(vec4<i32>(q0.z, q2.z, q4.z, q6.z));
        xq[base + 3u][c] = pack_i8(vec4<i32>(q0.w, q2.w, q4.w, q6.w));
        xq[base + 4u][c] = pack_i8(vec4<i32>(q1.x, q3.x, q5.x, q7.x));
        xq[base + 5u][c] = pack_i8(vec4<i32>(q1.y, q3.y, q5.y, q7.y));
        xq[base + 6u][c] = pack_i8(vec4<i32>(q1.z, q3.z, q5.z, q7.z));
        xq[base + 7u][c] = pack_i8(vec4<i32>(q1.w, q3.w, q5.w, q7.w));
        let qs = ((q0 + q1) + (q2 + q3)) + ((q4 + q5) + (q6 + q7));
        let d = amax / 127.0;
        xd[g / 4u][c] = d;
        xs[g / 4u][c] = d * f32((qs.x + qs.y) + (qs.z + qs.w));
    }
    workgroupBarrier();
}

// S_g for the 4 groups of a block: word m of x against bits m, m + 8, m + 16, m + 24.
fn sums(w: vec4<u32>, c: vec4<u32>, m: u32) -> vec4<i32> {
    let bits = (c >> vec4<u32>(m)) & vec4<u32>(0x01010101u);
    return vec4<i32>(dot4I8Packed(w.x, bits.x), dot4I8Packed(w.y, bits.y),
                     dot4I8Packed(w.z, bits.z), dot4I8Packed(w.w, bits.w));
}

// Dot products of block `b` of the row group at `first_row` with the staged x (b is in the
// staged chunk: its index there is b % STAGE_WORDS).
fn word_dots(first_row: u32, b: u32) -> vec4<f32> {
    let l = b % STAGE_WORDS;
    let w0 = xq[8u * l];
    let w1 = xq[8u * l + 1u];
    let w2 = xq[8u * l + 2u];
    let w3 = xq[8u * l + 3u];
    let w4 = xq[8u * l + 4u];
    let w5 = xq[8u * l + 5u];
    let w6 = xq[8u * l + 6u];
    let w7 = xq[8u * l + 7u];
    let d = xd[l];
    let g = xs[l];
    let sx = (g.x + g.y) + (g.z + g.w);
    // Written out for the 4 rows: a loop keeps the staged words in an indexed array on
    // drivers that do not unroll it (lavapipe), which costs more than the products.
    return vec4<f32>(
        row_dot(W_ROW0 + weight_row(first_row, 0u), b, w0, w1, w2, w3, w4, w5, w6, w7, d, sx),
        row_dot(W_ROW0 + weight_row(first_row, 1u), b, w0, w1, w2, w3, w4, w5, w6, w7, d, sx),
        row_dot(W_ROW0 + weight_row(first_row, 2u), b, w0, w1, w2, w3, w4, w5, w6, w7, d, sx),
        row_dot(W_ROW0 + weight_row(first_row, 3u), b, w0, w1, w2, w3, w4, w5, w6, w7, d, sx),
    );
}

// Two row groups (8 rows) per subgroup in matvec_subgroup.wgsl: each staged block is loaded
// once for 8 rows (on lavapipe the loads, not the products, are the cost).
const GROUPS: u32 = 2u;

// word_dots of the row groups at first_row and first_row + 4.
fn group_dots(first_row: u32, b: u32) -> array<vec4<f32>, GROUPS> {
    let l = b % STAGE_WORDS;
    let w0 = xq[8u * l];
    let w1 = xq[8u * l + 1u];
    let w2 = xq[8u * l + 2u];
    let w3 = xq[8u * l + 3u];
    let w4 = xq[8u * l + 4u];
    let w5 = xq[8u * l + 5u];
    let w6 = xq[8u * l + 6u];
    let w7 = xq[8u * l + 7u];
    let d = xd[l];
    let g = xs[l];
    let sx = (g.x + g.y) + (g.z + g.w);
    let second = first_row + 4u;
    return array<vec4<f32>, GROUPS>(
        vec4<f32>(
            row_dot(W_ROW0 + weight_row(first_row, 0u), b, w0, w1, w2, w3, w4, w5, w6, w7, d, sx),
            row_dot(W_ROW0 + weight_row(first_row, 1u), b, w0, w1, w2, w3, w4, w5, w6, w7, d, sx),
            row_dot(W_ROW0 + weight_row(first_row, 2u), b, w0, w1, w2, w3, w4, w5, w6, w7, d, sx),
            row_dot(W_ROW0 + weight_row(first_row, 3u), b, w0, w1, w2, w3, w4, w5, w6, w7, d, sx),
        ),
        vec4<f32>(
            row_dot(W_ROW0 + weight_row(second, 0u), b, w0, w1, w2, w3, w4, w5, w6, w7, d, sx),
            row_dot(W_ROW0 + weight_row(second, 1u), b, w0, w1, w2, w3, w4, w5, w6, w7, d, sx),
            row_dot(W_ROW0 + weight_row(second, 2u), b, w0, w1, w2, w3, w4, w5, w6, w7, d, sx),
            row_dot(W_ROW0 + weight_row(second, 3u), b, w0, w1, w2, w3, w4, w5, w6, w7, d, sx),
        ),
    );
}

// Block b of weight row r against the staged words w0..w7, scales d and sum sx.
fn row_dot(r: u32, b: u32, w0: vec4<u32>, w1: vec4<u32>, w2: vec4<u32>, w3: vec4<u32>,
           w4: vec4<u32>, w5: vec4<u32>, w6: vec4<u32>, w7: vec4<u32>, d: vec4<f32>,
           sx: f32) -> f32 {
    let i = r * (K / 128u) + b;
    let c = codes[i];
    let s = ((sums(w0, c, 0u) + sums(w1, c, 1u)) + (sums(w2, c, 2u) + sums(w3, c, 3u)))
        + ((sums(w4, c, 4u) + sums(w5, c, 5u)) + (sums(w6, c, 6u) + sums(w7, c, 7u)));
    return block_scale(i) * (2.0 * dot(d, vec4<f32>(s)) - sx);
}
