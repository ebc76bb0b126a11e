// GPU sampling, step 1 of 3: llama.cpp's repetition, presence and frequency penalties applied in
// place to the logits of the tokens in the penalty window (kept on the GPU in `state`, appended
// to by sample.wgsl). Then topk.wgsl selects the candidates and sample.wgsl draws.
//
// One workgroup; thread i takes window entry i and acts only if it is the entry's first
// occurrence (so each token is penalised once, with its count over the whole window).
// The logits are rewritten by the head every step, so penalties never compound.
//
// Dispatch: (1, 1, 1).

struct SampleParams {
    temperature: f32,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    presence_penalty: f32,
    frequency_penalty: f32,
    top_k: u32,        // 0 = no cut (not used on the GPU: the host falls back to the CPU)
    window: u32,       // penalty_last_n, <= MAX_WINDOW; 0 = penalties off
    seed_lo: u32,
    seed_hi: u32,
    greedy: u32,       // 1: the best candidate after penalties
    penalties: u32,    // 1: apply penalties
}

const MAX_WINDOW: u32 = 256u;
const STATE_WINDOW: u32 = 4u; // state[4 ..] holds the window ring

@group(0) @binding(0) var<uniform> params: SampleParams;
@group(0) @binding(1) var<storage, read> state: array<u32>;        // (4 + MAX_WINDOW) counter, len, next, pad, ring
@group(0) @binding(2) var<storage, read_write> logits: array<f32>; // (n_vocab)

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    let n = min(state[1], MAX_WINDOW);
    if params.penalties == 0u || lid >= n {
        return;
    }
    let id = state[STATE_WINDOW + lid];
    var count = 0u;
    for (var j = 0u; j < n; j++) {
        if state[STATE_WINDOW + j] == id {
            if j < lid {
                return; // an earlier entry of the same token applies the penalty
            }
            count += 1u;
        }
    }
    var l = logits[id];
    if l <= 0.0 {
        l *= params.repeat_penalty;
    } else {
        l /= params.repeat_penalty;
    }
    logits[id] = l - f32(count) * params.frequency_penalty - params.presence_penalty;
}
