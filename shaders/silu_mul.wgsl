// SwiGLU gate: hb = silu(hb) * hb2, element-wise over N values (a vector or n_tokens rows).

override N: u32;   // elements (n_tokens * n_ff)

@group(0) @binding(0) var<storage, read_write> hb: array<f32>;    // (N) ffn_gate x, then result
@group(0) @binding(1) var<storage, read> hb2: array<f32>;         // (N) ffn_up x

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i < N {
        let g = hb[i];
        hb[i] = g / (1.0 + exp(-g)) * hb2[i];
    }
}
