//! `y = W x` (or `y += W x`) for a Q1_0 or Q2_0 weight: the op that dominates decode time.
//! Shaders: `shaders/lib/q1_0_dots.wgsl` or `q2_0_dots.wgsl` (the weight format, picked by the
//! weight's [`WeightFormat`]) + `lib/matvec_common.wgsl` (input and output options) +
//! `matvec_shared.wgsl` (workgroup-memory reduction, every adapter) or `matvec_subgroup.wgsl`
//! (subgroupAdd, when the adapter has subgroups); `matvec_f32.wgsl` for the dense rows of F32 /
//! F16 / BF16 weights.
//!
//! [`MatvecQ1_0::fused`] builds the fused decode plan's variants ([`Fusion`]): the RMSNorm
//! folded into the input, the attention merge folded into the input, `silu(gate) * up` as the
//! epilogue of a [gate; up] weight, argmax stage 1 as the epilogue of the LM head.
//! CPU reference: [`crate::cpu::ops::Matrix::matvec`] and the unfused ops it replaces.

use crate::gpu::buffers::{StepParams, check_binding};
use crate::gpu::context::{GpuContext, KernelPath};
use crate::gpu::kernel::{Kernel, KernelSpec, Op, PipelineCache, Shader, split_workgroups};
use crate::gpu::q1_0::{Q1_0Weight, WeightFormat};
use crate::{Error, Result};

/// Threads per workgroup of `matvec_shared.wgsl`, and the most of `matvec_subgroup.wgsl`
/// (`WG` in the WGSL).
const WG: u32 = 256;
/// Workgroup sizes `matvec_subgroup.wgsl` may run with, largest first.
pub const SUBGROUP_WORKGROUP_SIZES: [u32; 3] = [256, 128, 64];
/// Workgroups a matvec on a GPU aims for: a large GPU has ~100 compute units, and a
/// projection of a few thousand rows in workgroups of 256 threads leaves most of them idle, so
/// such shapes get smaller workgroups (CPU adapters keep 256: they run few at once).
const MIN_WORKGROUPS: u32 = 128;
/// Rows that share each load of x (the `vec4` accumulators in the WGSL).
const ROWS_PER_GROUP: u32 = 4;
/// Rows per workgroup of `matvec_f32.wgsl` (`ROWS_PER_WG` there).
const DENSE_ROWS_PER_WG: u32 = 4;

/// Which reduction the kernel uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduce {
    /// Subgroups when the adapter has them, else workgroup memory.
    #[default]
    Auto,
    /// Workgroup-memory tree (works everywhere).
    Shared,
    /// `subgroupAdd` (errors if the adapter lacks subgroups).
    Subgroup,
}

/// Options of a matvec.
#[derive(Clone, Copy, Debug, Default)]
pub struct MatvecOptions {
    /// `y += W x` instead of `y = W x`: attn_output and ffn_down write into the residual stream.
    pub accumulate: bool,
    /// How the dot products are reduced (workgroup memory or subgroups).
    pub reduce: Reduce,
    /// Cap on workgroups per dispatch dimension; 0 = the device limit. Tests lower it to
    /// exercise the x/y split that the 151,669-row head needs on small-subgroup adapters.
    pub max_groups_per_dim: u32,
    /// Subgroup size range to plan for instead of the adapter's (must contain the real size).
    /// Tests widen it to exercise the rounds a driver with varying subgroup sizes needs.
    pub subgroup_sizes: Option<(u32, u32)>,
    /// Threads per workgroup of the subgroup kernel, one of [`SUBGROUP_WORKGROUP_SIZES`];
    /// `None` = chosen per shape. Tests set it to run the sizes a GPU would pick.
    pub workgroup_size: Option<u32>,
    /// The arithmetic; `None` = the context's [`GpuContext::kernel_path`]. [`KernelPath::Q8`]
    /// and [`KernelPath::F16`] apply to Q1_0 weights whose staged input fits
    /// the workgroup memory (every Bonsai shape); others run the f32 kernels.
    pub path: Option<KernelPath>,
}

