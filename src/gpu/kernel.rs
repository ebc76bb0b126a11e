//! The kernel framework: shader table, pipeline cache and [`Kernel`] values.
//!
//! An op is a *value*: a pipeline, a static bind group and a dispatch size, built once at load
//! time. The caller records any number of kernels into one compute pass and submits once.
//! Everything that changes per step (position, token count, ...) lives in one small
//! [`StepParams`](super::buffers::StepParams) buffer written with `queue.write_buffer`, so bind
//! groups never change.

use std::collections::HashMap;
use std::sync::Mutex;

use super::buffers::StepParams;
use super::context::GpuContext;
pub use super::shaders::{DOT4_I8_PORTABLE, Shader, ShaderNeeds};
use crate::{Error, Result};

/// GPU work recorded into a compute pass: one kernel, an op of several kernels, or a step of the
/// forward pass made of ops. The one encode interface of the crate.
///
/// `step` mirrors the step's [`StepParams`] uniform (tokens, position, keys). Ops are built
/// for a maximum (batch, context) and use it to dispatch only the workgroups this step needs;
/// the shaders read the same values from the uniform.
pub trait Op {
    /// Records this op's dispatches for `step` into `pass`.
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams);
}

/// A composite op: its parts in order.
impl<T: Op> Op for [T] {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        for op in self {
            op.encode(pass, step);
        }
    }
}

impl<T: Op> Op for Vec<T> {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        self.as_slice().encode(pass, step);
    }
}

impl<T: Op + ?Sized> Op for Box<T> {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        (**self).encode(pass, step);
    }
}

/// One op for a single token and another for a batch, picked by the step's `n_tokens`: a matvec
/// and a matmul, flash-decoding and prefill attention. The step list holds one value either way.
#[derive(Clone, Debug)]
pub struct DecodeOrPrefill<D, P> {
    /// Encoded when the step has one token.
    pub decode: D,
    /// Encoded when the step has several.
    pub prefill: P,
}

impl<D: Op, P: Op> Op for DecodeOrPrefill<D, P> {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        if step.n_tokens == 1 {
            self.decode.encode(pass, step);
        } else {
            self.prefill.encode(pass, step);
        }
    }
}

/// A kernel dispatches every workgroup it was built for, whatever the step.
impl Op for Kernel {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, _step: &StepParams) {
        self.dispatch(pass);
    }
}

/// Override constants of one pipeline, `(name, value)`; WGSL `override` values are f64 in wgpu.
pub type Overrides = Vec<(&'static str, f64)>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: Shader,
    entry: &'static str,
    /// Override names and the bit patterns of their values, in the caller's order.
    overrides: Vec<(&'static str, u64)>,
}

/// Pipelines keyed by (shader, entry point, override constants); modules compiled once each.
#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    unused: Mutex<Option<UnusedBindings>>,
}

/// Buffers bound where a kernel's options leave a binding unread or unwritten (a pipeline's
/// layout lists every binding its entry point mentions, whatever the override constants).
#[derive(Clone, Debug)]
pub struct UnusedBindings {
    /// A 16-byte uniform.
    pub uniform: wgpu::Buffer,
    /// Two distinct 16-byte storage buffers (writable bindings must not alias).
    pub storage: [wgpu::Buffer; 2],
}

impl PipelineCache {
    /// An empty cache; modules and pipelines are built on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of distinct pipelines built so far.
    pub fn len(&self) -> usize {
        self.pipelines.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// The placeholder buffers of [`UnusedBindings`], made once per cache.
    pub fn unused(&self, ctx: &GpuContext) -> Result<UnusedBindings> {
        let mut unused = self
            .unused
            .lock()
            .map_err(|_| Error::Gpu("pipeline cache lock poisoned".into()))?;
        if let Some(u) = unused.as_ref() {
            return Ok(u.clone());
        }
        let buffer = |label: &str, usage: wgpu::BufferUsages| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage,
                mapped_at_creation: false,
            })
        };
        let u = UnusedBindings {
            uniform: buffer("unused uniform", wgpu::BufferUsages::UNIFORM),
            storage: [
                buffer("unused storage 0", wgpu::BufferUsages::STORAGE),
                buffer("unused storage 1", wgpu::BufferUsages::STORAGE),
            ],
        };
        *unused = Some(u.clone());
        Ok(u)
    }

    /// Whether no pipeline has been built yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the pipeline for `shader`/`entry` specialised with `overrides`, building it once.
    pub fn get(
        &self,
        ctx: &GpuContext,
        shader: Shader,
        entry: &'static str,
        overrides: &[(&'static str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let needs = shader.needs();
        if needs.subgroups && !ctx.features.has_subgroups {
            return Err(Error::Gpu(format!(
                "shader {} needs subgroups, which {} lacks",
                shader.name(),
                ctx.info.name
            )));
        }
        let key = PipelineKey {
            shader,
            entry,
            overrides: overrides.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        };
        fn poisoned<T>(_: T) -> Error {
            Error::Gpu("pipeline cache lock poisoned".into())
        }
        if let Some(p) = self.pipelines.lock().map_err(poisoned)?.get(&key) {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = self.modules.lock().map_err(poisoned)?;
            modules
                .entry(shader)
                .or_insert_with(|| {
                    let desc = wgpu::ShaderModuleDescriptor {
                        label: Some(shader.name()),
                        source: wgpu::ShaderSource::Wgsl(shader.source_for(ctx.info.backend)),
                    };
                    if shader.trusted() && !ctx.checked_shaders {
                        // SAFETY: a trusted shader's indices stay in range by construction (its
                        // WGSL header says why; its op checks every bound buffer against the
                        // overrides before the kernel is built) and its loops are bounded by
                        // overrides. The suite runs every kernel checked too
                        // (`GpuOptions::checked_shaders`, tests/gpu_generate.rs).
                        unsafe {
                            ctx.device.create_shader_module_trusted(
                                desc,
                                wgpu::ShaderRuntimeChecks::unchecked(),
                            )
                        }
                    } else {
                        ctx.device.create_shader_module(desc)
                    }
                })
                .clone()
        };
        let label = format!("{}::{entry}", shader.name());
        let pipeline = ctx
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: overrides,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        self.pipelines
            .lock()
            .map_err(poisoned)?
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }
}

/// One recorded dispatch: pipeline, static bindings (group 0) and workgroup counts.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// Debug label of the bind group (shown in GPU debuggers and assertion messages).
    pub label: String,
    /// The specialised compute pipeline, shared through the [`PipelineCache`].
    pub pipeline: wgpu::ComputePipeline,
    /// Bind group 0, fixed for the kernel's lifetime.
    pub bind_group: wgpu::BindGroup,
    /// Workgroup counts passed to `dispatch_workgroups`.
    pub workgroups: [u32; 3],
}

