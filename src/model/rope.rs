//! Rotary position embedding parameters, NEOX layout, with YaRN context extension: ggml's
//! `rope_yarn` angles. Part of the model description: the CPU reference rotates with
//! [`RopeParams::cos_sin`] ([`crate::cpu::ops::rope_neox`]) and the GPU's RoPE table is filled
//! from it ([`crate::gpu::kv_cache`]).

use std::f32::consts::PI;

/// YaRN `beta_fast` when the file has no `rope.scaling.yarn_beta_fast` (llama.cpp's default).
pub const DEFAULT_BETA_FAST: f32 = 32.0;
/// YaRN `beta_slow` when the file has no `rope.scaling.yarn_beta_slow` (llama.cpp's default).
pub const DEFAULT_BETA_SLOW: f32 = 1.0;
/// Base frequency when the file has no `rope.freq_base`.
pub const DEFAULT_FREQ_BASE: f32 = 10_000.0;

/// Everything RoPE needs; the same numbers drive the CPU reference and the GPU kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    /// Rotated dimensions per head (= head_dim for Qwen3).
    pub n_rot: usize,
    /// Base of the rotation frequencies (`rope.freq_base`).
    pub freq_base: f32,
    /// Position interpolation factor: 1/`rope.scaling.factor` for YaRN, 1 without scaling.
    pub freq_scale: f32,
    /// Mix between interpolated and extrapolated angles: 1 for YaRN, 0 without.
    pub ext_factor: f32,
    /// Extra scale on cos/sin before YaRN's own magnitude correction.
    pub attn_factor: f32,
    /// YaRN: dimensions rotating faster than this many turns over n_ctx_orig are extrapolated.
    pub beta_fast: f32,
    /// YaRN: dimensions rotating slower than this are fully interpolated.
    pub beta_slow: f32,
    /// Context length the model was pre-trained with (`rope.scaling.original_context_length`).
    pub n_ctx_orig: usize,
}

impl RopeParams {
    /// YaRN scaling by `factor` from a pre-training context of `n_ctx_orig`, with llama.cpp's
    /// defaults for everything the file may leave out (ext_factor 1, attn_factor 1, betas).
    pub fn yarn(n_rot: usize, freq_base: f32, factor: f32, n_ctx_orig: usize) -> RopeParams {
        RopeParams {
            n_rot,
            freq_base,
            freq_scale: 1.0 / factor,
            ext_factor: 1.0,
            attn_factor: 1.0,
            beta_fast: DEFAULT_BETA_FAST,
            beta_slow: DEFAULT_BETA_SLOW,
            n_ctx_orig,
        }
    }

    /// ggml's `rope_yarn_corr_dims`: the first and last dimension of the interpolation ramp.
    pub fn corr_dims(&self) -> [f32; 2] {
        let corr_dim = |n_rotations: f32| {
            self.n_rot as f32 * (self.n_ctx_orig as f32 / (n_rotations * 2.0 * PI)).ln()
                / (2.0 * self.freq_base.ln())
        };
        let start = corr_dim(self.beta_fast).floor();
        let end = corr_dim(self.beta_slow).ceil();
        [start.max(0.0), end.min(self.n_rot as f32 - 1.0)]
    }

    /// Magnitude applied to cos and sin: attn_factor, times YaRN's 1 + 0.1 ln(1/freq_scale).
    pub fn mscale(&self) -> f32 {
        if self.ext_factor != 0.0 {
            self.attn_factor * (1.0 + 0.1 * (1.0 / self.freq_scale).ln())
        } else {
            self.attn_factor
        }
    }

    /// The angle for position `pos` and even dimension index `i0` (0, 2, .., n_rot-2).
    pub fn theta(&self, pos: usize, i0: usize) -> f32 {
        let theta_scale = self.freq_base.powf(-2.0 / self.n_rot as f32);
        let theta_extrap = pos as f32 * theta_scale.powi((i0 / 2) as i32);
        let theta_interp = self.freq_scale * theta_extrap;
        if self.ext_factor == 0.0 {
            return theta_interp;
        }
        let [low, high] = self.corr_dims();
        let ramp_mix = yarn_ramp(low, high, i0) * self.ext_factor;
        theta_interp * (1.0 - ramp_mix) + theta_extrap * ramp_mix
    }

    /// (cos, sin) of the angle at (`pos`, `i0`), both multiplied by [`Self::mscale`].
    pub fn cos_sin(&self, pos: usize, i0: usize) -> (f32, f32) {
        let theta = self.theta(pos, i0);
        let mscale = self.mscale();
        (theta.cos() * mscale, theta.sin() * mscale)
    }
}

/// ggml's `rope_yarn_ramp`: 1 below `low` (extrapolate), 0 above `high` (interpolate).
fn yarn_ramp(low: f32, high: f32, i0: usize) -> f32 {
    let y = (i0 as f32 / 2.0 - low) / (high - low).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}
