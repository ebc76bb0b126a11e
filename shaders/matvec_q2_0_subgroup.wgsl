// y = W x for one part of a Q2_0 weight (see src/gpu/q1_0.rs), reduced with subgroupAdd.
// Same bindings, overrides and inner loop as matvec_q2_0.wgsl; the same subgroup plan as
// matvec_q1_0_subgroup.wgsl (one subgroup per group of 4 rows, ITERS rounds so that every
// subgroup size in the adapter's range covers every row group).
// Needs the subgroups feature; `enable subgroups;` is prepended on browser WebGPU only (naga
// rejects the directive), see Shader::source_for.
//
// Indices stay in range by construction (built without runtime checks, `Shader::trusted`): rows
// are clamped to N - 1 before a load and written only below N; code words w < K/16 and block
// scales r * K/64 + w/4 < N * K/64 lie inside the part's buffers (made by the repack for
// exactly N rows of K); x is read below K/4 vec4s and y written below Y_OFFSET + N, which
// MatvecQ1_0::new checks against the bound buffers.

override K: u32;                     // input size (multiple of 64)
override N: u32;                     // rows in this part
override Y_OFFSET: u32 = 0u;         // index in y of this part's first row
override ROWS_PER_WG: u32 = 32u;     // multiple of 4
override ACCUMULATE: bool = false;   // y += W x (residual add) instead of y = W x
override ITERS: u32 = 1u;            // row-group rounds per subgroup (see main)

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> codes: array<u32>;        // (N, K/16) 2-bit codes
@group(0) @binding(1) var<storage, read> scales: array<u32>;       // (N * K/64) f16, 2 per word
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;      // (K/4)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;      // (Y_OFFSET + N, ...)

fn block_scale(i: u32) -> f32 {
    let pair = unpack2x16float(scales[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Dot products of code word `w` of rows first_row .. first_row + 3 with x[16 w .. 16 w + 16].
fn word_dots(first_row: u32, w: u32) -> vec4<f32> {
    var xs: array<vec4<f32>, 4>;
    var x_sum = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        xs[j] = x[4u * w + j];
        x_sum += xs[j];
    }
    let sum_x = (x_sum.x + x_sum.y) + (x_sum.z + x_sum.w);
    let words = K / 16u;
    var dots = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        let r = min(first_row + i, N - 1u);
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

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
) {
    let row0 = (wid.x + wid.y * nwg.x) * ROWS_PER_WG;
    // The trip count depends on overrides only, so subgroupAdd stays in workgroup-uniform
    // control flow (browsers reject it elsewhere). The host sets ROWS_PER_WG = 4 * 256 /
    // min_subgroup_size and ITERS = max_subgroup_size / min_subgroup_size, which covers every
    // row group whatever subgroup size the driver picks; surplus iterations add zeros.
    let n_groups = ROWS_PER_WG / 4u;
    for (var it = 0u; it < ITERS; it++) {
        let g = lid / sg_size + it * (WG / sg_size);
        let first_row = row0 + 4u * g;
        var sum = vec4<f32>(0.0);
        if g < n_groups && first_row < N {
            for (var w = sg_lane; w < K / 16u; w += sg_size) {
                sum += word_dots(first_row, w);
            }
        }
        let total = subgroupAdd(sum);
        if sg_lane == 0u {
            for (var i = 0u; i < 4u; i++) {
                if g < n_groups && first_row + i < N {
                    let o = Y_OFFSET + first_row + i;
                    y[o] = select(0.0, y[o], ACCUMULATE) + total[i];
                }
            }
        }
    }
}
