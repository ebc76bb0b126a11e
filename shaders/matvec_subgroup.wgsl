// y = W x for one part of a Q1_0 or Q2_0 weight, reduced with subgroupAdd: the main part of
// the MatvecQ1_0Subgroup / MatvecQ2_0Subgroup shaders, after lib/q*_dots.wgsl and
// lib/matvec_common.wgsl (same options and row groups as matvec_shared.wgsl).
//
// One subgroup per group of 4 rows (two for the q8 core: GROUPS): its lanes stride over the
// rows' code words (each lane loads a word's worth of x once for the 4 or 8 rows), then one
// subgroupAdd of a vec4 per row group gives the dot products; no workgroup memory, no barriers
// (but the merge table's prologue and the q8 / f16 cores' staging). Where the adapter has one
// subgroup size the host passes it (SG), and for rows of fewer words than lanes splits the
// subgroup into slots of SEG lanes, each on its own row group, reduced by shuffles. Otherwise
// the size is only known at run time (within the adapter's min..max), so each subgroup takes
// every (WG / subgroup_size)-th row group. The workgroup size WG (64, 128 or 256) is chosen per
// shape: small projections get smaller workgroups, so more of them spread over the GPU.
// Subgroups are assumed to be consecutive runs of local_invocation_index (true on every known
// driver).
// Needs the subgroups feature; `enable subgroups;` is prepended on browser WebGPU only (naga
// rejects the directive), see Shader::source_for.

override ITERS: u32 = 1u;            // row-group rounds per subgroup (see main)
override SG: u32 = 0u;               // the subgroup size when the adapter has only one, else 0
override SEG: u32 = 0u;              // with SG: lanes per row-group slot, a power of two <= SG

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
) {
    prologue(lid, false);
    // The subgroup size: an override where the adapter has one size, so that the word loop's
    // stride is a constant the driver can unroll by; else the runtime value.
    let sg = select(sg_size, SG, SG != 0u);
    // Lanes per row-group slot: the whole subgroup, or (SEG, rows shorter than the subgroup)
    // SEG lanes, so that sg / seg slots work on different row groups and no lane idles.
    let seg = select(sg, SEG, SG != 0u && SEG != 0u);
    let slot = sg_lane / seg;
    let sl = sg_lane % seg;
    // RMS: each subgroup takes the sum of squares itself (no barrier); the host gives RMS
    // kernels more row groups per subgroup (ITERS) to spread it.
    var scale = 1.0;
    if (RMS) {
        scale = inv_rms(subgroupAdd(rms_partial(sg_lane, sg)));
    }
    let group = wid.x + wid.y * nwg.x;
    let row0 = group * ROWS_PER_WG;
    // The trip count depends on overrides only, so the subgroup operations stay in
    // workgroup-uniform control flow (browsers reject them elsewhere). Without SG the host sets
    // ROWS_PER_WG = 4 GROUPS WG / min_subgroup_size and ITERS = max_subgroup_size /
    // min_subgroup_size, which covers every row group whatever subgroup size the driver picks;
    // surplus iterations add zeros. With SG: ROWS_PER_WG = 4 GROUPS WG / SEG and ITERS = 1.
    let n_groups = ROWS_PER_WG / 4u;
    let n_words = K / WEIGHTS_PER_WORD;
    for (var it = 0u; it < ITERS; it++) {
        // The slot's GROUPS (1 or 2: the weight core's) consecutive row groups.
        let g = ((lid / sg + it * (WG / sg)) * (sg / seg) + slot) * GROUPS;
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
                for (var w = c0 + sl; w < end; w += seg) {
                    let d = group_dots(first_row, w);
                    sum0 += d[0];
                    if (GROUPS > 1u) {
                        sum1 += d[GROUPS - 1u];
                    }
                }
            }
        }
        let total0 = seg_sum(sum0);
        if sl == 0u && live {
            finish(first_row, total0, scale);
        }
        if (GROUPS > 1u) {
            // Rows past N read row N - 1 (weight_row) and are not written (finish).
            let total1 = seg_sum(sum1);
            if sl == 0u && live && first_row + 4u < N {
                finish(first_row + 4u, total1, scale);
            }
        }
    }
}

// The sum of v over the lanes of this lane's slot: subgroupAdd, or (SEG slots) a butterfly of
// log2(SEG) shuffles that stays inside each aligned run of SEG lanes.
fn seg_sum(v: vec4<f32>) -> vec4<f32> {
    if (SG == 0u || SEG == 0u || SEG >= SG) {
        return subgroupAdd(v);
    }
    var t = v;
    for (var o = SEG / 2u; o > 0u; o >>= 1u) {
        t += subgroupShuffleXor(t, o);
    }
    return t;
}
