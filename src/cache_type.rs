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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CacheType {
    /// IEEE half floats: 16 bits per value, llama.cpp's default.
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