/// What a matvec reads and writes.
pub struct MatvecQ1_0Bindings<'a> {
    /// The weight `[k, n]`: n rows of k.
    pub w: &'a Q1_0Weight,
    /// Input: (k) f32.
    pub x: &'a wgpu::Buffer,
    /// Output: (n) f32, overwritten or accumulated into.
    pub y: &'a wgpu::Buffer,
    /// Accumulation, reduction and test knobs.
    pub opts: MatvecOptions,
}

/// What a fused matvec does beyond `y (+)= W x` (see `shaders/lib/matvec_common.wgsl`).
#[derive(Clone, Copy, Default)]
pub struct Fusion<'a> {
    /// Every x load is multiplied by this (a norm weight, (k) f32): the input is `x * g`.
    pub gain: Option<&'a wgpu::Buffer>,
    /// `Some((sumsq, eps))`: the outputs are scaled by `1 / rms(r)` of a residual `r` (k values),
    /// given as its sums of squares in groups of 4 (`sumsq`: (k/4) f32, what a
    /// [`Fusion::norm_out`] writes). With `x = r * g` (the norm_out's `out`) the matvec computes
    /// `W (rmsnorm(r) * g)`.
    pub rms: Option<(&'a wgpu::Buffer, f32)>,
    /// The epilogue also writes what the next norm-folded matvec reads.
    pub norm_out: Option<NormOut<'a>>,
    /// The input is the attention output merged from the decode partials (`x` is `part_o`).
    pub merge: Option<MergeInput<'a>>,
    /// The weight is [gate; up]: `y[i] = silu(gate_i . x) * (up_i . x)` for the n/2 outputs.
    pub glu: bool,
    /// Argmax stage 1 of the outputs into these (value, index) partials, one per row group of 4
    /// ([`MatvecQ1_0::argmax_partials`] of them); argmax.wgsl's stage 2 reduces them.
    pub argmax: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
}

/// What a [`Fusion::norm_out`] epilogue writes besides `y`: the next RMSNorm folded into the
/// next matvec's input and scale.
#[derive(Clone, Copy)]
pub struct NormOut<'a> {
    /// The next norm's weight, (n) f32.
    pub g_next: &'a wgpu::Buffer,
    /// `out[o] = y[o] * g_next[o]`, (n) f32: the next matvec's `x`.
    pub out: &'a wgpu::Buffer,
    /// `sumsq[i] = y[4i]^2 + ... + y[4i + 3]^2`, (n/4) f32: the next matvec's [`Fusion::rms`].
    pub sumsq: &'a wgpu::Buffer,
}

/// The attention partials a [`Fusion::merge`] reads (`attention_decode.wgsl`'s outputs).
#[derive(Clone, Copy)]
pub struct MergeInput<'a> {
    /// `StepParams` uniform: `n_kv` gives the live chunks.
    pub step: &'a wgpu::Buffer,
    /// Per-chunk (max, sum): (n_head, max_chunks) `vec2<f32>`.
    pub part_ml: &'a wgpu::Buffer,
    /// Head size (k / head_dim heads, at most 64).
    pub head_dim: usize,
    /// Positions per chunk.
    pub chunk: usize,
    /// Chunk stride of the partial buffers.
    pub max_chunks: usize,
}

/// One kernel per weight part; encode them all (they write disjoint ranges of y). Runs every
/// [`WeightFormat`] (the weight's format picks the shader).
#[derive(Clone, Debug)]
pub struct MatvecQ1_0 {
    /// One kernel per weight part.
    pub kernels: Vec<Kernel>,
    /// With [`Fusion::merge`]: the kernels for a context of one attention chunk (the fused
    /// attention_decode wrote it normalised: a load is the partial as it is, no table, no
    /// barrier), and the chunk size.
    pub one_chunk: Option<(Vec<Kernel>, u32)>,
}

impl MatvecQ1_0 {
    /// `y[0..n] (=|+=) w[n, k] x[k]`; `x` holds at least k f32, `y` at least n f32.
    pub fn new(
        ctx: &GpuContext,
        cache: &PipelineCache,
        b: &MatvecQ1_0Bindings<'_>,
    ) -> Result<MatvecQ1_0> {
        Self::fused(ctx, cache, b, &Fusion::default())
    }

