// Attention of one query token over the KV cache, split into chunks of CHUNK positions
// (flash-decoding). Each workgroup takes one kv head and one chunk, computes the scores of all
// GROUP = n_head / n_head_kv query heads that share that kv head (so K and V are read once per
// group), and writes an unnormalised partial result: the chunk's score max m, the sum l of
// exp(score - m) and sum exp(score - m) * v. attention_merge.wgsl combines the chunks.
//
// Small chunks keep many workgroups busy at short contexts and keep every thread's serial loops
// short: WG / CHUNK threads ("lanes") share one position's K row, and in the V phase the threads
// split the chunk's positions into slices that are summed through shared memory at the end.
//
// Dispatch: (n_head_kv, max_chunks, 1) with max_chunks = ceil(n_ctx / CHUNK): the bind group and
// dispatch size never change; workgroups whose chunk starts at or past step.n_kv exit at once.
//
// The cache is f16 pairs or (KV_Q8) Q8_0 blocks (layout in kv_cache.rs); k8 / v8 read 8 values
// of a row either way, straight from the cache.
//
// ROPE (the fused decode plan): `q` is the q|k|v matvec output of the token at pos = n_kv - 1
// for the input x_res * attn_norm: the prologue first scales it by 1/rms(x_res) (the attention
// norm, folded here so that the q|k|v matvec has no barrier), then does what qk_norm_rope.wgsl
// does for one token: each workgroup normalises
// and rotates its group's query heads into q_sh, and the one workgroup whose chunk holds pos
// (per kv head) normalises and rotates k, writes k and v into the cache at pos, and makes the
// writes visible to its own threads (storageBarrier) before it reads the chunk. No other
// workgroup reads position pos, so no ordering between workgroups is needed. When the context is
// one chunk (n_kv <= CHUNK) the partial is final: part_o is written divided by l, so the Wo
// matvec's MERGE_ONE loads it as it is (part_ml keeps m and l either way).
//
// SINGLE (the unfused plan, when n_kv <= CHUNK): the host binds the attention output as part_o
// with MAX_CHUNKS = 1 and dispatches chunk 0 only; the partial, divided by l, is the output and
// no merge runs.

struct StepParams {
    n_tokens: u32,
    pos: u32,
    n_kv: u32, // positions 0 .. n_kv are attended (the query token is at n_kv - 1)
    _pad: u32,
}

override HEAD_DIM: u32 = 128u;   // multiple of 8; GROUP * HEAD_DIM <= MAX_Q
override N_HEAD_KV: u32 = 8u;
override GROUP: u32 = 2u;        // n_head / n_head_kv, <= MAX_GROUP
override CHUNK: u32 = 64u;       // positions per workgroup: 32, 64 or 128
override MAX_CHUNKS: u32 = 512u; // ceil(n_ctx / CHUNK): stride of the partial buffers
override SCALE: f32 = 0.08838834764831845; // 1 / sqrt(head_dim)
override KV_Q8: bool = false;  // cache type: f16 pairs (false) or Q8_0 (true)
override SCALE_BASE: u32 = 0u; // Q8_0: word offset of the scale region in k_cache / v_cache
override ROPE: bool = false;   // q is q|k|v of one token: QK-norm, RoPE and the cache write here
override N_ROT: u32 = 128u;    // ROPE: rotated dims (even, <= HEAD_DIM)
override EPS: f32 = 1e-6;      // ROPE: QK-norm and attention-norm epsilon
override N_EMBD: u32 = 2048u;  // ROPE: length of x_res
override SINGLE: bool = false; // the context is one chunk and part_o is the output (n_head, head_dim)

const WG: u32 = 128u;
const MAX_GROUP: u32 = 8u;
const MAX_Q: u32 = 1024u;
const MAX_CHUNK: u32 = 128u;
const SPAN: u32 = 16u;   // softmax threads per query head: WG / MAX_GROUP
const NEG_BIG: f32 = -1.0e30;

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;                 // (n_head, head_dim); ROPE: q|k|v (n_head + 2 n_head_kv, head_dim)
@group(0) @binding(2) var<storage, read_write> k_cache: array<vec4<u32>>; // f16: (n_ctx, n_head_kv, head_dim/8) 4 x f16x2; Q8_0: quants, scales
@group(0) @binding(3) var<storage, read_write> v_cache: array<vec4<u32>>; // same layout as k_cache
@group(0) @binding(4) var<storage, read_write> part_o: array<f32>;      // (n_head, max_chunks, head_dim)
@group(0) @binding(5) var<storage, read_write> part_ml: array<vec2<f32>>; // (n_head, max_chunks) (max, sum)
@group(0) @binding(6) var<storage, read> qk_norm: array<f32>;           // ROPE: attn_q_norm (head_dim), then attn_k_norm (head_dim)
@group(0) @binding(7) var<storage, read> rope: array<vec2<f32>>;        // ROPE: (n_ctx, n_rot/2) (cos, sin)
@group(0) @binding(8) var<storage, read> x_res: array<vec4<f32>>;       // ROPE: (n_embd / 4) the residual before the attention norm