/// Everything needed to build a [`Kernel`]; `bindings[i]` goes to `@binding(i)` of group 0.
pub struct KernelSpec<'a> {
    /// Debug label of the kernel.
    pub label: String,
    /// The WGSL file.
    pub shader: Shader,
    /// Entry point in that file.
    pub entry: &'static str,
    /// Values of the file's `override` constants, `(name, value)`.
    pub overrides: &'a [(&'static str, f64)],
    /// Resources for `@binding(0)`, `@binding(1)` ... of group 0, in order.
    pub bindings: &'a [wgpu::BindingResource<'a>],
    /// Workgroup counts; each must be within `max_compute_workgroups_per_dimension`.
    pub workgroups: [u32; 3],
}

impl Kernel {
    /// Builds the pipeline (through the cache) and the bind group.
    pub fn new(ctx: &GpuContext, cache: &PipelineCache, spec: KernelSpec<'_>) -> Result<Kernel> {
        let max = ctx.limits.max_compute_workgroups_per_dimension;
        if spec.workgroups.iter().any(|&w| w > max) {
            return Err(Error::Limit {
                limit: "max_compute_workgroups_per_dimension",
                needed: spec.workgroups.iter().copied().max().unwrap_or(0) as u64,
                allowed: max as u64,
            });
        }
        let pipeline = cache.get(ctx, spec.shader, spec.entry, spec.overrides)?;
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = spec
            .bindings
            .iter()
            .enumerate()
            .map(|(i, r)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: r.clone(),
            })
            .collect();
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&spec.label),
            layout: &layout,
            entries: &entries,
        });
        Ok(Kernel {
            label: spec.label,
            pipeline,
            bind_group,
            workgroups: spec.workgroups,
        })
    }

    /// Records this dispatch into `pass` with the built workgroup counts.
    pub fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.dispatch_groups(pass, self.workgroups);
    }

    /// Records this dispatch with other workgroup counts (at most the built ones): ops built
    /// for a maximum batch run a smaller one without new bind groups.
    pub fn dispatch_groups(&self, pass: &mut wgpu::ComputePass<'_>, workgroups: [u32; 3]) {
        debug_assert!(
            workgroups.iter().zip(self.workgroups).all(|(a, b)| *a <= b),
            "{}: {workgroups:?} exceeds the built {:?}",
            self.label,
            self.workgroups
        );
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = workgroups;
        if x > 0 && y > 0 && z > 0 {
            pass.dispatch_workgroups(x, y, z);
            DISPATCHES.with(|n| n.set(n.get() + 1));
        }
    }
}

thread_local! {
    /// Dispatches recorded by [`Kernel::dispatch_groups`] on this thread (every op records
    /// through it), for the session's per-token statistics.
    static DISPATCHES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Dispatches this thread has recorded so far: the difference across an encode is what it
/// recorded.
pub fn dispatches_recorded() -> u64 {
    DISPATCHES.with(|n| n.get())
}

/// Splits `n_groups` workgroups over x and y so that neither exceeds `max_per_dim`.
/// Shaders recover the linear index as `wid.x + wid.y * nwg.x` and skip indices past the end.
pub fn split_workgroups(n_groups: u32, max_per_dim: u32) -> [u32; 3] {
    if n_groups <= max_per_dim {
        [n_groups.max(1), 1, 1]
    } else {
        let y = n_groups.div_ceil(max_per_dim);
        [n_groups.div_ceil(y), y, 1]
    }
}

/// Records `kernels` (every workgroup each was built for) into one compute pass of a fresh
/// encoder and submits once: tests and one-off work.
pub fn submit_kernels(ctx: &GpuContext, label: &str, kernels: &[&Kernel]) {
    let step = StepParams::default();
    let ops: Vec<&dyn Op> = kernels.iter().map(|&k| k as &dyn Op).collect();
    submit(ctx, label, &ops, &step);
}

/// Records `ops` for `step` into one compute pass of a fresh encoder and submits once (tests and
/// one-off work; the session records its forward pass itself).
pub fn submit(ctx: &GpuContext, label: &str, ops: &[&dyn Op], step: &StepParams) {
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        for op in ops {
            op.encode(&mut pass, step);
        }
    }
    ctx.queue.submit([encoder.finish()]);
}