    /// Row groups (of 4 rows) of every part: the size of [`Fusion::argmax`]'s partials.
    pub fn argmax_partials(w: &Q1_0Weight) -> u32 {
        w.parts.iter().map(|p| (p.n_rows as u32).div_ceil(4)).sum()
    }

    /// As [`Self::new`] with the fused decode options `f` (packed formats only; `x` is
    /// `part_o` for [`Fusion::merge`]).
    pub fn fused(
        ctx: &GpuContext,
        cache: &PipelineCache,
        b: &MatvecQ1_0Bindings<'_>,
        f: &Fusion<'_>,
    ) -> Result<MatvecQ1_0> {
        let (w, x, y, opts) = (b.w, b.x, b.y, b.opts);
        let fused = f.gain.is_some()
            || f.rms.is_some()
            || f.norm_out.is_some()
            || f.merge.is_some()
            || f.glu
            || f.argmax.is_some();
        if f.norm_out.is_some() && (f.argmax.is_some() || f.glu) {
            return Err(Error::InvalidArgument(format!(
                "matvec {}: the norm_out epilogue shares its binding with argmax and excludes glu",
                w.name
            )));
        }
        let aux_users = [f.gain.is_some(), f.rms.is_some(), f.merge.is_some()];
        if aux_users.iter().filter(|&&u| u).count() > 1 {
            return Err(Error::InvalidArgument(format!(
                "matvec {}: gain, rms and merge share a binding; use one",
                w.name
            )));
        }
        if fused && w.format == WeightFormat::F32 {
            return Err(Error::InvalidArgument(format!(
                "matvec {}: fused options need a packed (Q1_0 / Q2_0) weight",
                w.name
            )));
        }
        let n_out = if f.glu { w.n / 2 } else { w.n };
        if f.glu && (!w.n.is_multiple_of(4) || w.parts.len() != 1) {
            return Err(Error::InvalidArgument(format!(
                "matvec {}: silu(gate) * up needs one part of a multiple of 4 rows, got {} rows in {} parts",
                w.name,
                w.n,
                w.parts.len()
            )));
        }
        let x_bytes = match &f.merge {
            Some(m) => {
                if !w.k.is_multiple_of(m.head_dim)
                    || w.k / m.head_dim > 64
                    || !m.head_dim.is_multiple_of(4)
                {
                    return Err(Error::InvalidArgument(format!(
                        "matvec {}: merge of {} inputs in heads of {}",
                        w.name, w.k, m.head_dim
                    )));
                }
                let heads = w.k / m.head_dim;
                check_binding(m.part_ml, 8 * heads * m.max_chunks, "matvec merge part_ml")?;
                4 * w.k * m.max_chunks
            }
            None => 4 * w.k,
        };
        if let Some(g) = f.gain {
            check_binding(g, 4 * w.k, "matvec gain")?;
        }
        if let Some((sumsq, _)) = f.rms {
            if !w.k.is_multiple_of(4) {
                return Err(Error::InvalidArgument(format!(
                    "matvec {}: rms needs k a multiple of 4, got {}",
                    w.name, w.k
                )));
            }
            check_binding(sumsq, w.k, "matvec rms sums of squares")?;
        }
        if let Some(n) = f.norm_out {
            if let Some(p) = w.parts.iter().find(|p| !p.row0.is_multiple_of(4)) {
                return Err(Error::InvalidArgument(format!(
                    "matvec {}: norm_out needs parts at multiples of 4 rows, one starts at {}",
                    w.name, p.row0
                )));
            }
            check_binding(n.g_next, 4 * n_out, "matvec norm_out weight")?;
            check_binding(n.out, 4 * n_out, "matvec norm_out output")?;
            check_binding(
                n.sumsq,
                4 * n_out.div_ceil(4),
                "matvec norm_out sums of squares",
            )?;
        }
        if x.size() < x_bytes as u64 || y.size() < (n_out * 4) as u64 {
            return Err(Error::InvalidArgument(format!(
                "matvec {}: x has {} bytes (need {}), y has {} bytes (need {})",
                w.name,
                x.size(),
                x_bytes,
                y.size(),
                n_out * 4
            )));
        }
        let Plan {
            shader,
            mut rows_per_wg,
            mut iters,
            threads,
            sg,
        } = plan(ctx, w, &opts)?;
        if let (Some(it), Some(_)) = (iters.as_mut(), f.rms) {
            // Each subgroup takes the RMS itself: on a CPU adapter (8 lanes) give it more row
            // groups to spread that over; a GPU's subgroups are wide and want to be many.
            if ctx.info.device_type == wgpu::DeviceType::Cpu {
                *it *= RMS_ROUNDS_CPU;
                rows_per_wg *= RMS_ROUNDS_CPU;
            }
        }
        let max_per_dim = match opts.max_groups_per_dim {
            0 => ctx.limits.max_compute_workgroups_per_dimension,
            m => m.min(ctx.limits.max_compute_workgroups_per_dimension),
        };
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        let unused = cache.unused(ctx)?;
        let build = |merge_one: bool| -> Result<Vec<Kernel>> {
            let mut kernels = Vec::with_capacity(w.parts.len());
            let mut row_groups = 0;
            for part in &w.parts {
                let mut overrides = vec![
                    ("K", w.k as f64),
                    ("N", part.n_rows as f64),
                    ("Y_OFFSET", part.row0 as f64),
                    ("ACCUMULATE", flag(opts.accumulate)),
                ];
                let mut bindings = part.bindings();
                bindings.extend([x.as_entire_binding(), y.as_entire_binding()]);
                if w.format != WeightFormat::F32 {
                    overrides.extend([
                        ("ROWS_PER_WG", rows_per_wg as f64),
                        ("W_ROW0", part.w_row0 as f64),
                        ("GAIN", flag(f.gain.is_some())),
                        ("RMS", flag(f.rms.is_some())),
                        ("NORM_OUT", flag(f.norm_out.is_some())),
                        ("MERGE", flag(f.merge.is_some() && !merge_one)),
                        ("MERGE_ONE", flag(merge_one)),
                        ("GLU", flag(f.glu)),
                        ("ARGMAX", flag(f.argmax.is_some())),
                        ("ARG_BASE", row_groups as f64),
                    ]);
                    if let Some((_, eps)) = f.rms {
                        overrides.push(("EPS", eps as f64));
                    }
                    if let Some(m) = &f.merge {
                        overrides.extend([
                            ("HEAD_DIM", m.head_dim as f64),
                            ("CHUNK", m.chunk as f64),
                            ("MAX_CHUNKS", m.max_chunks as f64),
                        ]);
                    }
                    let aux = match (f.gain, f.rms, &f.merge) {
                        (Some(g), _, _) => g,
                        (None, Some((r, _)), _) => r,
                        (None, None, Some(m)) => m.part_ml,
                        (None, None, None) => x,
                    };
                    let step = f.merge.as_ref().map_or(&unused.uniform, |m| m.step);
                    let (out_f, out_u) = match (f.argmax, f.norm_out) {
                        (Some((val, idx)), _) => (val, idx),
                        (None, Some(n)) => (n.out, n.sumsq),
                        (None, None) => (&unused.storage[0], &unused.storage[1]),
                    };
                    let g_next = f.norm_out.map_or(x, |n| n.g_next);
                    bindings.extend([
                        aux.as_entire_binding(),
                        step.as_entire_binding(),
                        out_f.as_entire_binding(),
                        out_u.as_entire_binding(),
                        g_next.as_entire_binding(),
                    ]);
                }
                if let Some(iters) = iters {
                    overrides.push(("ITERS", iters as f64));
                    overrides.push(("WG", threads as f64));
                    if let Some((size, seg)) = sg {
                        overrides.extend([("SG", size as f64), ("SEG", seg as f64)]);
                    }
                }
                let n_groups = (part.n_rows as u32).div_ceil(rows_per_wg);
                row_groups += (part.n_rows as u32).div_ceil(4);
                kernels.push(Kernel::new(
                    ctx,
                    cache,
                    KernelSpec {
                        label: format!("matvec {} rows {}..", w.name, part.row0),
                        shader,
                        entry: "main",
                        overrides: &overrides,
                        bindings: &bindings,
                        workgroups: split_workgroups(n_groups, max_per_dim),
                    },
                )?);
            }
            Ok(kernels)
        };
        if let Some((val, idx)) = f.argmax {
            let n = Self::argmax_partials(w) as usize;
            check_binding(val, 4 * n, "matvec argmax values")?;
            check_binding(idx, 4 * n, "matvec argmax indices")?;
        }
        let kernels = build(false)?;
        let one_chunk = match &f.merge {
            Some(m) => Some((build(true)?, m.chunk as u32)),
            None => None,
        };
        Ok(MatvecQ1_0 { kernels, one_chunk })
    }
}

