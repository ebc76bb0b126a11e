// x[t, :] = dequantized row tokens[t] of a Q1_0 embedding table (one part, rows ROW0 .. ROW0+N).
// Each thread expands one sign word (32 weights); a part that does not hold the token writes
// nothing, so dispatching every part of a split table fills x exactly once.

override K: u32;          // embedding size (multiple of 128)
override N: u32;          // rows in this part
override ROW0: u32 = 0u;  // vocabulary index of this part's first row

@group(0) @binding(0) var<storage, read> signs: array<u32>;        // (N, K/32) sign bits
@group(0) @binding(1) var<storage, read> scales: array<u32>;       // (N * K/128) f16, 2 per word
@group(0) @binding(2) var<storage, read> tokens: array<u32>;       // (n_tokens)
@group(0) @binding(3) var<storage, read_write> x: array<vec4<f32>>; // (n_tokens, K/4)

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;          // sign word within the row
    let t = gid.y;          // token slot
    let words = K / 32u;
    let token = tokens[t];
    if w >= words || token < ROW0 || token - ROW0 >= N {
        return;
    }
    let row = token - ROW0;
    let bits = signs[row * words + w];
    let si = row * (K / 128u) + w / 4u;
    let pair = unpack2x16float(scales[si >> 1u]);
    let d = select(pair.x, pair.y, (si & 1u) == 1u);
    for (var j = 0u; j < 8u; j++) {
        let b = (vec4<u32>(bits) >> (vec4<u32>(0u, 1u, 2u, 3u) + vec4<u32>(4u * j))) & vec4<u32>(1u);
        x[t * (K / 4u) + 8u * w + j] = select(vec4<f32>(-d), vec4<f32>(d), b == vec4<u32>(1u));
    }
}
