//! Buffers: storage and uniform buffers with the device's binding limit checked, the per-step
//! [`StepParams`] uniform, and read-back through reusable staging buffers.

use wgpu::util::DeviceExt;

use super::context::GpuContext;
use crate::{Error, Result};

/// Per-step parameters shared by every kernel of a step; one buffer, one write per step.
/// Bind it as `var<uniform> step: StepParams` (WGSL struct with the same four u32 fields + pad).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepParams {
    /// Tokens processed this step (1 for decode).
    pub n_tokens: u32,
    /// Position of the first token of this step.
    pub pos: u32,
    /// Keys/values valid after this step (`pos + n_tokens`).
    pub n_kv: u32,
    /// Spare, keeps the struct 16 bytes (uniform layout).
    pub _pad: u32,
}

impl StepParams {
    /// A step of `n_tokens` tokens starting at position `pos` (`n_kv` follows from both).
    pub fn new(pos: usize, n_tokens: usize) -> StepParams {
        StepParams {
            n_tokens: n_tokens as u32,
            pos: pos as u32,
            n_kv: (pos + n_tokens) as u32,
            _pad: 0,
        }
    }
}

fn check_size(ctx: &GpuContext, bytes: u64) -> Result<()> {
    let allowed = ctx.max_binding_bytes();
    if bytes > allowed {
        return Err(Error::Limit {
            limit: "max_storage_buffer_binding_size",
            needed: bytes,
            allowed,
        });
    }
    Ok(())
}

const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// A zeroed storage buffer of `bytes` (rounded up to 4), usable as binding, copy source and target.
pub fn storage_buffer(ctx: &GpuContext, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
    let size = bytes.max(4).next_multiple_of(4);
    check_size(ctx, size)?;
    Ok(ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage: STORAGE_USAGE,
        mapped_at_creation: false,
    }))
}

/// A storage buffer holding `data`.
pub fn storage_buffer_init<T: bytemuck::Pod>(
    ctx: &GpuContext,
    label: &str,
    data: &[T],
) -> Result<wgpu::Buffer> {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    if bytes.is_empty() {
        return storage_buffer(ctx, label, 4);
    }
    check_size(ctx, bytes.len() as u64)?;
    Ok(ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytes,
            usage: STORAGE_USAGE,
        }))
}

/// A uniform buffer holding `value` (e.g. [`StepParams`]), rewritten with `queue.write_buffer`.
pub fn uniform_buffer_init<T: bytemuck::Pod>(
    ctx: &GpuContext,
    label: &str,
    value: &T,
) -> wgpu::Buffer {
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(value),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
}

/// A reusable staging buffer for reading results back (made once, used every step).
pub struct Readback {
    /// `MAP_READ | COPY_DST` buffer the results are copied into.
    pub staging: wgpu::Buffer,
}

impl Readback {
    /// Creates a staging buffer of `bytes` (rounded up to a multiple of 4, at least 4).
    pub fn new(ctx: &GpuContext, label: &str, bytes: u64) -> Readback {
        Readback {
            staging: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.max(4).next_multiple_of(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        }
    }

    /// Records a copy of `bytes` from `src` at `offset` into the staging buffer.
    pub fn encode_copy(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) {
        encoder.copy_buffer_to_buffer(src, offset, &self.staging, 0, bytes);
    }

    /// Waits for the copied bytes (after submit) and returns the first `len` values as `T`;
    /// any wgpu error raised since the last check comes back as [`Error::Gpu`].
    pub async fn read<T: bytemuck::Pod>(&self, ctx: &GpuContext, len: usize) -> Result<Vec<T>> {
        let bytes = (len * std::mem::size_of::<T>()) as u64;
        let out = map_and_copy(ctx, &self.staging, bytes).await;
        ctx.take_error()?;
        out
    }
}

async fn map_and_copy<T: bytemuck::Pod>(
    ctx: &GpuContext,
    staging: &wgpu::Buffer,
    bytes: u64,
) -> Result<Vec<T>> {
    if bytes == 0 {
        return Ok(Vec::new());
    }
    let mapped = bytes.next_multiple_of(4);
    let slice = staging.slice(0..mapped);
    let (tx, rx) = futures::channel::oneshot::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    #[cfg(not(target_arch = "wasm32"))]
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("poll: {e}")))?;
    #[cfg(target_arch = "wasm32")]
    let _ = ctx;
    rx.await
        .map_err(|_| Error::Gpu("map_async callback dropped".into()))?
        .map_err(|e| Error::Gpu(format!("map_async: {e}")))?;
    let out = {
        let view = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("get_mapped_range: {e}")))?;
        let n = bytes as usize / std::mem::size_of::<T>();
        // Copy through bytes: the mapping is only guaranteed 4-byte aligned.
        let mut out = vec![T::zeroed(); n];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&view[..bytes as usize]);
        out
    };
    staging.unmap();
    Ok(out)
}

/// Copies `len` values of `T` from `buffer` (starting at byte `offset`) to the host.
/// Allocates a staging buffer: for tests and one-off reads; the decode loop uses [`Readback`].
pub async fn read_buffer<T: bytemuck::Pod>(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    offset: u64,
    len: usize,
) -> Result<Vec<T>> {
    let bytes = (len * std::mem::size_of::<T>()) as u64;
    let readback = Readback::new(ctx, "read_buffer staging", bytes);
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("read_buffer"),
        });
    readback.encode_copy(&mut encoder, buffer, offset, bytes.next_multiple_of(4));
    ctx.queue.submit([encoder.finish()]);
    readback.read(ctx, len).await
}

/// Fails unless `buf` holds at least `bytes`: shaders clamp out-of-bounds accesses silently, so
/// a too-small buffer must be caught when the kernel is built.
pub(crate) fn check_binding(buf: &wgpu::Buffer, bytes: usize, what: &str) -> Result<()> {
    if buf.size() < bytes as u64 {
        return Err(Error::InvalidArgument(format!(
            "{what}: buffer of {} bytes, the kernel needs {bytes}",
            buf.size()
        )));
    }
    Ok(())
}
