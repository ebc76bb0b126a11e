//! RMSNorm over rows (`rmsnorm.wgsl`): `y = x / sqrt(mean(x^2) + eps) * w`.

use crate::gpu::context::GpuContext;
use crate::gpu::kernel::{Kernel, KernelSpec, PipelineCache, Shader, split_workgroups};
use crate::{Error, Result};

/// A kernel normalising `n_rows` rows of `n` values.
#[derive(Clone, Debug)]
pub struct Rmsnorm {
    /// The dispatch, one workgroup per row.
    pub kernel: Kernel,
    max_per_dim: u32,
}

impl Rmsnorm {
    /// `y[r, :] = rmsnorm(x[r, :]) * w` for `r < n_rows`; `x = None` normalises `y` in place
    /// (per-head q/k norms).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        w: &wgpu::Buffer,         // (n) f32
        x: Option<&wgpu::Buffer>, // (n_rows, n) f32
        y: &wgpu::Buffer,         // (n_rows, n) f32
        n: u32,
        n_rows: u32,
        eps: f32,
    ) -> Result<Rmsnorm> {
        let need = 4 * n as u64 * n_rows as u64;
        if w.size() < 4 * n as u64 || y.size() < need || x.is_some_and(|x| x.size() < need) {
            return Err(Error::InvalidArgument(format!(
                "rmsnorm: buffers too small for {n_rows} rows of {n}"
            )));
        }
        let overrides = [("N", n as f64), ("EPS", eps as f64)];
        let mut bindings = vec![w.as_entire_binding(), y.as_entire_binding()];
        if let Some(x) = x {
            bindings.push(x.as_entire_binding());
        }
        let kernel = Kernel::new(
            ctx,
            cache,
            KernelSpec {
                label: format!("rmsnorm {n_rows}x{n}"),
                shader: Shader::Rmsnorm,
                entry: if x.is_some() { "main" } else { "main_inplace" },
                overrides: &overrides,
                bindings: &bindings,
                workgroups: split_workgroups(
                    n_rows,
                    ctx.limits.max_compute_workgroups_per_dimension,
                ),
            },
        )?;
        Ok(Rmsnorm {
            kernel,
            max_per_dim: ctx.limits.max_compute_workgroups_per_dimension,
        })
    }

    /// Records the norm of every row it was built for.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.kernel.encode(pass);
    }

    /// Normalises only the first `n_rows` rows (at most the built count), e.g. a prefill chunk
    /// shorter than the maximum.
    pub fn encode_rows(&self, pass: &mut wgpu::ComputePass<'_>, n_rows: u32) {
        let groups = split_workgroups(n_rows, self.max_per_dim);
        self.kernel.encode_groups(pass, groups);
    }
}

/// CPU reference: normalises each row of `x` (rows of `w.len()`) into `y`.
pub fn run_cpu(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let n = w.len();
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        let ms = xr.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / n as f64;
        let scale = 1.0 / (ms + eps as f64).sqrt();
        for ((yv, xv), wv) in yr.iter_mut().zip(xr).zip(w) {
            *yv = (*xv as f64 * scale * *wv as f64) as f32;
        }
    }
}
