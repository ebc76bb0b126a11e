//! GPU context: picks an adapter, requests a device with the optional features the kernels can
//! use (shader-f16, subgroups, timestamps) and the adapter's full limits.
//!
//! Adapter choice, in order: `BONSAI_WGPU_ADAPTER` / [`GpuOptions::adapter_name`] (substring,
//! case-insensitive) restricts the candidates; `BONSAI_WGPU_BACKEND` / [`GpuOptions::backends`]
//! restricts the backends; among the usable candidates the device type decides (discrete GPU
//! first under high performance, integrated first under low power, CPU rasterisers such as
//! lavapipe last and only when [`GpuOptions::allow_cpu`] is set).

use std::sync::{Arc, Mutex};

use crate::{Error, Result};

/// Smallest limits every kernel of this crate relies on (WebGPU defaults are at or above them).
const MIN_STORAGE_BUFFERS_PER_STAGE: u32 = 8;
const MIN_INVOCATIONS_PER_WORKGROUP: u32 = 256;
const MIN_WORKGROUP_STORAGE_BYTES: u32 = 16384;

/// How to choose the GPU.
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Backends to consider; `None` = Vulkan/Metal/DX12/WebGPU, then GL if those have no usable
    /// adapter (`BONSAI_WGPU_BACKEND` overrides).
    pub backends: Option<wgpu::Backends>,
    /// Adapter name substring, case-insensitive (`BONSAI_WGPU_ADAPTER` overrides).
    pub adapter_name: Option<String>,
    /// Which kind of GPU to prefer when several are usable.
    pub power: wgpu::PowerPreference,
    /// Accept CPU adapters (lavapipe, WARP, SwiftShader) when no GPU is usable.
    pub allow_cpu: bool,
    /// Build every kernel with wgpu's runtime bounds checks, the trusted ones too
    /// ([`crate::gpu::kernel::Shader::trusted`]): for tests and debugging
    /// (`BONSAI_CHECKED_SHADERS=1` sets it as well).
    pub checked_shaders: bool,
    /// Arithmetic of the Q1_0 matvec and matmul kernels ([`KernelPath::Auto`]: chosen per
    /// adapter, or by `BONSAI_KERNEL_PATH=f32|q8|f16` when set; an explicit path wins over it).
    pub kernel_path: KernelPath,
}

/// The arithmetic of the Q1_0 product kernels (matvec for decode, matmul for prefill).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// Chosen per adapter ([`KernelPath::resolve`]): [`KernelPath::Q8`] on Vulkan and DX12
    /// GPUs (the arithmetic of llama.cpp's GPU backends: q8 activations, packed integer
    /// dots), [`KernelPath::F16`] on Metal (Apple GPUs have no fast packed integer dot), and
    /// [`KernelPath::F32`] on CPU adapters (lavapipe, WARP, SwiftShader: where the tests compare
    /// the GPU with the CPU reference token for token; int8 rounding makes a whole model
    /// sensitive to any perturbation upstream, so q8 replies part from the f32 CPU reference
    /// sooner) and in browsers (no packed dot in core WGSL: it is emulated there).
    #[default]
    Auto,
    /// f32 activations, each sign applied to its activation: the portable path and the exact
    /// reference of the others.
    F32,
    /// Activations quantized to int8 in blocks of 32 (llama.cpp's q8_0) by the kernel that
    /// reads them, signs applied by packed 4 x 8-bit integer dot products (`dot4I8Packed`).
    /// CPU reference: [`crate::cpu::ops::Matrix::matvec_q8`].
    Q8,
    /// The matvec's activations staged as f16 pairs, one XOR flipping two signs (for adapters
    /// without a fast packed integer dot: Apple GPUs); the pairs are added in f32 until naga
    /// can bitcast to `vec2<f16>`. Core WGSL; the matmul runs the f32 kernel.
    F16,
}

