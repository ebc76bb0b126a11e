//! Weights of the CPU reference, read from GGUF: Q1_0 matrices kept quantized, norms in f32.

use std::sync::Arc;

use crate::cpu::ops::Q1Matrix;
use crate::error::Result;
use crate::gguf::Gguf;
use crate::model::config::Qwen3Config;
use crate::model::weights::{Placement, Weights};

/// A Qwen3 model for the CPU reference forward pass.
#[derive(Clone)]
pub struct CpuModel {
    /// Hyperparameters read from the GGUF metadata.
    pub config: Qwen3Config,
    /// Every weight: Q1_0 matrices as stored in the file, norms in f32.
    pub weights: Weights<Q1Matrix, Vec<f32>>,
}

/// Keeps each tensor in host memory.
struct Host;

impl Placement for Host {
    type Matrix = Q1Matrix;
    type Vector = Vec<f32>;

    fn matrix(&mut self, _name: &str, bytes: &[u8], k: usize, n: usize) -> Result<Q1Matrix> {
        Ok(Q1Matrix {
            data: bytes.to_vec(),
            k,
            n,
        })
    }

    fn norm(&mut self, _name: &str, values: Vec<f32>) -> Result<Vec<f32>> {
        Ok(values)
    }
}

impl CpuModel {
    /// Reads the config and every weight from `gguf`, checking types and shapes first.
    pub fn from_gguf(gguf: &Gguf) -> Result<Arc<CpuModel>> {
        let config = Qwen3Config::from_gguf(gguf)?;
        let weights = Weights::load(gguf, &config, Host)?;
        Ok(Arc::new(CpuModel { config, weights }))
    }
}
