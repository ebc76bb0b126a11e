// Qwen3 attention pre-processing for a batch of tokens, and the KV cache write.
//
// Per token t (position step.pos + t) and per head: RMSNorm over head_dim with the shared
// attn_q_norm / attn_k_norm weight, then NEOX RoPE (pairs i, i + n_rot/2) with the cos/sin table
// (YaRN and mscale already folded in on the CPU, see kv_cache.rs). q is rotated in place; the
// rotated k and the plain v are stored in the cache at their position: as f16 pairs, or (KV_Q8)
// as Q8_0 blocks quantized like llama.cpp's quantize_row_q8_0_ref (kv_cache.rs has the layout).
//
// Dispatch: (n_head + n_head_kv, n_tokens, 1); workgroup x < n_head is a q head, the rest are
// kv heads (which also copy v).

struct StepParams {
    n_tokens: u32, // tokens in this step
    pos: u32,      // position of the first of them
    n_kv: u32,     // pos + n_tokens
    _pad: u32,
}

override HEAD_DIM: u32 = 128u;  // <= MAX_HEAD_DIM, even
override N_ROT: u32 = 128u;     // rotated dims (<= HEAD_DIM, even); the rest pass through
override N_HEAD: u32 = 16u;
override N_HEAD_KV: u32 = 8u;
override EPS: f32 = 1e-6;
override KV_Q8: bool = false;  // cache type: f16 pairs (false) or Q8_0 (true)
override SCALE_BASE: u32 = 0u; // Q8_0: word offset of the scale region in k_cache / v_cache

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const QK: u32 = 32u; // Q8_0 block

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;      // (n_tokens, n_head, head_dim)
@group(0) @binding(2) var<storage, read> k: array<f32>;            // (n_tokens, n_head_kv, head_dim)
@group(0) @binding(3) var<storage, read> v: array<f32>;            // (n_tokens, n_head_kv, head_dim)
@group(0) @binding(4) var<storage, read> q_norm: array<f32>;       // (head_dim)
@group(0) @binding(5) var<storage, read> k_norm: array<f32>;       // (head_dim)
@group(0) @binding(6) var<storage, read> rope: array<vec2<f32>>;   // (n_ctx, n_rot/2) (cos, sin)
@group(0) @binding(7) var<storage, read_write> k_cache: array<u32>; // f16: (n_ctx, n_head_kv, head_dim/2) f16x2; Q8_0: quants, scales
@group(0) @binding(8) var<storage, read_write> v_cache: array<u32>; // same layout as k_cache

var<workgroup> xs: array<f32, MAX_HEAD_DIM>; // this head's row, normalised then rotated
var<workgroup> red: array<f32, WG>;
var<workgroup> ds: array<f32, 2u * MAX_HEAD_DIM / QK>; // Q8_0: scales of k's blocks, then v's

// Q8_0 of four values with the block's f32 scale d: round(x / d) half away from zero (C's
// roundf; WGSL's round() is half to even), packed little-endian as four i8.
fn quant4(x: vec4<f32>, d: f32) -> u32 {
    let id = select(0.0, 1.0 / d, d != 0.0);
    let y = x * id;
    let q = vec4<i32>(sign(y) * floor(abs(y) + 0.5));
    let b = bitcast<vec4<u32>>(q) & vec4<u32>(0xffu);
    return b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = wid.x;
    let t = wid.y;
    if (t >= step.n_tokens) {
        return;
    }
    let is_q = head < N_HEAD;
    let kvh = head - N_HEAD; // only meaningful when !is_q
    var src = 0u;
    if (is_q) {
        src = (t * N_HEAD + head) * HEAD_DIM;
    } else {
        src = (t * N_HEAD_KV + kvh) * HEAD_DIM;
    }

    var ss = 0.0;
    for (var i = lid; i < HEAD_DIM; i += WG) {
        var x = 0.0;
        if (is_q) {
            x = q[src + i];
        } else {
            x = k[src + i];
        }
        xs[i] = x;
        ss += x * x;
    }
    red[lid] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let scale = inverseSqrt(red[0] / f32(HEAD_DIM) + EPS);

    // Normalise (each thread touches only its own indices, so no barrier needed in between).
    for (var i = lid; i < HEAD_DIM; i += WG) {
        var w = 0.0;
        if (is_q) {
            w = q_norm[i];
        } else {
            w = k_norm[i];
        }
        xs[i] = xs[i] * scale * w;
    }
    workgroupBarrier();

    let half_rot = N_ROT / 2u;
    let pos = step.pos + t;
    for (var i = lid; i < half_rot; i += WG) {
        let cs = rope[pos * half_rot + i];
        let x0 = xs[i];
        let x1 = xs[i + half_rot];
        xs[i] = x0 * cs.x - x1 * cs.y;
        xs[i + half_rot] = x0 * cs.y + x1 * cs.x;
    }
    workgroupBarrier();

    if (is_q) {
        for (var i = lid; i < HEAD_DIM; i += WG) {
            q[src + i] = xs[i];
        }
    } else if (KV_Q8) {
        // One thread per block finds its scale d = max|x| / 127 (k blocks, then v blocks).
        let nb = HEAD_DIM / QK;
        if (lid < 2u * nb) {
            let b = lid % nb;
            var amax = 0.0;
            for (var j = 0u; j < QK; j++) {
                var x = 0.0;
                if (lid < nb) {
                    x = xs[b * QK + j];
                } else {
                    x = v[src + b * QK + j];
                }
                amax = max(amax, abs(x));
            }
            ds[lid] = amax / 127.0;
        }
        workgroupBarrier();
        let row = pos * N_HEAD_KV + kvh;
        let quarter = HEAD_DIM / 4u;
        for (var w = lid; w < quarter; w += WG) {
            let b = 4u * w / QK;
            let i = 4u * w;
            k_cache[row * quarter + w] = quant4(vec4<f32>(xs[i], xs[i + 1u], xs[i + 2u], xs[i + 3u]), ds[b]);
            let vi = src + i;
            v_cache[row * quarter + w] = quant4(vec4<f32>(v[vi], v[vi + 1u], v[vi + 2u], v[vi + 3u]), ds[nb + b]);
        }
        let sw = (nb + 1u) / 2u;
        for (var w = lid; w < sw; w += WG) {
            let hi = 2u * w + 1u < nb;
            let k_hi = select(0.0, ds[min(2u * w + 1u, nb - 1u)], hi);
            let v_hi = select(0.0, ds[nb + min(2u * w + 1u, nb - 1u)], hi);
            k_cache[SCALE_BASE + row * sw + w] = pack2x16float(vec2<f32>(ds[2u * w], k_hi));
            v_cache[SCALE_BASE + row * sw + w] = pack2x16float(vec2<f32>(ds[nb + 2u * w], v_hi));
        }
    } else {
        let half_dim = HEAD_DIM / 2u;
        let dst = (pos * N_HEAD_KV + kvh) * half_dim;
        for (var w = lid; w < half_dim; w += WG) {
            k_cache[dst + w] = pack2x16float(vec2<f32>(xs[2u * w], xs[2u * w + 1u]));
            v_cache[dst + w] = pack2x16float(vec2<f32>(v[src + 2u * w], v[src + 2u * w + 1u]));
        }
    }
}
