//! What the fused decode ops share: the Q1_0 row core (`shaders/q1_0_rows.wgsl`), its workgroup
//! shape, and the checks every fused kernel makes before it is built.
//!
//! The fused kernels are built without wgpu's runtime bounds checks (see
//! [`Shader::trusted`](crate::gpu::kernel::Shader::trusted)), so these host checks are what keeps their
//! indices in range: each kernel's WGSL header says which index each check bounds.

use crate::gpu::buffers::check_binding;
use crate::gpu::q1_0::{Q1_0Part, Q1_0Weight};
use crate::{Error, Result};

/// Threads per workgroup of the row core (`const WG`).
pub const WG: u32 = 256;

/// Rows per workgroup for a row length of `k`: threads per group of 4 rows is a power of two up
/// to 64 and at most the row's sign words (as in the unfused shared-memory matvec).
pub fn rows_per_workgroup(k: usize) -> u32 {
    let words = (k / 32).max(1) as u32;
    let threads = 1u32 << words.min(64).ilog2();
    4 * WG / threads
}

/// The single part of a fused weight. Fused weights are small next to the binding limit (the
/// largest, 8B's gate|up, is 24 MiB of 128), so they are never split; a split one is an error.
pub fn single_part(w: &Q1_0Weight) -> Result<&Q1_0Part> {
    match w.parts.as_slice() {
        [part] => Ok(part),
        parts => Err(Error::InvalidArgument(format!(
            "fused weight {} is split in {} parts; fused kernels need one binding",
            w.name,
            parts.len()
        ))),
    }
}

/// `x` holds `k` f32 and `k` is a row length the core can walk (a multiple of 128).
pub fn check_input(w: &Q1_0Weight, x: &wgpu::Buffer, what: &str) -> Result<()> {
    if !w.k.is_multiple_of(128) {
        return Err(Error::BadTensor {
            name: w.name.clone(),
            reason: format!("row length {} is not a multiple of 128", w.k),
        });
    }
    check_binding(x, 4 * w.k, what)
}