var<workgroup> q_sh: array<f32, MAX_Q>;                  // (group, head_dim)
var<workgroup> p_sh: array<f32, MAX_GROUP * MAX_CHUNK>;  // (group, chunk) scores, then exp(score - m)
var<workgroup> scratch: array<f32, WG * 8u>;             // (thread, group) lane scores, then (thread, 8) V sums
var<workgroup> red_m: array<f32, WG>;                    // (group, SPAN) partial maxima of the scores
var<workgroup> red_l: array<f32, WG>;                    // (group, SPAN) partial sums of exp
var<workgroup> l_sh: array<f32, MAX_GROUP>;              // (group) chunk sum of exp
var<workgroup> kv_sh: array<f32, 2u * MAX_HEAD>;         // ROPE: k then v of the token
var<workgroup> ds: array<f32, 2u * MAX_HEAD / 32u>;      // ROPE, Q8_0: scales of k's blocks, then v's

const MAX_HEAD: u32 = 256u;
const QK: u32 = 32u; // Q8_0 block

fn unpack8(w: vec4<u32>) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(
        vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
        vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)),
    );
}

// Four i8 (little-endian in a word) to f32.
fn i8x4(w: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w << 24u, w << 16u, w << 8u, w)) >> vec4<u32>(24u));
}

// Q8_0: the two quant words of values 8 * w4 .. 8 * w4 + 8 of cache row `row`, and the word
// holding their block's scale (the caller indexes its buffer with them).
fn q8_quant_word(row: u32, w4: u32) -> u32 {
    return row * (HEAD_DIM / 4u) + 2u * w4;
}
fn q8_scale_word(row: u32, w4: u32) -> u32 {
    return SCALE_BASE + row * ((HEAD_DIM / 32u + 1u) / 2u) + w4 / 8u;
}
fn q8_dequant8(quants: vec4<u32>, qw: u32, scales: vec4<u32>, sw: u32, w4: u32) -> array<vec4<f32>, 2> {
    let pair = select(quants.xy, quants.zw, (qw & 2u) != 0u);
    let d = unpack2x16float(scales[sw & 3u])[(w4 / 4u) & 1u];
    return array<vec4<f32>, 2>(i8x4(pair.x) * d, i8x4(pair.y) * d);
}

// Values 8 * w4 .. 8 * w4 + 8 of K row `row` (= position * N_HEAD_KV + kv head).
fn k8(row: u32, w4: u32) -> array<vec4<f32>, 2> {
    if (KV_Q8) {
        let qw = q8_quant_word(row, w4);
        let sw = q8_scale_word(row, w4);
        return q8_dequant8(k_cache[qw >> 2u], qw, k_cache[sw >> 2u], sw, w4);
    }
    return unpack8(k_cache[row * (HEAD_DIM / 8u) + w4]);
}

// As k8 for V.
fn v8(row: u32, w4: u32) -> array<vec4<f32>, 2> {
    if (KV_Q8) {
        let qw = q8_quant_word(row, w4);
        let sw = q8_scale_word(row, w4);
        return q8_dequant8(v_cache[qw >> 2u], qw, v_cache[sw >> 2u], sw, w4);
    }
    return unpack8(v_cache[row * (HEAD_DIM / 8u) + w4]);
}

// q . k over dims qo % HEAD_DIM .. + 8 of the query head at qo / HEAD_DIM, kk from k8.
fn q_dot8(qo: u32, kk: array<vec4<f32>, 2>) -> f32 {
    let q0 = vec4<f32>(q_sh[qo], q_sh[qo + 1u], q_sh[qo + 2u], q_sh[qo + 3u]);
    let q1 = vec4<f32>(q_sh[qo + 4u], q_sh[qo + 5u], q_sh[qo + 6u], q_sh[qo + 7u]);
    return dot(q0, kk[0]) + dot(q1, kk[1]);
}

