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

/// Every WGSL file of the crate, loaded with `include_str!` from `shaders/<name>.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// `y = W x` for a Q1_0 weight, reduced in workgroup memory; runs on every adapter.
    MatvecQ1_0,
    /// `y = W x` for a Q1_0 weight, reduced with `subgroupAdd` (needs subgroups).
    MatvecQ1_0Subgroup,
    /// `y = W x` for a Q1_0 weight on int8 activations ([`crate::gpu::KernelPath::Q8`]),
    /// reduced in workgroup memory.
    MatvecQ1_0Q8,
    /// [`Shader::MatvecQ1_0Q8`] reduced with `subgroupAdd` (needs subgroups).
    MatvecQ1_0Q8Subgroup,
    /// `y = W x` for a Q1_0 weight on f16-pair activations ([`crate::gpu::KernelPath::F16`]),
    /// reduced in workgroup memory.
    MatvecQ1_0F16,
    /// [`Shader::MatvecQ1_0F16`] reduced with `subgroupAdd` (needs subgroups).
    MatvecQ1_0F16Subgroup,
    /// Dequantizes token rows of a Q1_0 embedding table.
    EmbedQ1_0,
    /// `y = W x` for a Q2_0 weight, reduced in workgroup memory; runs on every adapter.
    MatvecQ2_0,
    /// `y = W x` for a Q2_0 weight, reduced with `subgroupAdd` (needs subgroups).
    MatvecQ2_0Subgroup,
    /// Dequantizes token rows of a Q2_0 embedding table.
    EmbedQ2_0,
    /// Batched Q2_0 matrix multiply for prefill.
    MatmulQ2_0,
    /// `y = W x` for a dense f32 weight (F32 / F16 / BF16 tensors of mixed-type files).
    MatvecF32,
    /// Batched dense f32 matrix multiply for prefill.
    MatmulF32,
    /// Copies token rows of a dense f32 embedding table.
    EmbedF32,
    /// RMSNorm over rows (model norms and per-head q/k norms).
    Rmsnorm,
    /// SwiGLU gate: `hb = silu(hb) * hb2`.
    SiluMul,
    /// One stage of the two-stage greedy argmax over logits.
    Argmax,
    /// Qwen3 QK-norm and RoPE on q/k, plus the KV cache write.
    QkNormRope,
    /// Flash-decoding attention of one token: per-chunk partial results.
    AttentionDecode,
    /// Combines the per-chunk partials of [`Shader::AttentionDecode`].
    AttentionMerge,
    /// Causal attention of a batch of prompt tokens over the KV cache.
    AttentionPrefill,
    /// Batched Q1_0 matrix multiply for prefill.
    MatmulQ1_0,
    /// Batched Q1_0 matrix multiply for prefill on int8 activations (the q8 path).
    MatmulQ1_0Q8,
    /// One stage of the multi-stage top-k for the sampler.
    Topk,
    /// GPU sampling: penalties on the logits of the window's tokens.
    SamplePenalties,
    /// GPU sampling: top-p, min-p, temperature and the draw over the top-k candidates.
    Sample,
}

/// What a shader file needs from the device beyond core WebGPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaderNeeds {
    /// Needs `wgpu::Features::SUBGROUP` (subgroup operations).
    pub subgroups: bool,
}

