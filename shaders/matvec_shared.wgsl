// y = W x for one part of a Q1_0 or Q2_0 weight, reduced through workgroup memory: the main
// part of the MatvecQ1_0 / MatvecQ2_0 shaders, after lib/q*_dots.wgsl (the weight format) and
// lib/matvec_common.wgsl (input and output options). Works on every adapter;
// matvec_subgroup.wgsl is the faster variant.
//
// Threads work on groups of 4 rows: a thread loads one code word's worth of x once and applies
// it to the 4 rows, so x traffic per weight is 4x lower than row-at-a-time. The
// THREADS_PER_GROUP = 256 / (ROWS_PER_WG / 4) threads of a row group (a power of two) stride
// over the code words, so neighbouring threads read neighbouring words.

var<workgroup> partial: array<vec4<f32>, MAX_WG>;

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    prologue(lid, true);
    var scale = 1.0;
    if (RMS) {
        scale = inv_rms_wg;
    }
    let threads_per_group = WG / (ROWS_PER_WG / 4u);
    let lane = lid % threads_per_group;
    let group = wid.x + wid.y * nwg.x;
    let first_row = group * ROWS_PER_WG + 4u * (lid / threads_per_group);

    var sum = vec4<f32>(0.0);
    // The words in chunks of STAGE_WORDS, the input the weight core stages at a time (all of
    // them at once but for the q8 core's longest rows).
    let n_words = K / WEIGHTS_PER_WORD;
    for (var c0 = 0u; c0 < n_words; c0 += STAGE_WORDS) {
        stage_x(lid, c0);
        if first_row < N {
            let end = min(c0 + STAGE_WORDS, n_words);
            for (var w = c0 + lane; w < end; w += threads_per_group) {
                sum += word_dots(first_row, w);
            }
        }
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var s = threads_per_group / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if lane == 0u && first_row < N {
        finish(first_row, partial[lid], scale);
    }
}