// ROPE: 1/rms(x_res), the attention norm's scale. Every thread calls it.
fn attn_norm_scale(lid: u32) -> f32 {
    var ss = 0.0;
    for (var i = lid; i < N_EMBD / 4u; i += WG) {
        let v = x_res[i];
        ss += dot(v, v);
    }
    scratch[lid] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            scratch[lid] += scratch[lid + s];
        }
        workgroupBarrier();
    }
    let scale = inverseSqrt(scratch[0] / f32(N_EMBD) + EPS);
    workgroupBarrier();
    return scale;
}

// ROPE: RMSNorm (attn_k_norm when is_k, else attn_q_norm) and NEOX RoPE at `pos`, in place,
// of the head row at `off` of q_sh (queries) or kv_sh (is_k). Every thread calls it.
fn norm_rope(lid: u32, off: u32, is_k: bool, pos: u32) {
    var ss = 0.0;
    for (var i = lid; i < HEAD_DIM; i += WG) {
        let x = select(q_sh[off + i], kv_sh[i], is_k);
        ss += x * x;
    }
    scratch[lid] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            scratch[lid] += scratch[lid + s];
        }
        workgroupBarrier();
    }
    let scale = inverseSqrt(scratch[0] / f32(HEAD_DIM) + EPS);
    workgroupBarrier();
    let half_rot = N_ROT / 2u;
    for (var i = lid; i < HEAD_DIM; i += WG) {
        // Each thread normalises and rotates pairs (i, i + half_rot) it owns: i < half_rot.
        if (i < half_rot) {
            let nw = select(0u, HEAD_DIM, is_k);
            let w0 = qk_norm[nw + i];
            let w1 = qk_norm[nw + i + half_rot];
            let x0 = select(q_sh[off + i], kv_sh[i], is_k) * scale * w0;
            let x1 = select(q_sh[off + i + half_rot], kv_sh[i + half_rot], is_k) * scale * w1;
            let cs = rope[pos * half_rot + i];
            let r0 = x0 * cs.x - x1 * cs.y;
            let r1 = x0 * cs.y + x1 * cs.x;
            if (is_k) {
                kv_sh[i] = r0;
                kv_sh[i + half_rot] = r1;
            } else {
                q_sh[off + i] = r0;
                q_sh[off + i + half_rot] = r1;
            }
        } else if (i >= N_ROT) {
            let w = qk_norm[select(0u, HEAD_DIM, is_k) + i];
            if (is_k) {
                kv_sh[i] = kv_sh[i] * scale * w;
            } else {
                q_sh[off + i] = q_sh[off + i] * scale * w;
            }
        }
    }
    workgroupBarrier();
}

// Q8_0 of four values with the block's f32 scale d: round(x / d) half away from zero (as
// qk_norm_rope.wgsl and llama.cpp's quantize_row_q8_0_ref), packed little-endian as four i8.
fn quant4(x: vec4<f32>, d: f32) -> u32 {
    let id = select(0.0, 1.0 / d, d != 0.0);
    let y = x * id;
    let qv = vec4<i32>(sign(y) * floor(abs(y) + 0.5));
    let b = bitcast<vec4<u32>>(qv) & vec4<u32>(0xffu);
    return b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);
}