impl KernelPath {
    /// The name the tools and `BONSAI_KERNEL_PATH` accept.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Auto => "auto",
            KernelPath::F32 => "f32",
            KernelPath::Q8 => "q8",
            KernelPath::F16 => "f16",
        }
    }

    /// The path `Auto` means on the adapter `info` describes (see [`KernelPath::Auto`]); other
    /// paths stay as they are.
    pub fn resolve(self, info: &GpuInfo) -> KernelPath {
        use wgpu::{Backend, DeviceType};
        match self {
            KernelPath::Auto => match (info.device_type, info.backend) {
                (DeviceType::Cpu | DeviceType::Other, _) => KernelPath::F32,
                (_, Backend::Vulkan | Backend::Dx12) => KernelPath::Q8,
                (_, Backend::Metal) => KernelPath::F16,
                _ => KernelPath::F32,
            },
            path => path,
        }
    }
}

impl std::fmt::Display for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KernelPath {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(KernelPath::Auto),
            "f32" => Ok(KernelPath::F32),
            "q8" => Ok(KernelPath::Q8),
            "f16" => Ok(KernelPath::F16),
            other => Err(Error::InvalidArgument(format!(
                "kernel path `{other}`: expected auto, f32, q8 or f16"
            ))),
        }
    }
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            backends: None,
            adapter_name: None,
            power: wgpu::PowerPreference::HighPerformance,
            allow_cpu: true,
            checked_shaders: false,
            kernel_path: KernelPath::Auto,
        }
    }
}

/// What the chosen adapter is.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    /// Adapter name as the driver reports it.
    pub name: String,
    /// API wgpu runs on (Vulkan, Metal, DX12, GL, browser WebGPU).
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual, CPU or other.
    pub device_type: wgpu::DeviceType,
    /// Driver name (may be empty).
    pub driver: String,
    /// Driver version or other driver details (may be empty).
    pub driver_info: String,
    /// Subgroup size range reported by the adapter (0 when unknown).
    pub subgroup_min_size: u32,
    /// Largest subgroup size (0 when unknown).
    pub subgroup_max_size: u32,
}

/// Optional features the device was created with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuFeatures {
    /// `enable f16;` shader variants may be used.
    pub has_f16: bool,
    /// `enable subgroups;` shader variants may be used.
    pub has_subgroups: bool,
    /// Timestamp queries (at pass boundaries, and inside passes when `has_timestamps_in_passes`).
    pub has_timestamps: bool,
    /// Timestamp queries may also be written inside compute passes.
    pub has_timestamps_in_passes: bool,
}

/// A device and queue plus what they can do. Cheap to share: wgpu handles are reference counted.
#[derive(Clone, Debug)]
pub struct GpuContext {
    /// The logical device buffers and pipelines are created on.
    pub device: wgpu::Device,
    /// The queue work is submitted to and buffers are written through.
    pub queue: wgpu::Queue,
    /// What the adapter is.
    pub info: GpuInfo,
    /// Optional features enabled on the device.
    pub features: GpuFeatures,
    /// Limits the device was created with (the adapter's own limits).
    pub limits: wgpu::Limits,
    /// Every kernel is built with runtime bounds checks ([`GpuOptions::checked_shaders`]).
    pub checked_shaders: bool,
    /// The Q1_0 product kernels' arithmetic, resolved for this adapter (never `Auto`); ops
    /// read it when they are built, so a clone with another path builds that path's kernels.
    pub kernel_path: KernelPath,
    /// First uncaptured wgpu error (validation, out of memory) since the last [`Self::take_error`].
    errors: Arc<Mutex<Option<String>>>,
}

/// Parses a backend name as accepted by `BONSAI_WGPU_BACKEND`.
pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    match name.trim().to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
        "metal" | "mtl" => Ok(wgpu::Backends::METAL),
        "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
        "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
        "webgpu" | "browser" => Ok(wgpu::Backends::BROWSER_WEBGPU),
        other => Err(Error::InvalidArgument(format!(
            "BONSAI_WGPU_BACKEND `{other}`: expected vulkan, metal, dx12, gl or webgpu"
        ))),
    }
}

