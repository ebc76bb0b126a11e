// x[t, :] = dequantized row tokens[t] of a Q2_0 embedding table (one part, rows ROW0 .. ROW0+N).
// Each thread expands one code word (16 weights, (c - 1) d each); a part that does not hold the
// token writes nothing, so dispatching every part of a split table fills x exactly once.

override K: u32;          // embedding size (multiple of 64)
override N: u32;          // rows in this part
override ROW0: u32 = 0u;  // vocabulary index of this part's first row

@group(0) @binding(0) var<storage, read> codes: array<u32>;        // (N, K/16) 2-bit codes
@group(0) @binding(1) var<storage, read> scales: array<u32>;       // (N * K/64) f16, 2 per word
@group(0) @binding(2) var<storage, read> tokens: array<u32>;       // (n_tokens)
@group(0) @binding(3) var<storage, read_write> x: array<vec4<f32>>; // (n_tokens, K/4)

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;          // code word within the row
    let t = gid.y;          // token slot
    let words = K / 16u;
    let token = tokens[t];
    if w >= words || token < ROW0 || token - ROW0 >= N {
        return;
    }
    let row = token - ROW0;
    let c = vec4<u32>(codes[row * words + w]);
    let si = row * (K / 64u) + w / 4u;
    let pair = unpack2x16float(scales[si >> 1u]);
    let d = select(pair.x, pair.y, (si & 1u) == 1u);
    for (var j = 0u; j < 4u; j++) {
        let shift = vec4<u32>(0u, 2u, 4u, 6u) + vec4<u32>(8u * j);
        let level = vec4<f32>((c >> shift) & vec4<u32>(3u)) - vec4<f32>(1.0);
        x[t * (K / 4u) + 4u * w + j] = level * d;
    }
}