// ROPE: k (normalised, rotated) and v of kv head `kvh` from kv_sh into the cache at `pos`.
fn write_kv(lid: u32, kvh: u32, pos: u32) {
    let row = pos * N_HEAD_KV + kvh;
    if (KV_Q8) {
        // At least 1: a Q8_0 cache has head_dim >= 32, but this branch is also built (not
        // run) for f16 caches of head_dim 16.
        let nb = max(HEAD_DIM / QK, 1u);
        if (lid < 2u * nb) {
            let base = select(0u, HEAD_DIM, lid >= nb) + (lid % nb) * QK;
            var amax = 0.0;
            for (var j = 0u; j < QK; j++) {
                amax = max(amax, abs(kv_sh[base + j]));
            }
            ds[lid] = amax / 127.0;
        }
        workgroupBarrier();
        // Quants: word w of the row's HEAD_DIM / 4 words holds values 4w .. 4w + 4.
        let quarter = HEAD_DIM / 4u;
        for (var w = lid; w < quarter; w += WG) {
            let i = 4u * w;
            let b = i / QK;
            let word = row * quarter + w;
            let kq = quant4(vec4<f32>(kv_sh[i], kv_sh[i + 1u], kv_sh[i + 2u], kv_sh[i + 3u]), ds[b]);
            let j = HEAD_DIM + i;
            let vq = quant4(vec4<f32>(kv_sh[j], kv_sh[j + 1u], kv_sh[j + 2u], kv_sh[j + 3u]), ds[nb + b]);
            k_cache[word >> 2u][word & 3u] = kq;
            v_cache[word >> 2u][word & 3u] = vq;
        }
        let sw = (nb + 1u) / 2u;
        for (var w = lid; w < sw; w += WG) {
            let hi = 2u * w + 1u < nb;
            let k_hi = select(0.0, ds[min(2u * w + 1u, nb - 1u)], hi);
            let v_hi = select(0.0, ds[nb + min(2u * w + 1u, nb - 1u)], hi);
            let word = SCALE_BASE + row * sw + w;
            k_cache[word >> 2u][word & 3u] = pack2x16float(vec2<f32>(ds[2u * w], k_hi));
            v_cache[word >> 2u][word & 3u] = pack2x16float(vec2<f32>(ds[nb + 2u * w], v_hi));
        }
    } else {
        // 8 values (4 f16 pairs) per vec4 word.
        for (var w = lid; w < HEAD_DIM / 8u; w += WG) {
            let i = 8u * w;
            var kw: vec4<u32>;
            var vw: vec4<u32>;
            for (var e = 0u; e < 4u; e++) {
                kw[e] = pack2x16float(vec2<f32>(kv_sh[i + 2u * e], kv_sh[i + 2u * e + 1u]));
                vw[e] = pack2x16float(vec2<f32>(kv_sh[HEAD_DIM + i + 2u * e], kv_sh[HEAD_DIM + i + 2u * e + 1u]));
            }
            k_cache[row * (HEAD_DIM / 8u) + w] = kw;
            v_cache[row * (HEAD_DIM / 8u) + w] = vw;
        }
    }
    // The chunk loop below reads this row back through the cache.
    storageBarrier();
    workgroupBarrier();
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let kvh = wid.x;
    let chunk = wid.y;
    let n_kv = step.n_kv;
    let start = chunk * CHUNK;
    if (start >= n_kv) {
        return;
    }
    let n_valid = min(CHUNK, n_kv - start);
    let row_vec4 = HEAD_DIM / 8u;
    let head0 = kvh * GROUP; // the group's query heads are head0 .. head0 + GROUP

    if (ROPE) {
        let pos = n_kv - 1u;
        let q_dim = N_HEAD_KV * GROUP * HEAD_DIM;
        let an = attn_norm_scale(lid);
        for (var i = lid; i < GROUP * HEAD_DIM; i += WG) {
            q_sh[i] = q[head0 * HEAD_DIM + i] * an;
        }
        if (start + CHUNK > pos) {
            // This workgroup's chunk holds pos: it writes the token's k and v.
            let k0 = q_dim + kvh * HEAD_DIM;
            let v0 = q_dim + N_HEAD_KV * HEAD_DIM + kvh * HEAD_DIM;
            for (var i = lid; i < HEAD_DIM; i += WG) {
                kv_sh[i] = q[k0 + i] * an;
                kv_sh[HEAD_DIM + i] = q[v0 + i] * an;
            }
        }
        workgroupBarrier();
        for (var g = 0u; g < GROUP; g++) {
            norm_rope(lid, g * HEAD_DIM, false, pos);
        }
        if (start + CHUNK > pos) {
            norm_rope(lid, 0u, true, pos);
            write_kv(lid, kvh, pos);
        }
    } else {
        for (var i = lid; i < GROUP * HEAD_DIM; i += WG) {
            q_sh[i] = q[head0 * HEAD_DIM + i];
        }
        workgroupBarrier();
    }

    // Scores: `lanes` threads per position, each over every lanes-th 8 dims of the K row.
    let lanes = WG / CHUNK;
    let pl = lid / lanes;
    let lane = lid % lanes;
    var s: array<f32, MAX_GROUP>;
    for (var g = 0u; g < GROUP; g++) {
        s[g] = 0.0;
    }
    if (pl < n_valid) {
        let row = (start + pl) * N_HEAD_KV + kvh;
        // Two K loads in flight per round (row_vec4 is even; lanes divides it or exceeds it).
        var w4 = lane;
        for (; w4 + lanes < row_vec4; w4 += 2u * lanes) {
            let ka = k8(row, w4);
            let kb = k8(row, w4 + lanes);
            for (var g = 0u; g < GROUP; g++) {
                s[g] += q_dot8(g * HEAD_DIM + 8u * w4, ka) + q_dot8(g * HEAD_DIM + 8u * (w4 + lanes), kb);
            }
        }
        if (w4 < row_vec4) {
            let ka = k8(row, w4);
            for (var g = 0u; g < GROUP; g++) {
                s[g] += q_dot8(g * HEAD_DIM + 8u * w4, ka);
            }
        }
    }
    for (var g = 0u; g < GROUP; g++) {
        scratch[lid * MAX_GROUP + g] = s[g];
    }
    workgroupBarrier();

    // Softmax of the chunk, SPAN threads per query head of the group (thread lid = head sh,
    // slot st): each sums the lane partials of positions st, st + SPAN, ... into scores and
    // takes their max; after one exchange every thread of the head has the chunk max, turns its
    // own scores into exp(score - m) and sums them; a second exchange gives the sum. Two
    // barriers, and no thread walks the whole chunk.
    let sh = lid / SPAN;
    let st = lid % SPAN;
    var m_part = NEG_BIG;
    if (sh < GROUP) {
        for (var p = st; p < n_valid; p += SPAN) {
            var t = 0.0;
            for (var l = 0u; l < lanes; l++) {
                t += scratch[(p * lanes + l) * MAX_GROUP + sh];
            }
            let sc = t * SCALE;
            p_sh[sh * CHUNK + p] = sc;
            m_part = max(m_part, sc);
        }
    }
    red_m[lid] = m_part;
    workgroupBarrier();
    var m = NEG_BIG;
    var l_part = 0.0;
    if (sh < GROUP) {
        for (var i = 0u; i < SPAN; i++) {
            m = max(m, red_m[sh * SPAN + i]);
        }
        // The same positions this thread wrote: no barrier between.
        for (var p = st; p < n_valid; p += SPAN) {
            let e = exp(p_sh[sh * CHUNK + p] - m);
            p_sh[sh * CHUNK + p] = e;
            l_part += e;
        }
    }
    red_l[lid] = l_part;
    workgroupBarrier();
    if (sh < GROUP && st == 0u) {
        var l = 0.0;
        for (var i = 0u; i < SPAN; i++) {
            l += red_l[sh * SPAN + i];
        }
        part_ml[(head0 + sh) * MAX_CHUNKS + chunk] = vec2<f32>(m, l);
        l_sh[sh] = l;
    }

    // Weighted sum of V: thread = (slice, head of group, 8 dims); a slice takes every
    // slices-th position, and consecutive threads read consecutive 16 bytes of a V row.
    let pairs = GROUP * row_vec4; // <= WG since GROUP * HEAD_DIM <= MAX_Q
    let slices = WG / pairs;
    let slice = lid / pairs;
    let pr = lid % pairs;
    let g = pr / row_vec4;
    let w4 = pr % row_vec4;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    if (slice < slices) {
        // Two V loads in flight per round.
        var j = slice;
        for (; j + slices < n_valid; j += 2u * slices) {
            let va = v8((start + j) * N_HEAD_KV + kvh, w4);
            let vb = v8((start + j + slices) * N_HEAD_KV + kvh, w4);
            let pa = p_sh[g * CHUNK + j];
            let pb = p_sh[g * CHUNK + j + slices];
            acc0 += pa * va[0] + pb * vb[0];
            acc1 += pa * va[1] + pb * vb[1];
        }
        if (j < n_valid) {
            let p = p_sh[g * CHUNK + j];
            let vv = v8((start + j) * N_HEAD_KV + kvh, w4);
            acc0 += p * vv[0];
            acc1 += p * vv[1];
        }
    }
    for (var e = 0u; e < 4u; e++) {
        scratch[lid * 8u + e] = acc0[e];
        scratch[lid * 8u + 4u + e] = acc1[e];
    }
    workgroupBarrier();
    if (lid < pairs) {
        let dst = ((head0 + g) * MAX_CHUNKS + chunk) * HEAD_DIM + 8u * w4;
        // One chunk (ROPE, or SINGLE: part_o is the output): the final output (l > 0: the
        // query's own position is live).
        var inv_l = 1.0;
        if ((ROPE && n_kv <= CHUNK) || SINGLE) {
            inv_l = 1.0 / l_sh[g];
        }
        for (var e = 0u; e < 8u; e++) {
            var t = 0.0;
            for (var sl = 0u; sl < slices; sl++) {
                t += scratch[(sl * pairs + lid) * 8u + e];
            }
            part_o[dst + e] = t * inv_l;
        }
    }
}