fn env_var(name: &str) -> Option<String> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = name;
        None
    }
}

/// Why an adapter cannot run our kernels, or `None` when it can.
fn unusable_reason(limits: &wgpu::Limits) -> Option<String> {
    let checks = [
        (
            "max_storage_buffers_per_shader_stage",
            limits.max_storage_buffers_per_shader_stage,
            MIN_STORAGE_BUFFERS_PER_STAGE,
        ),
        (
            "max_compute_invocations_per_workgroup",
            limits.max_compute_invocations_per_workgroup,
            MIN_INVOCATIONS_PER_WORKGROUP,
        ),
        (
            "max_compute_workgroup_storage_size",
            limits.max_compute_workgroup_storage_size,
            MIN_WORKGROUP_STORAGE_BYTES,
        ),
    ];
    checks
        .iter()
        .find(|(_, have, need)| have < need)
        .map(|(name, have, need)| format!("{name} = {have} < {need}"))
}

/// Lower rank = preferred.
#[cfg(not(target_arch = "wasm32"))]
fn type_rank(ty: wgpu::DeviceType, power: wgpu::PowerPreference) -> u32 {
    use wgpu::DeviceType::*;
    match (ty, power) {
        (DiscreteGpu, wgpu::PowerPreference::LowPower) => 1,
        (IntegratedGpu, wgpu::PowerPreference::LowPower) => 0,
        (DiscreteGpu, _) => 0,
        (IntegratedGpu, _) => 1,
        (VirtualGpu, _) => 2,
        (Other, _) => 3,
        (Cpu, _) => 4,
    }
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

impl GpuContext {
    /// Chooses an adapter and creates the device. Errors name every adapter that was seen.
    pub async fn new(opts: &GpuOptions) -> Result<GpuContext> {
        let requested = match env_var("BONSAI_WGPU_BACKEND") {
            Some(name) => Some(parse_backend(&name)?),
            None => opts.backends,
        };
        let name_filter = env_var("BONSAI_WGPU_ADAPTER")
            .or_else(|| opts.adapter_name.clone())
            .map(|s| s.to_lowercase());
        // Without a request, try the primary APIs first; GL (noisy to probe, slower compute)
        // only when none of them has a usable adapter.
        let attempts = match requested {
            Some(b) => vec![b],
            None => vec![wgpu::Backends::PRIMARY, wgpu::Backends::GL],
        };
        let mut failures = Vec::new();
        for backends in attempts {
            let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
            desc.backends = backends;
            let instance = wgpu::Instance::new(desc);
            match Self::pick_adapter(&instance, backends, name_filter.as_deref(), opts).await {
                Ok(adapter) => {
                    let mut ctx = Self::from_adapter(adapter).await?;
                    ctx.checked_shaders |= opts.checked_shaders;
                    // from_adapter took BONSAI_KERNEL_PATH or the adapter's choice; an explicit
                    // option wins over both.
                    if opts.kernel_path != KernelPath::Auto {
                        ctx.kernel_path = opts.kernel_path;
                    }
                    return Ok(ctx);
                }
                Err(Error::Adapter(msg)) => failures.push(msg),
                Err(e) => return Err(e),
            }
        }
        Err(Error::Adapter(failures.join(" | ")))
    }

    #[cfg(not(target_arch = "wasm32"))]
    async fn pick_adapter(
        instance: &wgpu::Instance,
        backends: wgpu::Backends,
        name_filter: Option<&str>,
        opts: &GpuOptions,
    ) -> Result<wgpu::Adapter> {
        let adapters = instance.enumerate_adapters(backends).await;
        let mut seen = Vec::new();
        let mut best: Option<(u32, wgpu::Adapter)> = None;
        for adapter in adapters {
            let info = adapter.get_info();
            let why_not = if name_filter.is_some_and(|f| !info.name.to_lowercase().contains(f)) {
                Some("name does not match".to_string())
            } else if info.device_type == wgpu::DeviceType::Cpu
                && !opts.allow_cpu
                && name_filter.is_none()
            {
                Some("CPU adapter and allow_cpu is off".to_string())
            } else {
                unusable_reason(&adapter.limits())
            };
            match why_not {
                Some(reason) => seen.push(format!("{}: {reason}", describe(&info))),
                None => {
                    seen.push(describe(&info));
                    let rank = type_rank(info.device_type, opts.power);
                    if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                        best = Some((rank, adapter));
                    }
                }
            }
        }
        best.map(|(_, a)| a).ok_or_else(|| {
            let filter = name_filter
                .map(|f| format!(" matching `{f}`"))
                .unwrap_or_default();
            let list = if seen.is_empty() {
                "none found".to_string()
            } else {
                seen.join("; ")
            };
            Error::Adapter(format!(
                "no usable adapter{filter} on backends {backends:?}; adapters: {list}"
            ))
        })
    }

    #[cfg(target_arch = "wasm32")]
    async fn pick_adapter(
        instance: &wgpu::Instance,
        backends: wgpu::Backends,
        // Browsers expose one adapter and often hide its name: the filter cannot choose.
        _name_filter: Option<&str>,
        opts: &GpuOptions,
    ) -> Result<wgpu::Adapter> {
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: opts.power,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| Error::Adapter(format!("no adapter on backends {backends:?}: {e}")))?;
        if let Some(reason) = unusable_reason(&adapter.limits()) {
            return Err(Error::Adapter(format!(
                "{} cannot run the model: {reason}",
                describe(&adapter.get_info())
            )));
        }
        Ok(adapter)
    }

    /// Creates the device on a chosen adapter, enabling the optional features it has.
    pub async fn from_adapter(adapter: wgpu::Adapter) -> Result<GpuContext> {
        let info = adapter.get_info();
        let available = adapter.features();
        let wanted = wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        let mut required = available & wanted;
        if !required.contains(wgpu::Features::TIMESTAMP_QUERY) {
            required.remove(
                wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
                    | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
            );
        }
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("bonsai-wgpu"),
                required_features: required,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Device(format!("request failed on {}: {e}", describe(&info))))?;
        let features = GpuFeatures {
            has_f16: required.contains(wgpu::Features::SHADER_F16),
            has_subgroups: required.contains(wgpu::Features::SUBGROUP),
            has_timestamps: required.contains(wgpu::Features::TIMESTAMP_QUERY),
            has_timestamps_in_passes: required
                .contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
        };
        let errors: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            // Display carries the whole "Caused by" chain.
            let msg = e.to_string();
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert(msg);
            }
        }));
        let kernel_path = match env_var("BONSAI_KERNEL_PATH") {
            Some(name) => name.parse::<KernelPath>()?,
            None => KernelPath::Auto,
        };
        let info = GpuInfo {
            name: info.name.clone(),
            backend: info.backend,
            device_type: info.device_type,
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
        };
        Ok(GpuContext {
            kernel_path: kernel_path.resolve(&info),
            checked_shaders: env_var("BONSAI_CHECKED_SHADERS").is_some_and(|v| v.trim() != "0"),
            errors,
            device,
            queue,
            info,
            features,
            limits,
        })
    }

    /// Largest byte size one storage binding (and one buffer) may have on this device.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Returns (and clears) the first wgpu error raised since the last call, as [`Error::Gpu`].
    /// wgpu reports validation and out-of-memory errors asynchronously; read-backs check this.
    pub fn take_error(&self) -> Result<()> {
        let taken = self.errors.lock().ok().and_then(|mut slot| slot.take());
        match taken {
            Some(msg) => Err(Error::Gpu(msg)),
            None => Ok(()),
        }
    }
}