/// Row groups per subgroup of the q8 core in matvec_subgroup.wgsl (`GROUPS` in
/// lib/q1_0_q8_dots.wgsl).
const Q8_GROUPS_PER_SUBGROUP: u32 = 2;

/// Row-group rounds per subgroup of a matvec with [`Fusion::rms`] on a CPU adapter (each
/// subgroup sums the k/4 sums of squares once, for all of them).
const RMS_ROUNDS_CPU: u32 = 4;
/// Workgroup memory of a matvec kernel: lib/matvec_common.wgsl's (inv_rms_wg, head_max,
/// head_inv_l, merge_w, red), the shared reduction's partials and the q8 core's staged input
/// (STAGE_WORDS blocks), to check the q8 path against the device.
fn workgroup_bytes(staged: u32, subgroup: bool) -> u32 {
    let common = 4 + 2 * 64 * 4 + 4 * 1024 + 4 * WG;
    let partial = if subgroup { 0 } else { 16 * WG };
    common + partial + staged
}

/// Staged input of the q8 core: STAGE_WORDS = 32 blocks of int8 words, scales and sums.
const Q8_STAGED_BYTES: u32 = 32 * (8 * 16 + 2 * 16);
/// Staged input of the f16 core: STAGE_WORDS = 16 blocks of f16 pairs.
const F16_STAGED_BYTES: u32 = 16 * 16 * 16;

