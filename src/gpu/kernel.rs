//! The kernel framework: shader table, pipeline cache and [`Kernel`] values.
//!
//! An op is a *value*: a pipeline, a static bind group and a dispatch size, built once at load
//! time. The caller records any number of kernels into one compute pass and submits once.
//! Everything that changes per step (position, token count, ...) lives in one small
//! [`StepParams`](super::buffers::StepParams) buffer written with `queue.write_buffer`, so bind
//! groups never change.

use std::collections::HashMap;
use std::sync::Mutex;

use super::context::GpuContext;
use crate::{Error, Result};

/// Every WGSL file of the crate, loaded with `include_str!` from `shaders/<name>.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// `y = W x` for a Q1_0 weight, reduced in workgroup memory; runs on every adapter.
    MatvecQ1_0,
    /// `y = W x` for a Q1_0 weight, reduced with `subgroupAdd` (needs subgroups).
    MatvecQ1_0Subgroup,
    /// Dequantizes token rows of a Q1_0 embedding table.
    EmbedQ1_0,
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
    /// One stage of the multi-stage top-k for the sampler.
    Topk,
    /// Decode D1: RMSNorm + q|k|v matvec + QK-norm + RoPE + KV cache write.
    QkvRope,
    /// Decode D3: merge of the attention partials + Wo matvec + residual add.
    WoMerge,
    /// Decode D4: RMSNorm + interleaved gate|up matvec + `silu(g) * u`.
    FfnGateUp,
    /// LM head: RMSNorm + head matvec + argmax stage 1.
    HeadArgmax,
    /// [`Shader::QkvRope`] reduced with `subgroupAdd` (fixed subgroup size).
    QkvRopeSubgroup,
    /// [`Shader::WoMerge`] reduced with `subgroupAdd` (fixed subgroup size).
    WoMergeSubgroup,
    /// [`Shader::FfnGateUp`] reduced with `subgroupAdd` (fixed subgroup size).
    FfnGateUpSubgroup,
    /// [`Shader::HeadArgmax`] reduced with `subgroupAdd` (fixed subgroup size).
    HeadArgmaxSubgroup,
    /// GPU sampling: penalties on the logits of the window's tokens.
    SamplePenalties,
    /// GPU sampling: top-p, min-p, temperature and the draw over the top-k candidates.
    Sample,
}

