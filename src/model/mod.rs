//! The model description both engines depend on: hyperparameters ([`config`]), rotary
//! embedding parameters with YaRN ([`rope`]), and the tensor table with the one weight-loading
//! loop ([`weights`]). Nothing here knows about the CPU or the GPU.
//!
//! A new architecture gets its config (metadata keys, checks) and its tensor table here; the
//! engines then need only the ops its forward pass uses that they lack.

pub mod config;
pub mod rope;
pub mod weights;

pub use config::Qwen3Config;
pub use rope::RopeParams;
pub use weights::{LayerWeights, Weights};
