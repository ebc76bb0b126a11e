// x[t, :] = row tokens[t] of a dense f32 embedding table (one part, rows ROW0 .. ROW0+N): the
// F32 / F16 table of a mixed-type file. One thread per vec4; a part that does not hold the
// token writes nothing.

override K: u32;          // embedding size (multiple of 4)
override N: u32;          // rows in this part
override ROW0: u32 = 0u;  // vocabulary index of this part's first row

@group(0) @binding(0) var<storage, read> w: array<vec4<f32>>;       // (N, K/4)
@group(0) @binding(1) var<storage, read> tokens: array<u32>;        // (n_tokens)
@group(0) @binding(2) var<storage, read_write> x: array<vec4<f32>>; // (n_tokens, K/4)

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;          // vec4 within the row
    let t = gid.y;          // token slot
    let k4 = K / 4u;
    let token = tokens[t];
    if j >= k4 || token < ROW0 || token - ROW0 >= N {
        return;
    }
    x[t * k4 + j] = w[(token - ROW0) * k4 + j];
}
