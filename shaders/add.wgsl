// Residual add: x += xb2, element-wise over N values (a vector or n_tokens rows).

override N: u32;   // elements (n_tokens * n_embd)

@group(0) @binding(0) var<storage, read_write> x: array<f32>;     // (N)
@group(0) @binding(1) var<storage, read> xb2: array<f32>;         // (N)

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i < N {
        x[i] += xb2[i];
    }
}
