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
    // A fused kernel's subgroup variant: its specialisations with subgroups of 8 and 32 lanes
    // (ROWS_PER_WG = 4 * 256 / SG).
    if let Some(base) = name
        .strip_suffix("_subgroup")
        .filter(|b| *b != "matvec_q1_0")
    {
        return [8.0, 32.0]
            .iter()
            .flat_map(|&sg| {
                specializations(base).into_iter().map(move |mut o| {
                    o.retain(|(k, _)| *k != "ROWS_PER_WG");
                    o.push(("ROWS_PER_WG", 1024.0 / sg));
                    o.push(("SG", sg));
                    o
                })
            })
            .collect();
    }
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
    match name {
        "matvec_q1_0_subgroup" => vec![
            [matvec(2048.0, 6144.0, 0.0, 128.0), vec![("ITERS", 1.0)]].concat(),
            [matvec(12288.0, 4096.0, 1.0, 256.0), vec![("ITERS", 32.0)]].concat(),
            [matvec(4096.0, 151669.0, 0.0, 32.0), vec![("ITERS", 2.0)]].concat(),
        ],
        "matvec_q1_0" => vec![
            matvec(2048.0, 6144.0, 0.0, 16.0),
            matvec(12288.0, 4096.0, 1.0, 32.0),
            matvec(4096.0, 151669.0, 0.0, 128.0),
            matvec(128.0, 1.0, 1.0, 256.0),
        ],
        "embed_q1_0" => vec![
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
        ],
        "attention_merge" => vec![
            attn(&[("CHUNK", 64.0), ("MAX_CHUNKS", 512.0)]),
            vec![("HEAD_DIM", 64.0), ("CHUNK", 128.0), ("MAX_CHUNKS", 1.0)],
        ],
        "attention_prefill" => vec![
            attn(&[("N_HEAD_KV", 8.0), ("GROUP", 2.0), ("SCALE", 0.088)]),
            attn(&[("N_HEAD_KV", 8.0), ("GROUP", 4.0), ("SCALE", 0.088)]),
            vec![("HEAD_DIM", 64.0), ("N_HEAD_KV", 2.0), ("GROUP", 8.0)],
        ],
        "matmul_q1_0" => {
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
        // Fused decode kernels (shared core q1_0_rows.wgsl): 1.7B, 8B and tiny shapes.
        "qkv_rope" => vec![
            attn(&[
                ("K", 2048.0),
                ("N", 4096.0),
                ("ROWS_PER_WG", 128.0),
                ("N_HEAD", 16.0),
                ("N_HEAD_KV", 8.0),
                ("N_ROT", 128.0),
                ("EPS", 1e-6),
            ]),
            attn(&[
                ("K", 4096.0),
                ("N", 6144.0),
                ("ROWS_PER_WG", 128.0),
                ("N_HEAD", 32.0),
                ("N_HEAD_KV", 8.0),
                ("N_ROT", 64.0),
                ("EPS", 1e-5),
            ]),
            vec![
                ("HEAD_DIM", 64.0),
                ("K", 256.0),
                ("N", 256.0),
                ("ROWS_PER_WG", 64.0),
                ("N_HEAD", 2.0),
                ("N_HEAD_KV", 1.0),
                ("N_ROT", 64.0),
            ],
        ],
        "wo_merge" => vec![
            attn(&[
                ("K", 2048.0),
                ("N", 2048.0),
                ("ROWS_PER_WG", 16.0),
                ("N_HEAD", 16.0),
                ("CHUNK", 64.0),
                ("MAX_CHUNKS", 512.0),
            ]),
            attn(&[
                ("K", 4096.0),
                ("N", 4096.0),
                ("ROWS_PER_WG", 16.0),
                ("N_HEAD", 32.0),
                ("CHUNK", 128.0),
                ("MAX_CHUNKS", 1.0),
            ]),
        ],
        "ffn_gate_up" => vec![
            vec![
                ("K", 2048.0),
                ("N", 12288.0),
                ("ROWS_PER_WG", 16.0),
                ("EPS", 1e-6),
            ],
            vec![
                ("K", 128.0),
                ("N", 4.0),
                ("ROWS_PER_WG", 256.0),
                ("EPS", 1e-5),
            ],
        ],
        "head_argmax" => vec![
            vec![
                ("K", 2048.0),
                ("N", 151669.0),
                ("ROWS_PER_WG", 16.0),
                ("EPS", 1e-6),
            ],
            vec![
                ("K", 4096.0),
                ("N", 65536.0),
                ("ROWS_PER_WG", 32.0),
                ("Y_OFFSET", 65536.0),
                ("GROUP_OFFSET", 2048.0),
            ],
        ],
        _ => vec![vec![]],
    }
}

fn capabilities(needs: bonsai_wgpu::gpu::kernel::ShaderNeeds) -> Capabilities {
    // unpack2x16float (Q1_0 scales) is core WGSL; naga gates it behind this capability, which
    // every back end wgpu uses supports.
    let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    if needs.subgroups {
        caps |= Capabilities::SUBGROUP;
    }
    caps
}

fn compile_all_backends(shader: Shader, overrides: &[(&'static str, f64)]) -> Result<(), String> {
    let name = shader.name();
    let module = naga::front::wgsl::parse_str(shader.source())
        .map_err(|e| format!("{name}: WGSL parse: {}", e.emit_to_string(shader.source())))?;
    let mut validator = Validator::new(ValidationFlags::all(), capabilities(shader.needs()));
    validator
        .subgroup_stages(ShaderStages::COMPUTE)
        .subgroup_operations(SubgroupOperationSet::all());
    let info = validator
        .validate(&module)
        .map_err(|e| format!("{name}: validate: {}", e.emit_to_string(shader.source())))?;
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
    // The Q1_0 row core and its two reductions are prepended to the fused kernels.
    let mut expected_files: BTreeSet<String> =
        Shader::ALL.iter().map(|s| s.file().to_string()).collect();
    for part in ["q1_0_rows", "q1_0_reduce_shared", "q1_0_reduce_subgroup"] {
        expected_files.insert(part.to_string());
    }
    assert_eq!(files, expected_files, "shaders/*.wgsl vs Shader::ALL");
    for s in Shader::ALL {
        let on_disk = std::fs::read_to_string(format!("{dir}/{}.wgsl", s.file())).unwrap();
        assert!(
            s.source().ends_with(&on_disk),
            "{} source differs from the file",
            s.name()
        );
    }
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
