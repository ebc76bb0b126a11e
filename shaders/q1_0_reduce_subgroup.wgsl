// Row-group reduction of the fused matvecs with one subgroupAdd: a row group is exactly one
// subgroup of SG lanes. The host uses this file only when the adapter's subgroup size is fixed
// (min = max = SG), since subgroups are then SG consecutive invocations (every known driver);
// otherwise q1_0_reduce_shared.wgsl. Needs the subgroups feature (`enable subgroups;` is
// prepended on browser WebGPU only, see Shader::source_for).

override SG: u32 = 32u; // the subgroup size; ROWS_PER_WG = 4 * WG / SG

// Threads per row group.
fn row_group_threads() -> u32 {
    return SG;
}

// Rows row0 + 4 * (lid / SG) .. + 3: every thread calls this (subgroupAdd needs uniform control
// flow); the dots are valid in every lane of the row group.
fn row_group_dots(lid: u32, row0: u32) -> vec4<f32> {
    let lane = lid % SG;
    let first_row = row0 + 4u * (lid / SG);
    var sum = vec4<f32>(0.0);
    if first_row < N {
        for (var w = lane; w < K / 32u; w += SG) {
            sum += word_dots(first_row, w);
        }
    }
    return subgroupAdd(sum);
}

var<workgroup> red: array<f32, WG>;

// Sum of `v` over the workgroup (every thread calls it; every thread gets the sum).
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    let s = subgroupAdd(v);
    workgroupBarrier(); // readers of an earlier sum are done with `red`
    if lid % SG == 0u {
        red[lid / SG] = s;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < WG / SG; i++) {
        total += red[i];
    }
    return total;
}
