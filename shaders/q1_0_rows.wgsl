// Shared core of the fused decode kernels (prepended to each of them, see Shader::source):
// dot products of a workgroup's ROWS_PER_WG rows of a Q1_0 weight (src/gpu/q1_0.rs layout) with
// an input vector that the including kernel supplies through `load_x(i)` (vec4 i of the input:
// a plain activation, a normed one, or a merge of attention partials). The epilogue is the
// kernel's own.
//
// Layout of the work: rows go in groups of 4 that share each load of x (a thread loads 32
// inputs, one sign word's worth, once and applies them to 4 rows); the WG / (ROWS_PER_WG / 4)
// threads of a group stride over the K/32 sign words and are summed by a tree in workgroup
// memory. No subgroups: one path for every adapter.
//
// Why the indices stay in range (these kernels are built without runtime bounds checks):
// rows are clamped to N - 1 before indexing signs/scales, words run below K/32, `load_x` gets
// indices below K/4, and the host checks every buffer against K and N before building.

override K: u32;                  // input size, multiple of 128
override N: u32;                  // rows of the weight
override ROWS_PER_WG: u32 = 32u;  // 4 * power of two, at most 4 * WG / 4 = WG

const WG: u32 = 256u;

var<workgroup> partial: array<vec4<f32>, WG>;

fn block_scale(i: u32) -> f32 {
    let pair = unpack2x16float(scales[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Dot products of sign word `w` of rows first_row .. first_row + 3 with inputs 32 w .. 32 w + 32.
fn word_dots(first_row: u32, w: u32) -> vec4<f32> {
    var xs: array<vec4<u32>, 8>;  // float bits: the sign bit is flipped per weight
    for (var j = 0u; j < 8u; j++) {
        xs[j] = bitcast<vec4<u32>>(load_x(8u * w + j));
    }
    let words = K / 32u;
    var dots = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        let r = min(first_row + i, N - 1u);
        let flip_bits = vec4<u32>(~signs[r * words + w]);
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

// Threads per row group.
fn row_group_threads() -> u32 {
    return WG / (ROWS_PER_WG / 4u);
}

// Rows row0 + 4 * (lid / threads) .. + 3: every thread calls this (it has barriers); the
// returned dots are valid in the group's first thread (lid % row_group_threads() == 0).
fn row_group_dots(lid: u32, row0: u32) -> vec4<f32> {
    let tpg = row_group_threads();
    let lane = lid % tpg;
    let first_row = row0 + 4u * (lid / tpg);
    var sum = vec4<f32>(0.0);
    if first_row < N {
        for (var w = lane; w < K / 32u; w += tpg) {
            sum += word_dots(first_row, w);
        }
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var s = tpg / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    return partial[lid];
}

var<workgroup> red: array<f32, WG>;

// Sum of `v` over the workgroup (every thread calls it; every thread gets the sum).
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    workgroupBarrier();
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}
