// Decode step D4 of a layer: hb = silu(Wgate xb) * (Wup xb) with xb = rmsnorm(x) * ffn_norm
// folded into the matvec (each workgroup recomputes 1/rms(x) and loads x * ffn_norm).
//
// The gate and up weights are interleaved at load time in pairs of rows (weight rows 4p, 4p+1
// are gate rows 2p, 2p+1 and rows 4p+2, 4p+3 are up rows 2p, 2p+1; src/gpu/ops/ffn_gate_up.rs),
// so the 4 rows of a row group give (g0, g1, u0, u1) in one thread, which writes hb[2p], hb[2p+1].
//
// Dispatch: (ceil(N / ROWS_PER_WG), 1, 1) with N = 2 * n_ff (split over x/y past the limit).
//
// Indices in range by construction (built without runtime checks): `load_x` indices are below
// K/4, rows are clamped by the shared core, and outputs are written only for rows below N.

override EPS: f32 = 1e-6;

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;        // (K/4) residual stream
@group(0) @binding(1) var<storage, read> norm: array<vec4<f32>>;     // (K/4) ffn_norm
@group(0) @binding(2) var<storage, read> signs: array<u32>;          // (N, K/32) interleaved gate|up
@group(0) @binding(3) var<storage, read> scales: array<u32>;         // (N * K/128) f16, 2 per word
@group(0) @binding(4) var<storage, read_write> hb: array<f32>;       // (N/2) silu(gate) * up

fn load_x(i: u32) -> vec4<f32> {
    return x[i] * norm[i];
}

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    var ss = 0.0;
    for (var i = lid; i < K / 4u; i += WG) {
        let v = x[i];
        ss += dot(v, v);
    }
    let inv_rms = inverseSqrt(workgroup_sum(lid, ss) / f32(K) + EPS);

    let row0 = (wid.x + wid.y * nwg.x) * ROWS_PER_WG;
    let dots = row_group_dots(lid, row0) * inv_rms;
    let tpg = row_group_threads();
    let first_row = row0 + 4u * (lid / tpg);
    if lid % tpg == 0u && first_row < N {
        let o = first_row / 2u;
        hb[o] = silu(dots.x) * dots.z;
        hb[o + 1u] = silu(dots.y) * dots.w;
    }
}
