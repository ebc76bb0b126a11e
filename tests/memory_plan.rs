//! The memory plan: sizes per cache type, and a context that cannot fit refused before anything
//! is allocated with a typed error naming the numbers and the largest context that fits
//! (checked with artificially small limits, on the plan alone and through `Session::new`).

mod common;

use std::sync::Arc;

use bonsai_wgpu::Error;
use bonsai_wgpu::cache_type::CacheType;
use bonsai_wgpu::gpu::memory_plan::{MemoryLimits, MemoryPlan, weight_bytes_of_gguf};
use bonsai_wgpu::gpu::{GpuContext, GpuModel, GpuOptions, Session, SessionOptions};
use bonsai_wgpu::model::config::Qwen3Config;
use common::*;
use pollster::block_on;

const MIB: u64 = 1 << 20;

fn tiny_config() -> Qwen3Config {
    Qwen3Config::from_gguf(&tiny_model()).expect("tiny config")
}

/// Bonsai-1.7B's attention shape on the tiny config (the plan reads only shapes).
fn bonsai_config(n_layer: usize, n_embd: usize, n_head: usize) -> Qwen3Config {
    Qwen3Config {
        n_layer,
        n_embd,
        n_ff: 3 * n_embd,
        n_head,
        n_head_kv: 8,
        head_dim: 128,
        ..tiny_config()
    }
}

fn plan(cfg: &Qwen3Config, n_ctx: usize, cache_type: CacheType) -> MemoryPlan {
    MemoryPlan::new(cfg, 10 * MIB, n_ctx, 256, cache_type, 64)
}

#[test]
fn kv_bytes_per_token_match_llama_cpp() {
    let b17 = bonsai_config(28, 2048, 16);
    // f16: 2 (K, V) x 28 layers x 8 heads x 128 dims x 2 bytes; q8_0: 34 bytes per 32 values
    assert_eq!(plan(&b17, 1, CacheType::F16).kv_per_token, 112 * 1024);
    assert_eq!(
        plan(&b17, 1, CacheType::Q8_0).kv_per_token,
        2 * 28 * 8 * 136
    );
    let b8 = bonsai_config(36, 4096, 32);
    assert_eq!(plan(&b8, 1, CacheType::F16).kv_per_token, 144 * 1024);
    let p = plan(&b17, 32768, CacheType::F16);
    assert_eq!(p.kv, 32768 * 112 * 1024);
    assert_eq!(p.largest_binding.0, 64 * MIB, "{p}");
    assert_eq!(
        p.total(),
        p.weights + p.kv + p.rope + p.activations + p.scratch
    );
}

#[test]
fn weights_of_the_file_equal_the_uploaded_weights() {
    let gguf = tiny_model();
    let ctx = block_on(GpuContext::new(&GpuOptions::default())).expect("GPU adapter");
    let model = GpuModel::load(Arc::new(ctx), &gguf).expect("load");
    let planned = weight_bytes_of_gguf(&gguf);
    let actual = model.weight_bytes();
    // Q1_0 repacking pads a weight's scale words to an even count of halves: a few bytes
    assert!(
        planned.abs_diff(actual) <= 64 * 4,
        "planned {planned}, uploaded {actual}"
    );
}

#[test]
fn a_context_over_the_binding_limit_names_the_largest_that_fits() {
    let cfg = tiny_config();
    // tiny: a layer's f16 K is 2 heads x 128 x 2 = 512 bytes per token, as is the RoPE table
    let limits = MemoryLimits {
        max_binding: MIB,
        available: None,
    };
    for cache_type in CacheType::ALL {
        let p = plan(&cfg, 32768, cache_type);
        let err = p.check(&limits, &cfg).unwrap_err();
        let msg = err.to_string();
        let Error::ContextTooLarge {
            n_ctx,
            needed,
            allowed,
            max_n_ctx,
            ..
        } = err
        else {
            panic!("expected ContextTooLarge, got {msg}");
        };
        assert_eq!((n_ctx, allowed), (32768, MIB), "{msg}");
        assert_eq!(needed, 32768 * 512, "{msg}");
        assert_eq!(max_n_ctx, 2048, "{msg}");
        for number in ["32768", "2048", &MIB.to_string(), &needed.to_string()] {
            assert!(msg.contains(number), "`{msg}` does not name {number}");
        }
        assert!(
            plan(&cfg, max_n_ctx, cache_type)
                .check(&limits, &cfg)
                .is_ok()
        );
        assert!(
            plan(&cfg, max_n_ctx + 1, cache_type)
                .check(&limits, &cfg)
                .is_err()
        );
    }
}

#[test]
fn a_context_over_the_available_memory_names_the_largest_that_fits() {
    let cfg = bonsai_config(28, 2048, 16);
    let avail = 1536 * MIB;
    let limits = MemoryLimits {
        max_binding: 1 << 40,
        available: Some(avail),
    };
    let f16 = plan(&cfg, 32768, CacheType::F16);
    let Err(Error::ContextTooLarge {
        needed, max_n_ctx, ..
    }) = f16.check(&limits, &cfg)
    else {
        panic!("3.5 GiB of f16 cache cannot fit 1.5 GiB");
    };
    assert_eq!(needed, f16.total());
    assert!(plan(&cfg, max_n_ctx, CacheType::F16).total() <= avail);
    assert!(plan(&cfg, max_n_ctx + 1, CacheType::F16).total() > avail);
    // the q8_0 cache fits almost twice the context in the same memory
    let q8 = plan(&cfg, 32768, CacheType::Q8_0).largest_fitting(&limits, &cfg);
    assert!(q8 > max_n_ctx * 18 / 10, "q8_0 {q8} vs f16 {max_n_ctx}");
}

#[test]
fn session_refuses_a_context_over_an_artificially_small_binding_limit() {
    let mut ctx = block_on(GpuContext::new(&GpuOptions::default())).expect("GPU adapter");
    // the plan reads the limits the context carries; the device itself keeps its own
    ctx.limits.max_storage_buffer_binding_size = MIB;
    let model = GpuModel::load(Arc::new(ctx), &tiny_model()).expect("load");
    let opts = |n_ctx| SessionOptions {
        n_ctx,
        ..SessionOptions::default()
    };
    let err = Session::new(Arc::clone(&model), opts(4096))
        .err()
        .expect("4096 tokens cannot fit a 1 MiB binding");
    assert!(
        matches!(
            err,
            Error::ContextTooLarge {
                n_ctx: 4096,
                max_n_ctx: 2048,
                ..
            }
        ),
        "{err}"
    );
    let s = Session::new(model, opts(2048)).expect("2048 tokens fit");
    assert_eq!(s.memory_plan().n_ctx, 2048);
}
