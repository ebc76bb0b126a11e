//! The shader registry: every WGSL file of the crate ([`Shader`]), what each needs from the
//! adapter, and the source a backend gets (the weight-format and option parts joined; browser
//! substitutions). Pipelines are built from it by [`super::kernel::PipelineCache`].

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
    /// contents. [`crate::gpu::GpuContext::checked_shaders`] builds them checked again (tests, debugging).
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
