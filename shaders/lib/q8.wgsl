// The q8 path's activation arithmetic, shared by lib/q1_0_q8_dots.wgsl (matvec) and
// matmul_q1_0_q8.wgsl (prepended to both, see Shader::parts). CPU reference:
// quant::q1_0::Q8Activations and dot_q1_0_q8.
//
// A group of 32 activations is quantized like llama.cpp's q8_0: d = amax / 127,
// q = round(x * 127 / amax) (ties to even). Its 8 packed int8 words are interleaved: word m
// holds activations m, m + 8, m + 16, m + 24, so (signs >> m) & 0x01010101 puts exactly their
// 4 sign bits in bytes 0..3 and dot4I8Packed sums the activations whose bit is set.

struct Q8Group {
    lo: vec4<u32>,  // words 0..3
    hi: vec4<u32>,  // words 4..7
    d: f32,         // amax / 127
    dsum: f32,      // d * sum(q)
}

// 4 signed bytes of a packed word.
fn pack_i8(q: vec4<i32>) -> u32 {
    let b = bitcast<vec4<u32>>(q) & vec4<u32>(0xffu);
    return b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);
}

// Quantizes the group x0..x7 (activation j is component j % 4 of x(j / 4)).
fn quantize_q8(x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
               x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>) -> Q8Group {
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
    // Word m takes m, m + 8, m + 16, m + 24: component m % 4 of q(m / 4), q(m / 4 + 2), ...
    let lo = vec4<u32>(pack_i8(vec4<i32>(q0.x, q2.x, q4.x, q6.x)),
                       pack_i8(vec4<i32>(q0.y, q2.y, q4.y, q6.y)),
                       pack_i8(vec4<i32>(q0.z, q2.z, q4.z, q6.z)),
                       pack_i8(vec4<i32>(q0.w, q2.w, q4.w, q6.w)));
    let hi = vec4<u32>(pack_i8(vec4<i32>(q1.x, q3.x, q5.x, q7.x)),
                       pack_i8(vec4<i32>(q1.y, q3.y, q5.y, q7.y)),
                       pack_i8(vec4<i32>(q1.z, q3.z, q5.z, q7.z)),
                       pack_i8(vec4<i32>(q1.w, q3.w, q5.w, q7.w)));
    let qs = ((q0 + q1) + (q2 + q3)) + ((q4 + q5) + (q6 + q7));
    let d = amax / 127.0;
    return Q8Group(lo, hi, d, d * f32((qs.x + qs.y) + (qs.z + qs.w)));
}

// The sign bits of word m of a block's 4 groups (signs c) as 0/1 bytes.
fn q8_bits(c: vec4<u32>, m: u32) -> vec4<u32> {
    return (c >> vec4<u32>(m)) & vec4<u32>(0x01010101u);
}

// S_g of a block's 4 groups for word m: the staged words w against q8_bits(signs, m).
fn q8_sums(w: vec4<u32>, bits: vec4<u32>) -> vec4<i32> {
    return vec4<i32>(dot4I8Packed(w.x, bits.x), dot4I8Packed(w.y, bits.y),
                     dot4I8Packed(w.z, bits.z), dot4I8Packed(w.w, bits.w));
}
