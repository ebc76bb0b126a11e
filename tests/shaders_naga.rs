//! Every WGSL file and specialisation through naga (no GPU needed): WGSL parse + validation with
//! the capabilities its variant needs, then SPIR-V, MSL and HLSL output, so Metal and DX12
//! problems show on a Linux CI machine.

use std::collections::BTreeSet;

use bonsai_wgpu::gpu::kernel::Shader;
use naga::back::{PipelineConstants, hlsl, msl, pipeline_constants, spv};
use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};

/// Override values per shader: real model shapes plus edge cases. Shaders not listed are
/// compiled with their defaults (and fail here if an override has none).
fn specializations(name: &str) -> Vec<Vec<(&'static str, f64)>> {
    let matvec = |k: f64, n: f64, acc: f64, rows: f64| {
        vec![
            ("K", k),
            ("N", n),
            ("ACCUMULATE", acc),
            ("ROWS_PER_WG", rows),
            ("Y_OFFSET", 0.0),
        ]
    };
    // Attention shaders: head_dim 128 (every Qwen3) plus the given overrides.
    let attn = |rest: &[(&'static str, f64)]| {
        let mut v = vec![("HEAD_DIM", 128.0)];
        v.extend_from_slice(rest);
        v
    };
    // The fused decode plan's matvecs (lib/matvec_common.wgsl): qkv with the norm folded in,
    // gate|up with silu, Wo over merged attention partials, the head with argmax stage 1.
    let fused = |rows: f64| {
        vec![
            [matvec(2048.0, 4096.0, 0.0, rows), vec![("RMS", 1.0)]].concat(),
            [matvec(2048.0, 4096.0, 0.0, rows), vec![("GAIN", 1.0)]].concat(),
            [
                matvec(2048.0, 2048.0, 1.0, rows),
                vec![("MERGE_ONE", 1.0), ("NORM_OUT", 1.0), ("MAX_CHUNKS", 16.0)],
            ]
            .concat(),
            [matvec(6144.0, 2048.0, 1.0, rows), vec![("NORM_OUT", 1.0)]].concat(),
            [
                matvec(2048.0, 12288.0, 0.0, rows),
                vec![("RMS", 1.0), ("GLU", 1.0)],
            ]
            .concat(),
            [
                matvec(2048.0, 2048.0, 1.0, rows),
                vec![
                    ("MERGE", 1.0),
                    ("CHUNK", 128.0),
                    ("MAX_CHUNKS", 256.0),
                    ("NORM_OUT", 1.0),
                ],
            ]
            .concat(),
            [
                matvec(4096.0, 151669.0, 0.0, rows),
                vec![("RMS", 1.0), ("ARGMAX", 1.0), ("ARG_BASE", 0.0)],
            ]
            .concat(),
        ]
    };
    let with_iters = |v: Vec<Vec<(&'static str, f64)>>| -> Vec<Vec<(&'static str, f64)>> {
        v.into_iter()
            .map(|o| [o, vec![("ITERS", 2.0)]].concat())
            .collect()
    };
    match name {
        "matvec_q1_0_subgroup"
        | "matvec_q1_0_q8_subgroup"
        | "matvec_q1_0_f16_subgroup"
        | "matvec_q2_0_subgroup" => [
            vec![
                [matvec(2048.0, 6144.0, 0.0, 128.0), vec![("ITERS", 1.0)]].concat(),
                [matvec(12288.0, 4096.0, 1.0, 256.0), vec![("ITERS", 32.0)]].concat(),
                [matvec(4096.0, 151669.0, 0.0, 32.0), vec![("ITERS", 2.0)]].concat(),
                // One subgroup size (SG), slots of SEG lanes, small workgroups (WG).
                [
                    matvec(2048.0, 1024.0, 0.0, 32.0),
                    vec![("ITERS", 1.0), ("SG", 32.0), ("SEG", 16.0), ("WG", 64.0)],
                ]
                .concat(),
                [
                    matvec(256.0, 100.0, 1.0, 512.0),
                    vec![("ITERS", 1.0), ("SG", 8.0), ("SEG", 2.0), ("WG", 128.0)],
                ]
                .concat(),
            ],
            with_iters(fused(128.0)),
        ]
        .concat(),
        "matvec_q2_0" => vec![
            matvec(2048.0, 6144.0, 0.0, 16.0),
            matvec(12288.0, 4096.0, 1.0, 16.0),
            matvec(4096.0, 151669.0, 0.0, 64.0),
            matvec(64.0, 1.0, 1.0, 256.0),
        ]
        .into_iter()
        .chain(fused(32.0))
        .collect(),
        "matvec_q1_0" | "matvec_q1_0_q8" | "matvec_q1_0_f16" => vec![
            matvec(2048.0, 6144.0, 0.0, 16.0),
            matvec(12288.0, 4096.0, 1.0, 32.0),
            matvec(4096.0, 151669.0, 0.0, 128.0),
            matvec(128.0, 1.0, 1.0, 256.0),
        ]
        .into_iter()
        .chain(fused(32.0))
        .collect(),
        "matvec_f32" => vec![
            vec![
                ("K", 2048.0),
                ("N", 6144.0),
                ("ACCUMULATE", 0.0),
                ("Y_OFFSET", 0.0),
            ],
            vec![
                ("K", 4.0),
                ("N", 1.0),
                ("ACCUMULATE", 1.0),
                ("Y_OFFSET", 151668.0),
            ],
        ],
        "embed_q1_0" | "embed_q2_0" | "embed_f32" => vec![
            vec![("K", 2048.0), ("N", 151669.0), ("ROW0", 0.0)],
            vec![("K", 4096.0), ("N", 65536.0), ("ROW0", 65536.0)],
        ],
        "rmsnorm" => vec![
            vec![("N", 2048.0), ("EPS", 1e-6)],
            vec![("N", 128.0), ("EPS", 1e-5)],
        ],
        "silu_mul" => vec![vec![("N", 6144.0)], vec![("N", 1.0)]],
        "argmax" => vec![
            vec![("N", 151669.0), ("ITEMS", 8.0)],
            vec![("N", 75.0), ("ITEMS", 1.0), ("USE_IDX", 1.0)],
        ],
        "qk_norm_rope" => vec![
            // 1.7B, 4B/8B, tiny; partial rotation.
            attn(&[
                ("N_HEAD", 16.0),
                ("N_HEAD_KV", 8.0),
                ("N_ROT", 128.0),
                ("EPS", 1e-6),
            ]),
            attn(&[
                ("N_HEAD", 32.0),
                ("N_HEAD_KV", 8.0),
                ("N_ROT", 128.0),
                ("EPS", 1e-6),
            ]),
            attn(&[
                ("N_HEAD", 4.0),
                ("N_HEAD_KV", 2.0),
                ("N_ROT", 64.0),
                ("EPS", 1e-5),
            ]),
        ],
        "attention_decode" => vec![
            attn(&[
                ("N_HEAD_KV", 8.0),
                ("GROUP", 2.0),
                ("CHUNK", 64.0),
                ("MAX_CHUNKS", 512.0),
                ("SCALE", 0.088),
            ]),
            attn(&[
                ("N_HEAD_KV", 8.0),
                ("GROUP", 4.0),
                ("CHUNK", 32.0),
                ("MAX_CHUNKS", 2048.0),
                ("SCALE", 0.088),
            ]),
            vec![
                ("HEAD_DIM", 64.0),
                ("N_HEAD_KV", 1.0),
                ("GROUP", 8.0),
                ("CHUNK", 128.0),
                ("MAX_CHUNKS", 1.0),
            ],
            // The unfused plan's one-chunk kernel (no merge).
            attn(&[
                ("N_HEAD_KV", 8.0),
                ("GROUP", 2.0),
                ("CHUNK", 64.0),
                ("MAX_CHUNKS", 1.0),
                ("SINGLE", 1.0),
            ]),
        ],
        "attention_merge" => vec![
            attn(&[("CHUNK", 64.0), ("MAX_CHUNKS", 512.0)]),
            vec![("HEAD_DIM", 64.0), ("CHUNK", 128.0), ("MAX_CHUNKS", 1.0)],
            // More chunks than the weight table (65,536 positions in chunks of 32).
            vec![("HEAD_DIM", 16.0), ("CHUNK", 32.0), ("MAX_CHUNKS", 2048.0)],
        ],
        "attention_prefill" => vec![
            attn(&[("N_HEAD_KV", 8.0), ("GROUP", 2.0), ("SCALE", 0.088)]),
            attn(&[("N_HEAD_KV", 8.0), ("GROUP", 4.0), ("SCALE", 0.088)]),
            vec![("HEAD_DIM", 64.0), ("N_HEAD_KV", 2.0), ("GROUP", 8.0)],
        ],
        "matmul_q1_0" | "matmul_q1_0_q8" | "matmul_q2_0" | "matmul_f32" => {
            let mm = |k: f64, n: f64, row0: f64, rows: f64, acc: f64| {
                vec![
                    ("K", k),
                    ("N", n),
                    ("ROW0", row0),
                    ("N_ROWS", rows),
                    ("ACCUMULATE", acc),
                ]
            };
            vec![
                mm(2048.0, 6144.0, 0.0, 6144.0, 0.0),
                mm(6144.0, 2048.0, 0.0, 2048.0, 1.0),
                mm(4096.0, 151669.0, 65536.0, 65536.0, 0.0),
                mm(128.0, 1.0, 0.0, 1.0, 1.0),
            ]
        }
        "topk" => vec![
            vec![("N", 151669.0), ("K", 64.0)],
            vec![("N", 4800.0), ("K", 40.0), ("ITEMS", 3.0), ("USE_IDX", 1.0)],
        ],
        _ => vec![vec![]],
    }
}

fn capabilities(needs: bonsai_wgpu::gpu::kernel::ShaderNeeds) -> Capabilities {
    // unpack2x16float (Q1_0 / Q2_0 scales) is core WGSL; naga gates it behind this capability,
    // which every back end wgpu uses supports.
    let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    if needs.subgroups {
        caps |= Capabilities::SUBGROUP;
    }
    caps
}

fn compile_all_backends(shader: Shader, overrides: &[(&'static str, f64)]) -> Result<(), String> {
    let name = shader.name();
    let source = shader.source();
    let module = naga::front::wgsl::parse_str(&source)
        .map_err(|e| format!("{name}: WGSL parse: {}", e.emit_to_string(&source)))?;
    let mut validator = Validator::new(ValidationFlags::all(), capabilities(shader.needs()));
    validator
        .subgroup_stages(ShaderStages::COMPUTE)
        .subgroup_operations(SubgroupOperationSet::all());
    let info = validator
        .validate(&module)
        .map_err(|e| format!("{name}: validate: {}", e.emit_to_string(&source)))?;
    let mut constants = PipelineConstants::default();
    for &(k, v) in overrides {
        constants.insert(k.to_string(), v);
    }
    let (module, info) = pipeline_constants::process_overrides(&module, &info, None, &constants)
        .map_err(|e| format!("{name} {overrides:?}: overrides: {e}"))?;

    let spv_opts = spv::Options {
        lang_version: (1, 3),
        ..Default::default()
    };
    spv::write_vec(&module, &info, &spv_opts, None)
        .map_err(|e| format!("{name} {overrides:?}: SPIR-V: {e}"))?;

    let msl_opts = msl::Options {
        lang_version: (2, 4),
        ..Default::default()
    };
    msl::write_string(&module, &info, &msl_opts, &msl::PipelineOptions::default())
        .map_err(|e| format!("{name} {overrides:?}: MSL: {e}"))?;

    let hlsl_opts = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_2,
        ..Default::default()
    };
    let mut hlsl_out = String::new();
    hlsl::Writer::new(&mut hlsl_out, &hlsl_opts, &hlsl::PipelineOptions::default())
        .write(&module, &info, None)
        .map_err(|e| format!("{name} {overrides:?}: HLSL: {e}"))?;
    Ok(())
}

#[test]
fn every_shader_file_is_registered() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let files: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("shaders/ directory")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".wgsl").map(str::to_string)
        })
        .collect();
    let registered: BTreeSet<String> = Shader::ALL.iter().map(|s| s.file().to_string()).collect();
    assert_eq!(files, registered, "shaders/*.wgsl vs Shader::ALL");
    let mut parts = BTreeSet::new();
    for s in Shader::ALL {
        let on_disk = std::fs::read_to_string(format!("{dir}/{}.wgsl", s.file())).unwrap();
        assert_eq!(on_disk, s.main_part(), "{} differs from the file", s.name());
        let mut joined = String::new();
        for (part, text) in s.parts() {
            let on_disk = std::fs::read_to_string(format!("{dir}/lib/{part}.wgsl")).unwrap();
            assert_eq!(
                &on_disk, text,
                "lib/{part}.wgsl differs from the embedded text"
            );
            joined.push_str(text);
            parts.insert(part.to_string());
        }
        joined.push_str(&on_disk);
        assert_eq!(
            joined,
            s.source(),
            "{}: source is its parts then its file",
            s.name()
        );
    }
    let lib: BTreeSet<String> = std::fs::read_dir(format!("{dir}/lib"))
        .expect("shaders/lib/ directory")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".wgsl").map(str::to_string)
        })
        .collect();
    assert_eq!(
        lib, parts,
        "shaders/lib/*.wgsl vs the parts the shaders use"
    );
}

#[test]
fn every_shader_compiles_to_spirv_msl_hlsl() {
    let mut failures = Vec::new();
    let mut n = 0;
    for &shader in Shader::ALL {
        for overrides in specializations(shader.name()) {
            n += 1;
            if let Err(e) = compile_all_backends(shader, &overrides) {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{n} specialisations compiled to SPIR-V, MSL and HLSL");
}