impl Shader {
    /// All shaders, for tests that validate every file.
    pub const ALL: &'static [Shader] = &[
        Shader::MatvecQ1_0,
        Shader::MatvecQ1_0Subgroup,
        Shader::MatvecQ1_0Q8,
        Shader::MatvecQ1_0Q8Subgroup,
        Shader::MatvecQ1_0F16,
        Shader::MatvecQ1_0F16Subgroup,
        Shader::EmbedQ1_0,
        Shader::MatvecQ2_0,
        Shader::MatvecQ2_0Subgroup,
        Shader::EmbedQ2_0,
        Shader::MatmulQ2_0,
        Shader::MatvecF32,
        Shader::MatmulF32,
        Shader::EmbedF32,
        Shader::Rmsnorm,
        Shader::SiluMul,
        Shader::Argmax,
        Shader::QkNormRope,
        Shader::AttentionDecode,
        Shader::AttentionMerge,
        Shader::AttentionPrefill,
        Shader::MatmulQ1_0,
        Shader::MatmulQ1_0Q8,
        Shader::Topk,
        Shader::SamplePenalties,
        Shader::Sample,
    ];

    /// Name in labels and errors.
    pub fn name(self) -> &'static str {
        match self {
            Shader::MatvecQ1_0 => "matvec_q1_0",
            Shader::MatvecQ1_0Subgroup => "matvec_q1_0_subgroup",
            Shader::MatvecQ1_0Q8 => "matvec_q1_0_q8",
            Shader::MatvecQ1_0Q8Subgroup => "matvec_q1_0_q8_subgroup",
            Shader::MatvecQ1_0F16 => "matvec_q1_0_f16",
            Shader::MatvecQ1_0F16Subgroup => "matvec_q1_0_f16_subgroup",
            Shader::EmbedQ1_0 => "embed_q1_0",
            Shader::MatvecQ2_0 => "matvec_q2_0",
            Shader::MatvecQ2_0Subgroup => "matvec_q2_0_subgroup",
            _ => self.file(),
        }
    }

    /// File stem in `shaders/` of the main part (the part with the entry point).
    pub fn file(self) -> &'static str {
        match self {
            Shader::MatvecQ1_0
            | Shader::MatvecQ1_0Q8
            | Shader::MatvecQ1_0F16
            | Shader::MatvecQ2_0 => "matvec_shared",
            Shader::MatvecQ1_0Subgroup
            | Shader::MatvecQ1_0Q8Subgroup
            | Shader::MatvecQ1_0F16Subgroup
            | Shader::MatvecQ2_0Subgroup => "matvec_subgroup",
            Shader::EmbedQ1_0 => "embed_q1_0",
            Shader::EmbedQ2_0 => "embed_q2_0",
            Shader::MatmulQ2_0 => "matmul_q2_0",
            Shader::MatvecF32 => "matvec_f32",
            Shader::MatmulF32 => "matmul_f32",
            Shader::EmbedF32 => "embed_f32",
            Shader::Rmsnorm => "rmsnorm",
            Shader::SiluMul => "silu_mul",
            Shader::Argmax => "argmax",
            Shader::QkNormRope => "qk_norm_rope",
            Shader::AttentionDecode => "attention_decode",
            Shader::AttentionMerge => "attention_merge",
            Shader::AttentionPrefill => "attention_prefill",
            Shader::MatmulQ1_0 => "matmul_q1_0",
            Shader::MatmulQ1_0Q8 => "matmul_q1_0_q8",
            Shader::Topk => "topk",
            Shader::SamplePenalties => "sample_penalties",
            Shader::Sample => "sample",
        }
    }

    /// The main part's WGSL text (`shaders/<file>.wgsl`).
    pub fn main_part(self) -> &'static str {
        match self.file() {
            "matvec_shared" => include_str!("../../shaders/matvec_shared.wgsl"),
            "matvec_subgroup" => include_str!("../../shaders/matvec_subgroup.wgsl"),
            "embed_q1_0" => include_str!("../../shaders/embed_q1_0.wgsl"),
            "embed_q2_0" => include_str!("../../shaders/embed_q2_0.wgsl"),
            "matmul_q2_0" => include_str!("../../shaders/matmul_q2_0.wgsl"),
            "matvec_f32" => include_str!("../../shaders/matvec_f32.wgsl"),
            "matmul_f32" => include_str!("../../shaders/matmul_f32.wgsl"),
            "embed_f32" => include_str!("../../shaders/embed_f32.wgsl"),
            "rmsnorm" => include_str!("../../shaders/rmsnorm.wgsl"),
            "silu_mul" => include_str!("../../shaders/silu_mul.wgsl"),
            "argmax" => include_str!("../../shaders/argmax.wgsl"),
            "qk_norm_rope" => include_str!("../../shaders/qk_norm_rope.wgsl"),
            "attention_decode" => include_str!("../../shaders/attention_decode.wgsl"),
            "attention_merge" => include_str!("../../shaders/attention_merge.wgsl"),
            "attention_prefill" => include_str!("../../shaders/attention_prefill.wgsl"),
            "matmul_q1_0" => include_str!("../../shaders/matmul_q1_0.wgsl"),
            "matmul_q1_0_q8" => include_str!("../../shaders/matmul_q1_0_q8.wgsl"),
            "topk" => include_str!("../../shaders/topk.wgsl"),
            "sample_penalties" => include_str!("../../shaders/sample_penalties.wgsl"),
            "sample" => include_str!("../../shaders/sample.wgsl"),
            other => unreachable!("shaders/{other}.wgsl is not included"),
        }
    }

    /// Library parts (`shaders/lib/`) joined before the main part, in order. WGSL has no
    /// includes: the matvec kernels share their format cores and options this way.
    pub fn parts(self) -> &'static [(&'static str, &'static str)] {
        const Q1_0_DOTS: (&str, &str) = (
            "q1_0_dots",
            include_str!("../../shaders/lib/q1_0_dots.wgsl"),
        );
        const Q2_0_DOTS: (&str, &str) = (
            "q2_0_dots",
            include_str!("../../shaders/lib/q2_0_dots.wgsl"),
        );
        const Q8: (&str, &str) = ("q8", include_str!("../../shaders/lib/q8.wgsl"));
        const Q1_0_Q8_DOTS: (&str, &str) = (
            "q1_0_q8_dots",
            include_str!("../../shaders/lib/q1_0_q8_dots.wgsl"),
        );
        const Q1_0_F16_DOTS: (&str, &str) = (
            "q1_0_f16_dots",
            include_str!("../../shaders/lib/q1_0_f16_dots.wgsl"),
        );
        const COMMON: (&str, &str) = (
            "matvec_common",
            include_str!("../../shaders/lib/matvec_common.wgsl"),
        );
        match self {
            Shader::MatvecQ1_0 | Shader::MatvecQ1_0Subgroup => &[Q1_0_DOTS, COMMON],
            Shader::MatvecQ1_0Q8 | Shader::MatvecQ1_0Q8Subgroup => &[Q8, Q1_0_Q8_DOTS, COMMON],
            Shader::MatmulQ1_0Q8 => &[Q8],
            Shader::MatvecQ1_0F16 | Shader::MatvecQ1_0F16Subgroup => &[Q1_0_F16_DOTS, COMMON],
            Shader::MatvecQ2_0 | Shader::MatvecQ2_0Subgroup => &[Q2_0_DOTS, COMMON],
            _ => &[],
        }
    }

    /// WGSL source text: the library parts, then the main part.
    pub fn source(self) -> std::borrow::Cow<'static, str> {
        match self.parts() {
            [] => self.main_part().into(),
            parts => {
                let mut s: String = parts.iter().map(|(_, text)| *text).collect();
                s.push_str(self.main_part());
                s.into()
            }
        }
    }

    /// Whether the kernel is built without wgpu's runtime checks (index clamping, loop bounding),
    /// with `create_shader_module_trusted`. Only shaders whose WGSL header says why every index
    /// stays in range by construction: the index bounds are overrides, the host checks each
    /// bound buffer against them when it builds the kernel, and no index comes from buffer
    /// contents. [`GpuContext::checked_shaders`] builds them checked again (tests, debugging).
    ///
    /// Not trusted: kernels that index by data (embeddings by token id, attention and the
    /// sampler by positions and ids in buffers) or whose bounds come from `arrayLength`.
    pub fn trusted(self) -> bool {
        matches!(
            self,
            Shader::MatvecQ1_0
                | Shader::MatvecQ1_0Subgroup
                | Shader::MatvecQ1_0Q8
                | Shader::MatvecQ1_0Q8Subgroup
                | Shader::MatvecQ1_0F16
                | Shader::MatvecQ1_0F16Subgroup
                | Shader::MatvecQ2_0
                | Shader::MatvecQ2_0Subgroup
                | Shader::Argmax
        )
    }

    /// Device capabilities the file needs.
    pub fn needs(self) -> ShaderNeeds {
        match self {
            Shader::MatvecQ1_0Subgroup
            | Shader::MatvecQ1_0Q8Subgroup
            | Shader::MatvecQ1_0F16Subgroup
            | Shader::MatvecQ2_0Subgroup => ShaderNeeds { subgroups: true },
            _ => ShaderNeeds::default(),
        }
    }

    /// Source as given to the device. Naga (wgpu native) enables subgroup operations through the
    /// device feature and rejects `enable subgroups;`, which browsers require: it is prepended
    /// for browser WebGPU only.
    ///
    /// Browsers also get the q8 kernels' `dot4I8Packed` as a plain WGSL function
    /// ([`DOT4_I8_PORTABLE`]): the packed integer dot product is a WGSL language extension that
    /// not every browser exposes (wgpu native always has it, in hardware or emulated by naga).
    pub fn source_for(self, backend: wgpu::Backend) -> std::borrow::Cow<'static, str> {
        let browser = backend == wgpu::Backend::BrowserWebGpu;
        let mut source = self.source();
        if browser && source.contains("dot4I8Packed(") {
            source = format!(
                "{}\n{DOT4_I8_PORTABLE}",
                source.replace("dot4I8Packed(", "dot4_i8_portable(")
            )
            .into();
        }
        if self.needs().subgroups && browser {
            format!("enable subgroups;\n{source}").into()
        } else {
            source
        }
    }
}

/// `dot4I8Packed` in core WGSL (sign-extended bytes, one dot of two `vec4<i32>`), for browsers.
pub const DOT4_I8_PORTABLE: &str = "fn dot4_i8_portable(a: u32, b: u32) -> i32 {
    let s = vec4<u32>(24u, 16u, 8u, 0u);
    let x = bitcast<vec4<i32>>(vec4<u32>(a) << s) >> vec4<u32>(24u);
    let y = bitcast<vec4<i32>>(vec4<u32>(b) << s) >> vec4<u32>(24u);
    return dot(x, y);
}
";

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
