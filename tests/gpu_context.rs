//! Adapter choice and error reporting of the GPU context.

use bonsai_wgpu::Error;
use bonsai_wgpu::gpu::buffers::{read_buffer, storage_buffer};
use bonsai_wgpu::gpu::context::GpuInfo;
use bonsai_wgpu::gpu::context::parse_backend;
use bonsai_wgpu::gpu::{GpuContext, GpuOptions, KernelPath};

fn env_overrides_set() -> bool {
    std::env::var_os("BONSAI_WGPU_ADAPTER").is_some()
        || std::env::var_os("BONSAI_WGPU_BACKEND").is_some()
}

#[test]
fn default_context_reports_adapter_and_limits() {
    let ctx = pollster::block_on(GpuContext::new(&GpuOptions::default())).unwrap();
    eprintln!(
        "{} {:?} {:?} driver {} / {}; features {:?}; subgroups {}..{}",
        ctx.info.name,
        ctx.info.backend,
        ctx.info.device_type,
        ctx.info.driver,
        ctx.info.driver_info,
        ctx.features,
        ctx.info.subgroup_min_size,
        ctx.info.subgroup_max_size
    );
    assert!(!ctx.info.name.is_empty());
    assert!(ctx.limits.max_storage_buffers_per_shader_stage >= 8);
    assert!(ctx.max_binding_bytes() >= 128 << 20);
}

#[test]
fn unknown_adapter_name_lists_what_was_found() {
    if env_overrides_set() {
        eprintln!("skip: BONSAI_WGPU_* set");
        return;
    }
    let opts = GpuOptions {
        adapter_name: Some("no-such-gpu-xyz".into()),
        ..Default::default()
    };
    match pollster::block_on(GpuContext::new(&opts)) {
        Err(Error::Adapter(msg)) => {
            eprintln!("{msg}");
            assert!(msg.contains("no-such-gpu-xyz"), "{msg}");
            assert!(msg.contains("name does not match"), "{msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(ctx) => panic!("matched {}", ctx.info.name),
    }
}

#[test]
fn backend_names_parse() {
    assert_eq!(parse_backend("Vulkan").unwrap(), wgpu::Backends::VULKAN);
    assert_eq!(parse_backend(" metal ").unwrap(), wgpu::Backends::METAL);
    assert_eq!(parse_backend("dx12").unwrap(), wgpu::Backends::DX12);
    assert_eq!(parse_backend("gl").unwrap(), wgpu::Backends::GL);
    assert_eq!(
        parse_backend("webgpu").unwrap(),
        wgpu::Backends::BROWSER_WEBGPU
    );
    let err = parse_backend("cuda").unwrap_err().to_string();
    assert!(err.contains("cuda") && err.contains("vulkan"), "{err}");
}

/// `KernelPath::Auto` per adapter: q8 on Vulkan and DX12 GPUs, f16 on Metal, f32 on CPU
/// adapters and in browsers; explicit paths are kept; the context holds a resolved path.
#[test]
fn auto_kernel_path_is_chosen_per_adapter() {
    use wgpu::{Backend, DeviceType};
    let info = |backend, device_type| GpuInfo {
        name: "test".into(),
        backend,
        device_type,
        driver: String::new(),
        driver_info: String::new(),
        subgroup_min_size: 32,
        subgroup_max_size: 32,
    };
    let auto = |backend, device_type| KernelPath::Auto.resolve(&info(backend, device_type));
    assert_eq!(
        auto(Backend::Vulkan, DeviceType::DiscreteGpu),
        KernelPath::Q8
    );
    assert_eq!(
        auto(Backend::Vulkan, DeviceType::IntegratedGpu),
        KernelPath::Q8
    );
    assert_eq!(auto(Backend::Dx12, DeviceType::DiscreteGpu), KernelPath::Q8);
    assert_eq!(
        auto(Backend::Metal, DeviceType::IntegratedGpu),
        KernelPath::F16
    );
    assert_eq!(auto(Backend::Vulkan, DeviceType::Cpu), KernelPath::F32);
    assert_eq!(auto(Backend::Dx12, DeviceType::Cpu), KernelPath::F32);
    assert_eq!(
        auto(Backend::BrowserWebGpu, DeviceType::DiscreteGpu),
        KernelPath::F32
    );
    assert_eq!(auto(Backend::Gl, DeviceType::DiscreteGpu), KernelPath::F32);
    let gpu = info(Backend::Vulkan, DeviceType::DiscreteGpu);
    for path in [KernelPath::F32, KernelPath::Q8, KernelPath::F16] {
        assert_eq!(path.resolve(&gpu), path);
    }
    let ctx = pollster::block_on(GpuContext::new(&GpuOptions::default())).unwrap();
    assert_ne!(ctx.kernel_path, KernelPath::Auto);
    if std::env::var_os("BONSAI_KERNEL_PATH").is_none() {
        assert_eq!(ctx.kernel_path, KernelPath::Auto.resolve(&ctx.info));
    }
}

/// A validation error (copy past the end of a buffer) comes back as Error::Gpu, not a panic.
#[test]
fn validation_errors_surface_as_results() {
    let ctx = pollster::block_on(GpuContext::new(&GpuOptions::default())).unwrap();
    let small = storage_buffer(&ctx, "small", 16).unwrap();
    let res = pollster::block_on(read_buffer::<f32>(&ctx, &small, 0, 64));
    match res {
        Err(Error::Gpu(msg)) => eprintln!("got: {msg}"),
        other => panic!("expected Error::Gpu, got {other:?}"),
    }
    // The error is consumed: the context keeps working.
    let ok = pollster::block_on(read_buffer::<f32>(&ctx, &small, 0, 4)).unwrap();
    assert_eq!(ok, vec![0.0; 4]);
}
