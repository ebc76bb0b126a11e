//! GPU back end: device selection, the kernel framework, the Q1_0 weight layout and the ops.

pub mod context;
pub mod kv_cache;
pub mod op;
pub mod ops;
pub mod q1_0;

pub use context::{GpuContext, GpuFeatures, GpuInfo, GpuOptions};
pub use op::{Kernel, KernelSpec, PipelineCache, Readback, Shader, StepParams};
