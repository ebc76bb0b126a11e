// GPU sampling, step 3 of 3: llama.cpp's chain (top-k -> top-p -> min-p -> temperature -> draw)
// over the KK best candidates of topk.wgsl (penalised logits, best first, ties to the lower id),
// as src/sampler.rs does on the CPU (the reference). The draw uses a counter-based RNG: uniform
// number n of a generation is a hash of (seed, n), so the same seed gives the same tokens on
// the same adapter without any per-step host input. The chosen id goes to `tokens[0]` (the next
// step's input) and into the penalty window; the counter advances.
//
// One thread: at most 64 candidates, a few hundred flops.
// Dispatch: (1, 1, 1).

struct SampleParams {
    temperature: f32,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    presence_penalty: f32,
    frequency_penalty: f32,
    top_k: u32,
    window: u32,
    seed_lo: u32,
    seed_hi: u32,
    greedy: u32,
    penalties: u32,
}

override KK: u32 = 64u; // candidates topk.wgsl keeps, <= 64

const MAX_WINDOW: u32 = 256u;
const STATE_WINDOW: u32 = 4u;
const NONE_IDX: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> params: SampleParams;
@group(0) @binding(1) var<storage, read_write> state: array<u32>;  // (4 + MAX_WINDOW) counter, len, next, pad, ring
@group(0) @binding(2) var<storage, read> cand_val: array<f32>;     // (KK) best first
@group(0) @binding(3) var<storage, read> cand_idx: array<u32>;     // (KK)
@group(0) @binding(4) var<storage, read_write> tokens: array<u32>; // (>= 1) the chosen id at [0]

// Jarzynski & Olano's PCG hash ("Hash Functions for GPU Rendering", 2020). Mirrored by
// `gpu::ops::sampler::random_unit` on the CPU.
fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// Uniform in [0, 1) with 24 random bits: draw `counter` of the stream `seed`.
fn random_unit(counter: u32) -> f32 {
    let key = pcg_hash(params.seed_lo ^ pcg_hash(params.seed_hi));
    return f32(pcg_hash(counter ^ key) >> 8u) * (1.0 / 16777216.0);
}

@compute @workgroup_size(1)
fn main() {
    var n = 0u;
    while n < KK && cand_idx[n] != NONE_IDX {
        n++;
    }
    let counter = state[0];
    state[0] = counter + 1u;
    if n == 0u {
        tokens[0] = NONE_IDX; // no finite logit: the host reports the error when it reads this
        return;
    }
    if params.top_k > 0u {
        n = min(n, params.top_k);
    }
    var choice = 0u;
    if params.greedy == 0u {
        let best = cand_val[0];
        if params.top_p < 1.0 {
            var sum = 0.0;
            for (var i = 0u; i < n; i++) {
                sum += exp(cand_val[i] - best);
            }
            var cum = 0.0;
            for (var i = 0u; i < n; i++) {
                cum += exp(cand_val[i] - best) / sum;
                if cum >= params.top_p {
                    n = i + 1u;
                    break;
                }
            }
        }
        if params.min_p > 0.0 {
            let threshold = best + log(params.min_p);
            var keep = 1u;
            while keep < n && cand_val[keep] >= threshold {
                keep++;
            }
            n = keep;
        }
        let t = params.temperature;
        var sum = 0.0;
        for (var i = 0u; i < n; i++) {
            sum += exp((cand_val[i] - best) / t);
        }
        let u = random_unit(counter) * sum;
        var cum = 0.0;
        choice = n - 1u;
        for (var i = 0u; i < n; i++) {
            cum += exp((cand_val[i] - best) / t);
            if u < cum {
                choice = i;
                break;
            }
        }
    }
    let id = cand_idx[choice];
    tokens[0] = id;
    if params.window > 0u {
        let w = min(params.window, MAX_WINDOW);
        state[STATE_WINDOW + state[2] % w] = id;
        state[2] = (state[2] + 1u) % w;
        state[1] = min(state[1] + 1u, w);
    }
}