/// How `w`'s kernels run on an adapter.
struct Plan {
    shader: Shader,
    /// Rows per workgroup (`ROWS_PER_WG`).
    rows_per_wg: u32,
    /// The subgroup kernel's row-group rounds per subgroup (`ITERS`); `None` for the others.
    iters: Option<u32>,
    /// The subgroup kernel's threads per workgroup (`WG`).
    threads: u32,
    /// The subgroup kernel on an adapter with one subgroup size: (`SG`, `SEG`), that size and
    /// the lanes per row-group slot.
    sg: Option<(u32, u32)>,
}

/// The shader, rows per workgroup, subgroup rounds and sizes of `w`'s kernels on `ctx`.
fn plan(ctx: &GpuContext, w: &Q1_0Weight, opts: &MatvecOptions) -> Result<Plan> {
    let subgroup = match opts.reduce {
        Reduce::Auto => ctx.features.has_subgroups,
        Reduce::Shared => false,
        Reduce::Subgroup => true,
    };
    let path = opts.path.unwrap_or(ctx.kernel_path).resolve(&ctx.info);
    let staged_fits = |bytes: u32| {
        w.format == WeightFormat::Q1_0
            && w.k.is_multiple_of(128)
            && workgroup_bytes(bytes, subgroup) <= ctx.limits.max_compute_workgroup_storage_size
    };
    let q8 = path == KernelPath::Q8 && staged_fits(Q8_STAGED_BYTES);
    let f16 = path == KernelPath::F16 && staged_fits(F16_STAGED_BYTES);
    // The reduction loop's words per row (the q8 and f16 cores' words are 128-weight blocks).
    let words = match q8 || f16 {
        true => (w.k / 128) as u32,
        false => w.words_per_row() as u32,
    }
    .max(1);
    let fixed = |shader, rows_per_wg| Plan {
        shader,
        rows_per_wg,
        iters: None,
        threads: WG,
        sg: None,
    };
    // Shaders of the packed formats work on groups of ROWS_PER_GROUP rows sharing each load of
    // x; the dense one has a fixed 4 rows per workgroup.
    Ok(match (w.format, subgroup) {
        (WeightFormat::F32, _) => fixed(Shader::MatvecF32, DENSE_ROWS_PER_WG),
        (format, true) => {
            let reported = (ctx.info.subgroup_min_size, ctx.info.subgroup_max_size);
            let (sg_min, sg_max) = match opts.subgroup_sizes.unwrap_or(reported) {
                (lo, hi) if lo.is_power_of_two() && hi.is_power_of_two() && lo <= hi => {
                    (lo.clamp(4, 128), hi.clamp(4, 128))
                }
                // Unknown sizes: WebGPU's bounds.
                _ => (4, 128),
            };
            let shader = match format {
                WeightFormat::Q1_0 if q8 => Shader::MatvecQ1_0Q8Subgroup,
                WeightFormat::Q1_0 if f16 => Shader::MatvecQ1_0F16Subgroup,
                WeightFormat::Q1_0 => Shader::MatvecQ1_0Subgroup,
                _ => Shader::MatvecQ2_0Subgroup,
            };
            // Row groups per slot: `GROUPS` of the weight core.
            let groups = if q8 { Q8_GROUPS_PER_SUBGROUP } else { 1 };
            // One subgroup size: it is an override, and rows shorter than the subgroup get
            // slots of fewer lanes. Else enough row groups for the smallest size and enough
            // rounds that the largest covers them too.
            let sg = (sg_min == sg_max).then(|| (sg_min, sg_min.min(1 << words.ilog2())));
            let lanes = sg.map_or(sg_min, |(_, seg)| seg);
            let rows = |threads: u32| ROWS_PER_GROUP * groups * threads / lanes;
            let threads = match opts.workgroup_size {
                Some(t) if SUBGROUP_WORKGROUP_SIZES.contains(&t) && t >= sg_max => t,
                Some(t) => {
                    return Err(Error::InvalidArgument(format!(
                        "matvec {}: workgroup size {t} is not one of \
                         {SUBGROUP_WORKGROUP_SIZES:?} at least the subgroup size {sg_max}",
                        w.name
                    )));
                }
                None if ctx.info.device_type == wgpu::DeviceType::Cpu => WG,
                // The largest size that still makes MIN_WORKGROUPS workgroups of the widest
                // part, else the smallest one the subgroups fit.
                None => {
                    let n = w.parts.iter().map(|p| p.n_rows as u32).max().unwrap_or(0);
                    let mut fits = SUBGROUP_WORKGROUP_SIZES
                        .into_iter()
                        .filter(|&t| t >= sg_max);
                    fits.clone()
                        .find(|&t| n.div_ceil(rows(t)) >= MIN_WORKGROUPS)
                        .or(fits.next_back())
                        .unwrap_or(WG)
                }
            };
            let iters = match sg {
                Some(_) => 1,
                None => sg_max / sg_min,
            };
            Plan {
                shader,
                rows_per_wg: rows(threads),
                iters: Some(iters),
                threads,
                sg,
            }
        }
        (format, false) => {
            // Threads per row group: a power of two up to 64, at most the row's word count.
            let tpg = 1u32 << words.min(64).ilog2();
            let shader = match format {
                WeightFormat::Q1_0 if q8 => Shader::MatvecQ1_0Q8,
                WeightFormat::Q1_0 if f16 => Shader::MatvecQ1_0F16,
                WeightFormat::Q1_0 => Shader::MatvecQ1_0,
                _ => Shader::MatvecQ2_0,
            };
            fixed(shader, ROWS_PER_GROUP * WG / tpg)
        }
    })
}

/// One token: every part's kernel, whatever the step (they write disjoint ranges of y).
impl Op for MatvecQ1_0 {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepParams) {
        match &self.one_chunk {
            Some((kernels, chunk)) if step.n_kv <= *chunk => kernels.encode(pass, step),
            _ => self.kernels.encode(pass, step),
        }
    }
}