/// The shared Q1_0 row core, a row-group reduction (`shared` or `subgroup`), then one fused
/// kernel's file.
macro_rules! fused {
    ($reduce:literal, $file:literal) => {
        concat!(
            include_str!("../../shaders/q1_0_rows.wgsl"),
            include_str!(concat!("../../shaders/q1_0_reduce_", $reduce, ".wgsl")),
            include_str!(concat!("../../shaders/", $file))
        )
    };
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
        Shader::EmbedQ1_0,
        Shader::Rmsnorm,
        Shader::SiluMul,
        Shader::Argmax,
        Shader::QkNormRope,
        Shader::AttentionDecode,
        Shader::AttentionMerge,
        Shader::AttentionPrefill,
        Shader::MatmulQ1_0,
        Shader::Topk,
        Shader::QkvRope,
        Shader::WoMerge,
        Shader::FfnGateUp,
        Shader::HeadArgmax,
        Shader::QkvRopeSubgroup,
        Shader::WoMergeSubgroup,
        Shader::FfnGateUpSubgroup,
        Shader::HeadArgmaxSubgroup,
        Shader::SamplePenalties,
        Shader::Sample,
    ];

    /// File stem in `shaders/`.
    pub fn name(self) -> &'static str {
        match self {
            Shader::MatvecQ1_0 => "matvec_q1_0",
            Shader::MatvecQ1_0Subgroup => "matvec_q1_0_subgroup",
            Shader::EmbedQ1_0 => "embed_q1_0",
            Shader::Rmsnorm => "rmsnorm",
            Shader::SiluMul => "silu_mul",
            Shader::Argmax => "argmax",
            Shader::QkNormRope => "qk_norm_rope",
            Shader::AttentionDecode => "attention_decode",
            Shader::AttentionMerge => "attention_merge",
            Shader::AttentionPrefill => "attention_prefill",
            Shader::MatmulQ1_0 => "matmul_q1_0",
            Shader::Topk => "topk",
            Shader::QkvRope => "qkv_rope",
            Shader::WoMerge => "wo_merge",
            Shader::FfnGateUp => "ffn_gate_up",
            Shader::HeadArgmax => "head_argmax",
            Shader::QkvRopeSubgroup => "qkv_rope_subgroup",
            Shader::WoMergeSubgroup => "wo_merge_subgroup",
            Shader::FfnGateUpSubgroup => "ffn_gate_up_subgroup",
            Shader::HeadArgmaxSubgroup => "head_argmax_subgroup",
            Shader::SamplePenalties => "sample_penalties",
            Shader::Sample => "sample",
        }
    }

    /// WGSL source text.
    pub fn source(self) -> &'static str {
        match self {
            Shader::MatvecQ1_0 => include_str!("../../shaders/matvec_q1_0.wgsl"),
            Shader::MatvecQ1_0Subgroup => include_str!("../../shaders/matvec_q1_0_subgroup.wgsl"),
            Shader::EmbedQ1_0 => include_str!("../../shaders/embed_q1_0.wgsl"),
            Shader::Rmsnorm => include_str!("../../shaders/rmsnorm.wgsl"),
            Shader::SiluMul => include_str!("../../shaders/silu_mul.wgsl"),
            Shader::Argmax => include_str!("../../shaders/argmax.wgsl"),
            Shader::QkNormRope => include_str!("../../shaders/qk_norm_rope.wgsl"),
            Shader::AttentionDecode => include_str!("../../shaders/attention_decode.wgsl"),
            Shader::AttentionMerge => include_str!("../../shaders/attention_merge.wgsl"),
            Shader::AttentionPrefill => include_str!("../../shaders/attention_prefill.wgsl"),
            Shader::MatmulQ1_0 => include_str!("../../shaders/matmul_q1_0.wgsl"),
            Shader::Topk => include_str!("../../shaders/topk.wgsl"),
            // The fused matvecs share the Q1_0 row core (`q1_0_rows.wgsl`), prepended at compile
            // time: WGSL has no includes.
            Shader::QkvRope => fused!("shared", "qkv_rope.wgsl"),
            Shader::WoMerge => fused!("shared", "wo_merge.wgsl"),
            Shader::FfnGateUp => fused!("shared", "ffn_gate_up.wgsl"),
            Shader::HeadArgmax => fused!("shared", "head_argmax.wgsl"),
            Shader::QkvRopeSubgroup => fused!("subgroup", "qkv_rope.wgsl"),
            Shader::WoMergeSubgroup => fused!("subgroup", "wo_merge.wgsl"),
            Shader::FfnGateUpSubgroup => fused!("subgroup", "ffn_gate_up.wgsl"),
            Shader::HeadArgmaxSubgroup => fused!("subgroup", "head_argmax.wgsl"),
            Shader::SamplePenalties => include_str!("../../shaders/sample_penalties.wgsl"),
            Shader::Sample => include_str!("../../shaders/sample.wgsl"),
        }
    }

    /// Whether the kernel is built without wgpu's runtime checks (bounds clamping, loop
    /// bounding, division guards). Only kernels whose WGSL header argues why every index stays
    /// in range by construction (the host checks the buffers it binds against the overrides):
    /// the fused decode kernels, the hot path of every token. [`GpuContext::checked_shaders`]
    /// builds them checked again.
    pub fn trusted(self) -> bool {
        matches!(
            self,
            Shader::QkvRope
                | Shader::WoMerge
                | Shader::FfnGateUp
                | Shader::HeadArgmax
                | Shader::QkvRopeSubgroup
                | Shader::WoMergeSubgroup
                | Shader::FfnGateUpSubgroup
                | Shader::HeadArgmaxSubgroup
        )
    }

    /// The `shaders/` file stem holding this shader's own code (a fused kernel's two variants
    /// share one file and differ in the prepended reduction).
    pub fn file(self) -> &'static str {
        match self {
            Shader::QkvRopeSubgroup => "qkv_rope",
            Shader::WoMergeSubgroup => "wo_merge",
            Shader::FfnGateUpSubgroup => "ffn_gate_up",
            Shader::HeadArgmaxSubgroup => "head_argmax",
            s => s.name(),
        }
    }

    /// The variant of a fused kernel that reduces with `subgroupAdd`.
    pub fn with_subgroups(self) -> Shader {
        match self {
            Shader::QkvRope => Shader::QkvRopeSubgroup,
            Shader::WoMerge => Shader::WoMergeSubgroup,
            Shader::FfnGateUp => Shader::FfnGateUpSubgroup,
            Shader::HeadArgmax => Shader::HeadArgmaxSubgroup,
            s => s,
        }
    }

    /// Device capabilities the file needs.
    pub fn needs(self) -> ShaderNeeds {
        match self {
            Shader::MatvecQ1_0Subgroup
            | Shader::QkvRopeSubgroup
            | Shader::WoMergeSubgroup
            | Shader::FfnGateUpSubgroup
            | Shader::HeadArgmaxSubgroup => ShaderNeeds { subgroups: true },
            _ => ShaderNeeds::default(),
        }
    }

    /// Source as given to the device. Naga (wgpu native) enables subgroup operations through the
    /// device feature and rejects `enable subgroups;`, which browsers require: it is prepended
    /// for browser WebGPU only.
    pub fn source_for(self, backend: wgpu::Backend) -> std::borrow::Cow<'static, str> {
        if self.needs().subgroups && backend == wgpu::Backend::BrowserWebGpu {
            format!("enable subgroups;\n{}", self.source()).into()
        } else {
            self.source().into()
        }
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
                        // WGSL header says why; the op checks every binding's size before the
                        // kernel is built), its loops are bounded by overrides and uniforms, and
                        // it divides only by non-zero overrides. The test suite also runs every
                        // kernel checked (BONSAI_CHECKED_SHADERS, tests/gpu_fused.rs).
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

    /// Records this dispatch into `pass`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.encode_groups(pass, self.workgroups);
    }

    /// Records this dispatch with other workgroup counts (at most the built ones): ops built
    /// for a maximum batch run a smaller one without new bind groups.
    pub fn encode_groups(&self, pass: &mut wgpu::ComputePass<'_>, workgroups: [u32; 3]) {
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
        }
    }
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

/// Records `kernels` into one compute pass of a fresh encoder and submits once.
pub fn submit_kernels(ctx: &GpuContext, label: &str, kernels: &[&Kernel]) {
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        for k in kernels {
            k.encode(&mut pass);
        }
    }
    ctx.queue.submit([encoder.finish()]);
}
