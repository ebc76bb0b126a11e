// Row-group reduction of the fused matvecs through workgroup memory (every adapter). Prepended
// after q1_0_rows.wgsl; q1_0_reduce_subgroup.wgsl is the same API with subgroupAdd.

var<workgroup> partial: array<vec4<f32>, WG>;

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
