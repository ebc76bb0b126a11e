//! The element type of the KV cache (llama.cpp's `--cache-type-k/-v`, here one type for both).
//!
//! The GPU session stores K and V in this type ([`crate::gpu::kv_cache`] has the layout); the CPU
//! reference keeps an f32 cache and, when given a type, rounds every stored row through it, so it
//! computes exactly what the GPU's cache holds (see [`CacheType::round_trip`]).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::quant::{QK8_0, round_trip_q8_0};

/// How K and V values are stored in the cache.
///
/// The default is [`CacheType::F16`], chosen by measurement (README, "Context and KV cache"):
/// on the one adapter measured (lavapipe, Mesa's CPU Vulkan, 2 cores; synthetic Bonsai-1.7B,
/// `bench -n 8 -d 0,4096 --fast-depth`) attention at depth 4096 added 5.5 CPU-seconds per
/// decoded token with f16 and 6.8 with q8_0 (depth 0: the same cost for both), so there
/// unpacking Q8_0 blocks costs more than the bytes it saves. And f16 stays closest to
/// llama.cpp's default run, where a Q8_0 cache moves the long fixture's last logits to cosine
/// 0.99975 and flips 2 of 44 kept argmaxes. Pick
/// [`CacheType::Q8_0`] when memory is the limit (it halves the cache, so about twice the
/// context fits) or on a GPU whose decode is bandwidth-bound, where reading half the bytes is
/// the point (bonsai-pot reports that its Q8_0 cache roughly halved attention time; no such
/// GPU was available to measure here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CacheType {
    /// IEEE half floats: 16 bits per value, llama.cpp's default, and ours (see above).
    #[default]
    F16,
    /// llama.cpp's Q8_0 blocks: 32 values share an f16 scale `d = max|x| / 127` and each is an
    /// i8 `round(x / d)`: 8.5 bits per value, 47% less memory than f16.
    Q8_0,
}

impl CacheType {
    /// Every type, in the order the tools list them.
    pub const ALL: [CacheType; 2] = [CacheType::F16, CacheType::Q8_0];

    /// The name the tools accept and print (llama.cpp's spelling).
    pub fn name(self) -> &'static str {
        match self {
            CacheType::F16 => "f16",
            CacheType::Q8_0 => "q8_0",
        }
    }

    /// Values per block: a cached head row must be a whole number of blocks.
    pub fn block(self) -> usize {
        match self {
            CacheType::F16 => 1,
            CacheType::Q8_0 => QK8_0,
        }
    }

    /// Rounds one cache row (`n_head_kv * head_dim` f32 values, whole blocks) in place to what
    /// this type stores: f16 round to nearest even, or a Q8_0 quantize + dequantize.
    ///
    /// # Panics
    /// When `row.len()` is not a multiple of [`Self::block`].
    pub fn round_trip(self, row: &mut [f32]) {
        match self {
            CacheType::F16 => {
                for x in row {
                    *x = half::f16::from_f32(*x).to_f32();
                }
            }
            CacheType::Q8_0 => round_trip_q8_0(row),
        }
    }
}

impl fmt::Display for CacheType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CacheType {
    type Err = Error;

    fn from_str(s: &str) -> Result<CacheType> {
        let s = s.trim();
        CacheType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::InvalidArgument(format!("cache type `{s}`: expected f16 or q8_0"))
            })
    }
}
