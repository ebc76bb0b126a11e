//! SwiGLU gate (`silu_mul.wgsl`): `hb = silu(hb) * hb2`, in place on `hb`.
//! CPU reference: [`crate::cpu::ops::silu_mul`].

use crate::gpu::buffers::StepParams;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, Op, PipelineCache, Shader, split_workgroups};
use crate::{Error, Result};

/// Threads per workgroup of `silu_mul.wgsl`, one value each.
const WG: u32 = 256;

/// What the gate reads and writes.
pub struct SiluMulBindings<'a> {
    /// ffn_gate output in, the gated result out: (max_tokens, n) f32.
    pub hb: &'a wgpu::Buffer,
    /// ffn_up output: (max_tokens, n) f32.
    pub hb2: &'a wgpu::Buffer,
    /// Values per token (n_ff).
    pub n: u32,
    /// Tokens it is built for (the step's `n_tokens` rows are gated, at most these).
    pub max_tokens: u32,
}

/// The gate over up to `max_tokens` rows of `n` values.
#[derive(Clone, Debug)]
pub struct SiluMul {
    /// The dispatch, sized for `max_tokens` rows.
    pub kernel: Kernel,
    n: u32,
    max_tokens: u32,
    max_per_dim: u32,
}

impl SiluMul {
    /// `hb = silu(hb) * hb2` over `max_tokens * n` values.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        b: &SiluMulBindings<'_>,
    ) -> Result<SiluMul> {
        let total = b.n * b.max_tokens;
        if b.hb.size() < 4 * total as u64 || b.hb2.size() < 4 * total as u64 {
            return Err(Error::InvalidArgument(format!(
                "silu_mul: buffers too small for {} rows of {}",
                b.max_tokens, b.n
            )));
        }
        let max_per_dim = ctx.limits.max_compute_workgroups_per_dimension;
        let kernel = Kernel::new(
            ctx,
            cache,
            KernelSpec {
                label: format!("silu_mul {}x{}", b.max_tokens, b.n),
                shader: Shader::SiluMul,
                entry: "main",
                overrides: &[("N", total as f64)],
                bindings: &[b.hb.as_entire_binding(), b.hb2.as_entire_binding()],
                workgroups: split_workgroups(total.div_ceil(WG), max_per_dim),
            },
        )?;
        Ok(SiluMul {
            kernel,
            n: b.n,
            max_tokens: b.max_tokens,
            max_per_dim,
        })
    }
}

/// Gates the step's `n_tokens` rows (at most the built count).
impl Op for SiluMul {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        let total = self.n * step.n_tokens.min(self.max_tokens);
        self.kernel
            .dispatch_groups(pass, split_workgroups(total.div_ceil(WG), self.max_per_dim));
    }
}
