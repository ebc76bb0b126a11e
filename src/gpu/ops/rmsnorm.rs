//! RMSNorm over rows (`rmsnorm.wgsl`): `y = x / sqrt(mean(x^2) + eps) * w`.
//! CPU reference: [`crate::cpu::ops::rmsnorm`].

use crate::gpu::buffers::StepParams;
use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, Op, PipelineCache, Shader, split_workgroups};
use crate::{Error, Result};

/// What one RMSNorm reads and writes.
pub struct RmsnormBindings<'a> {
    /// The norm weight: (n) f32.
    pub w: &'a wgpu::Buffer,
    /// Input rows: (n_rows, n) f32; `None` normalises `y` in place.
    pub x: Option<&'a wgpu::Buffer>,
    /// Output rows: (n_rows, n) f32.
    pub y: &'a wgpu::Buffer,
    /// Values per row.
    pub n: u32,
    /// Rows it is built for (the step's `n_tokens` rows are normalised, at most these).
    pub n_rows: u32,
    /// Epsilon added to the mean square.
    pub eps: f32,
}

/// A kernel normalising up to `n_rows` rows of `n` values.
#[derive(Clone, Debug)]
pub struct Rmsnorm {
    /// The dispatch, one workgroup per row.
    pub kernel: Kernel,
    max_per_dim: u32,
}

impl Rmsnorm {
    /// `y[r, :] = rmsnorm(x[r, :]) * w` for `r < n_rows`.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        b: &RmsnormBindings<'_>,
    ) -> Result<Rmsnorm> {
        let (n, n_rows) = (b.n, b.n_rows);
        let need = 4 * n as u64 * n_rows as u64;
        if b.w.size() < 4 * n as u64 || b.y.size() < need || b.x.is_some_and(|x| x.size() < need) {
            return Err(Error::InvalidArgument(format!(
                "rmsnorm: buffers too small for {n_rows} rows of {n}"
            )));
        }
        let overrides = [("N", n as f64), ("EPS", b.eps as f64)];
        let mut bindings = vec![b.w.as_entire_binding(), b.y.as_entire_binding()];
        if let Some(x) = b.x {
            bindings.push(x.as_entire_binding());
        }
        let max_per_dim = ctx.limits.max_compute_workgroups_per_dimension;
        let kernel = Kernel::new(
            ctx,
            cache,
            KernelSpec {
                label: format!("rmsnorm {n_rows}x{n}"),
                shader: Shader::Rmsnorm,
                entry: if b.x.is_some() {
                    "main"
                } else {
                    "main_inplace"
                },
                overrides: &overrides,
                bindings: &bindings,
                workgroups: split_workgroups(n_rows, max_per_dim),
            },
        )?;
        Ok(Rmsnorm {
            kernel,
            max_per_dim,
        })
    }
}

/// Normalises the step's `n_tokens` rows (at most the built count).
impl Op for Rmsnorm {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        let [x, y, _] = self.kernel.workgroups;
        let rows = step.n_tokens.min(x * y);
        self.kernel
            .dispatch_groups(pass, split_workgroups(rows, self.max_per_dim));
    }
}
