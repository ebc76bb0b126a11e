// y = W x for one part of a Q1_0 or Q2_0 weight, reduced with subgroupAdd: the main part of
// the MatvecQ1_0Subgroup / MatvecQ2_0Subgroup shaders, after lib/q*_dots.wgsl and
// lib/matvec_common.wgsl (same options and row groups as matvec_shared.wgsl).
//
// One subgroup per group of 4 rows (two for the q8 core: GROUPS): its lanes stride over the
// rows' code words (each lane loads a word's worth of x once for the 4 or 8 rows), then one
// subgroupAdd of a vec4 per row group gives the dot products; no workgroup memory, no barriers (but the merge table's prologue). The
// subgroup size is only known at run time (within the adapter's min..max), so each subgroup
// takes every (256 / subgroup_size)-th row group. Subgroups are assumed to be consecutive runs
// of local_invocation_index (true on every known driver).
// Needs the subgroups feature; `enable subgroups;` is prepended on browser WebGPU only (naga
// rejects the directive), see Shader::source_for.

override ITERS: u32 = 1u;            // row-group rounds per subgroup (see main)

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
) {
    prologue(lid, false);
    // RMS: each subgroup takes the sum of squares itself (no barrier); the host gives RMS
    // kernels more row groups per subgroup (ITERS) to spread it.
    var scale = 1.0;
    if (RMS) {
        scale = inv_rms(subgroupAdd(rms_partial(sg_lane, sg_size)));
    }
    let group = wid.x + wid.y * nwg.x;
    let row0 = group * ROWS_PER_WG;
    // The trip count depends on overrides only, so subgroupAdd stays in workgroup-uniform
    // control flow (browsers reject it elsewhere). The host sets ROWS_PER_WG = 4 * 256 /
    // min_subgroup_size and ITERS = max_subgroup_size / min_subgroup_size, which covers every
    // row group whatever subgroup size the driver picks; surplus iterations add zeros.
    let n_groups = ROWS_PER_WG / 4u;
    let n_words = K / WEIGHTS_PER_WORD;
    for (var it = 0u; it < ITERS; it++) {
        // The subgroup's GROUPS (1 or 2: the weight core's) consecutive row groups.
        let g = (lid / sg_size + it * (WG / sg_size)) * GROUPS;
        let first_row = row0 + 4u * g;
        let live = g < n_groups && first_row < N;
        var sum0 = vec4<f32>(0.0);
        var sum1 = vec4<f32>(0.0);
        // The words in chunks of STAGE_WORDS, the input the weight core stages at a time (all
        // of them at once but for the q8 core's longest rows).
        for (var c0 = 0u; c0 < n_words; c0 += STAGE_WORDS) {
            if (it == 0u || n_words > STAGE_WORDS) {
                stage_x(lid, c0);
            }
            if live {
                let end = min(c0 + STAGE_WORDS, n_words);
                for (var w = c0 + sg_lane; w < end; w += sg_size) {
                    let d = group_dots(first_row, w);
                    sum0 += d[0];
                    if (GROUPS > 1u) {
                        sum1 += d[GROUPS - 1u];
                    }
                }
            }
        }
        let total0 = subgroupAdd(sum0);
        if sg_lane == 0u && live {
            finish(first_row, total0, scale);
        }
        if (GROUPS > 1u) {
            // Rows past N read row N - 1 (weight_row) and are not written (finish).
            let total1 = subgroupAdd(sum1);
            if sg_lane == 0u && live && first_row + 4u < N {
                finish(first_row + 4u, total1, scale);
            }
        }
    }
}
