//! The Hugging Face export of tiny-bonsai-dev, read back with the `safetensors` and `tokenizers`
//! crates: FP16 weights equal the CPU dequantization bit for bit, an AWQ unpacker written here
//! from the format description gives exactly those weights, the CPU reference on the exported
//! FP16 weights gives the GGUF's logits, the tokenizer reproduces llama.cpp's vectors, and the
//! configs carry the model's numbers.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::export::{
    ExportFormat, ExportOptions, ExportReport, INDEX_FILE, SINGLE_FILE, export_checkpoint,
};
use bonsai_wgpu::gguf::{GgmlType, Gguf, GgufValue, GgufWriter};
use bonsai_wgpu::quant::q1_0::dequantize_row_q1_0;
use common::*;
use half::f16;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// Logits from the exported FP16 weights against the GGUF's: only the f16 rounding of the norm
/// weights (relative change below 2^-11) separates them.
const EXPORT_COSINE_MIN: f64 = 0.99999;
/// A shard limit that splits the FP16 fixture (the 78 MB embedding alone, then the rest), to
/// exercise the index.
const SMALL_SHARD_BYTES: u64 = 50_000_000;

struct Exported {
    fp16: PathBuf,
    awq: PathBuf,
    fp16_report: ExportReport,
}

fn gguf() -> &'static Gguf {
    static G: OnceLock<Gguf> = OnceLock::new();
    G.get_or_init(tiny_model)
}

fn out_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("export")
        .join(name)
}

/// Both exports, made once per test binary.
fn exported() -> &'static Exported {
    static E: OnceLock<Exported> = OnceLock::new();
    E.get_or_init(|| {
        let (fp16, awq) = (out_dir("hf-fp16"), out_dir("awq"));
        for dir in [&fp16, &awq] {
            let _ = std::fs::remove_dir_all(dir);
        }
        let options = ExportOptions {
            format: ExportFormat::HfFp16,
            max_shard_bytes: SMALL_SHARD_BYTES,
        };
        let fp16_report = export_checkpoint(gguf(), &fp16, &options, &|_| {}).expect("fp16");
        let options = ExportOptions::new(ExportFormat::Awq);
        export_checkpoint(gguf(), &awq, &options, &|_| {}).expect("awq");
        Exported {
            fp16,
            awq,
            fp16_report,
        }
    })
}

/// The safetensors files of a checkpoint, read with the `safetensors` crate.
struct Checkpoint {
    files: Vec<Vec<u8>>,
    /// Tensor name -> index into `files`.
    file_of: HashMap<String, usize>,
}

impl Checkpoint {
    /// Reads `model.safetensors`, or every shard the index names (checking that the index and
    /// the shards list the same tensors and total size).
    fn open(dir: &Path) -> Checkpoint {
        let index_path = dir.join(INDEX_FILE);
        let names: Vec<String> = if index_path.exists() {
            let index = read_json(&index_path);
            let mut names: Vec<String> = index["weight_map"]
                .as_object()
                .expect("weight_map")
                .values()
                .map(|v| v.as_str().expect("file name").to_string())
                .collect();
            names.sort();
            names.dedup();
            names
        } else {
            vec![SINGLE_FILE.to_string()]
        };
        let mut ckpt = Checkpoint {
            files: Vec::new(),
            file_of: HashMap::new(),
        };
        let mut total = 0;
        for (i, name) in names.iter().enumerate() {
            let bytes = std::fs::read(dir.join(name)).expect("read shard");
            let st = SafeTensors::deserialize(&bytes).expect("parse safetensors");
            let (_, meta) = SafeTensors::read_metadata(&bytes).expect("metadata");
            let format = meta
                .metadata()
                .as_ref()
                .and_then(|m| m.get("format").cloned());
            assert_eq!(format.as_deref(), Some("pt"), "{name}: metadata format");
            for (t, view) in st.tensors() {
                total += view.data().len();
                assert!(ckpt.file_of.insert(t, i).is_none(), "tensor twice");
            }
            ckpt.files.push(bytes);
        }
        if index_path.exists() {
            let index = read_json(&index_path);
            assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total as u64));
            let map = index["weight_map"].as_object().expect("weight_map");
            assert_eq!(map.len(), ckpt.file_of.len(), "index lists every tensor");
            for (t, file) in map {
                assert_eq!(
                    Some(&names[ckpt.file_of[t]]),
                    file.as_str().map(String::from).as_ref()
                );
            }
        }
        ckpt
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.file_of.keys().cloned().collect();
        names.sort();
        names
    }

    /// dtype, shape and bytes of a tensor.
    fn get(&self, name: &str) -> (Dtype, Vec<usize>, Vec<u8>) {
        let i = *self
            .file_of
            .get(name)
            .unwrap_or_else(|| panic!("no tensor {name}"));
        let st = SafeTensors::deserialize(&self.files[i]).expect("parse");
        let v = st.tensor(name).expect("tensor");
        (v.dtype(), v.shape().to_vec(), v.data().to_vec())
    }

    fn f16s(&self, name: &str) -> (Vec<usize>, Vec<f16>) {
        let (dtype, shape, bytes) = self.get(name);
        assert_eq!(dtype, Dtype::F16, "{name}");
        let v = bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect();
        (shape, v)
    }

    fn u32s(&self, name: &str) -> (Vec<usize>, Vec<u32>) {
        let (dtype, shape, bytes) = self.get(name);
        assert_eq!(dtype, Dtype::I32, "{name}");
        let v = bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (shape, v)
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read json")).expect("parse json")
}

/// HF module name of each GGUF tensor, from the issue's list of Qwen3 names (written here, not
/// taken from the library): `(gguf, hf module, is a projection inside a block)`.
fn hf_names(n_layer: usize) -> Vec<(String, String, bool)> {
    let mut v = vec![(
        "token_embd.weight".into(),
        "model.embed_tokens".into(),
        false,
    )];
    for l in 0..n_layer {
        let per_layer = [
            ("attn_norm", "input_layernorm", false),
            ("attn_q", "self_attn.q_proj", true),
            ("attn_k", "self_attn.k_proj", true),
            ("attn_v", "self_attn.v_proj", true),
            ("attn_output", "self_attn.o_proj", true),
            ("attn_q_norm", "self_attn.q_norm", false),
            ("attn_k_norm", "self_attn.k_norm", false),
            ("ffn_norm", "post_attention_layernorm", false),
            ("ffn_gate", "mlp.gate_proj", true),
            ("ffn_up", "mlp.up_proj", true),
            ("ffn_down", "mlp.down_proj", true),
        ];
        for (g, h, linear) in per_layer {
            v.push((
                format!("blk.{l}.{g}.weight"),
                format!("model.layers.{l}.{h}"),
                linear,
            ));
        }
    }
    v.push(("output_norm.weight".into(), "model.norm".into(), false));
    v
}

fn n_layer() -> usize {
    gguf().get_u32("qwen3.block_count").expect("block_count") as usize
}

#[test]
fn fp16_weights_equal_cpu_dequantization() {
    let ckpt = Checkpoint::open(&exported().fp16);
    assert!(
        exported().fp16.join(INDEX_FILE).exists(),
        "the small shard limit shards"
    );
    let names = hf_names(n_layer());
    let mut want: Vec<String> = names
        .iter()
        .map(|(_, h, _)| format!("{h}.weight"))
        .collect();
    want.sort();
    assert_eq!(ckpt.names(), want, "tied head: no lm_head.weight");
    let mut worst_norm = 0.0f32;
    for (g, h, _) in &names {
        let info = gguf().tensor_info(g).expect("gguf tensor");
        let data = gguf().tensor_data(g).expect("gguf data");
        let (shape, got) = ckpt.f16s(&format!("{h}.weight"));
        if info.ggml_type == GgmlType::Q1_0 {
            let (k, n) = (info.dims[0] as usize, info.dims[1] as usize);
            assert_eq!(shape, vec![n, k], "{h}: [out, in]");
            let mut want = vec![0.0f32; k * n];
            dequantize_row_q1_0(data, &mut want);
            for (i, (g16, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g16.to_f32().to_bits(),
                    w.to_bits(),
                    "{h}[{i}]: got {g16}, want {w}"
                );
            }
        } else {
            assert_eq!(info.ggml_type, GgmlType::F32, "{g}");
            let want: Vec<f32> = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(shape, vec![want.len()]);
            for (g16, w) in got.iter().zip(&want) {
                assert_eq!(*g16, f16::from_f32(*w), "{h}: f16 rounding of {w}");
                worst_norm = worst_norm.max(((g16.to_f32() - w) / w).abs());
            }
        }
    }
    let report = &exported().fp16_report;
    assert_eq!(report.max_norm_change, worst_norm);
    // Round to nearest f16 changes a normal value by at most 2^-11 of itself.
    assert!(
        worst_norm > 0.0 && worst_norm <= 2f32.powi(-11),
        "{worst_norm}"
    );
    eprintln!(
        "largest norm change {worst_norm:.3e} in {}",
        report.max_norm_change_tensor
    );
}

/// AWQ from its description: `qweight` int32 `[in, out/8]`, `qzeros` int32 `[in/128, out/8]`,
/// `scales` f16 `[in/128, out]`; the code of column `8c + ORDER[j]` sits in bits `4j..4j+3`;
/// weight = (code - zero) * scale. Returns the weight as `[out, in]`.
fn awq_unpack(ckpt: &Checkpoint, module: &str) -> (Vec<usize>, Vec<f32>) {
    const ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];
    let (qw_shape, qweight) = ckpt.u32s(&format!("{module}.qweight"));
    let (qz_shape, qzeros) = ckpt.u32s(&format!("{module}.qzeros"));
    let (sc_shape, scales) = ckpt.f16s(&format!("{module}.scales"));
    let (n_in, words) = (qw_shape[0], qw_shape[1]);
    let n_out = words * 8;
    assert_eq!(qz_shape, vec![n_in / 128, words], "{module} qzeros");
    assert_eq!(sc_shape, vec![n_in / 128, n_out], "{module} scales");
    let mut w = vec![0.0f32; n_out * n_in];
    for i in 0..n_in {
        let g = i / 128;
        for c in 0..words {
            for (j, &col) in ORDER.iter().enumerate() {
                let o = 8 * c + col;
                let code = (qweight[i * words + c] >> (4 * j)) & 0xF;
                let zero = (qzeros[g * words + c] >> (4 * j)) & 0xF;
                assert_eq!(zero, 8, "{module}: zero point");
                let scale = scales[g * n_out + o].to_f32();
                w[o * n_in + i] = (code as f32 - zero as f32) * scale;
            }
        }
    }
    (vec![n_out, n_in], w)
}

#[test]
fn awq_unpacks_to_the_fp16_weights() {
    let fp16 = Checkpoint::open(&exported().fp16);
    let awq = Checkpoint::open(&exported().awq);
    assert!(
        !exported().awq.join(INDEX_FILE).exists(),
        "one file under 5 GB"
    );
    let config = read_json(&exported().awq.join("config.json"));
    let q = &config["quantization_config"];
    assert_eq!(q["quant_method"], "awq");
    assert_eq!(q["bits"], 4);
    assert_eq!(q["group_size"], 128);
    assert_eq!(q["zero_point"], true);
    assert_eq!(q["version"], "gemm");
    assert!(q["modules_to_not_convert"].is_null());
    let mut n_linear = 0;
    for (_, h, linear) in hf_names(n_layer()) {
        let (want_shape, want) = fp16.f16s(&format!("{h}.weight"));
        if !linear {
            // Embedding and norms: the same f16 tensors as the FP16 export.
            assert_eq!(awq.f16s(&format!("{h}.weight")), (want_shape, want), "{h}");
            continue;
        }
        assert!(
            !awq.file_of.contains_key(&format!("{h}.weight")),
            "{h} is packed"
        );
        let (shape, got) = awq_unpack(&awq, &h);
        assert_eq!(shape, want_shape, "{h}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_f32().to_bits(),
                "{h}[{i}]: got {g}, want {w}"
            );
        }
        n_linear += 1;
    }
    assert_eq!(n_linear, 7 * n_layer());
    assert_eq!(awq.names().len(), fp16.names().len() + 2 * n_linear);
}

/// A GGUF holding only what the CPU reference reads, built from the exported `config.json` and
/// FP16 safetensors: each projection's f16 row packed back into Q1_0 (each group of 128 must be
/// `±d` with one `d`), norms as F16.
fn gguf_from_export(dir: &Path) -> Gguf {
    let config = read_json(&dir.join("config.json"));
    let ckpt = Checkpoint::open(dir);
    let u = |k: &str| GgufValue::U32(config[k].as_u64().expect(k) as u32);
    let f = |v: &Value| GgufValue::F32(v.as_f64().expect("number") as f32);
    let mut w = GgufWriter::new();
    w.set("general.architecture", GgufValue::String("qwen3".into()));
    w.set("qwen3.block_count", u("num_hidden_layers"));
    w.set("qwen3.embedding_length", u("hidden_size"));
    w.set("qwen3.feed_forward_length", u("intermediate_size"));
    w.set("qwen3.attention.head_count", u("num_attention_heads"));
    w.set("qwen3.attention.head_count_kv", u("num_key_value_heads"));
    w.set("qwen3.attention.key_length", u("head_dim"));
    w.set("qwen3.context_length", u("max_position_embeddings"));
    w.set(
        "qwen3.attention.layer_norm_rms_epsilon",
        f(&config["rms_norm_eps"]),
    );
    w.set("qwen3.rope.freq_base", f(&config["rope_theta"]));
    let scaling = &config["rope_scaling"];
    assert_eq!(scaling["rope_type"], "yarn");
    w.set("qwen3.rope.scaling.type", GgufValue::String("yarn".into()));
    w.set("qwen3.rope.scaling.factor", f(&scaling["factor"]));
    let orig = scaling["original_max_position_embeddings"]
        .as_u64()
        .expect("orig") as u32;
    w.set(
        "qwen3.rope.scaling.original_context_length",
        GgufValue::U32(orig),
    );
    assert_eq!(
        config["tie_word_embeddings"], true,
        "the fixture ties its head"
    );
    for (g, h, _) in hf_names(config["num_hidden_layers"].as_u64().expect("n") as usize) {
        let (shape, v) = ckpt.f16s(&format!("{h}.weight"));
        let mut dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        if shape.len() == 1 {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.add_tensor(g, dims, GgmlType::F16, bytes);
            continue;
        }
        let mut q1 = Vec::with_capacity(v.len() / 128 * 18);
        for (b, group) in v.chunks_exact(128).enumerate() {
            let d = group[0].to_bits() & 0x7fff;
            q1.extend_from_slice(&d.to_le_bytes());
            let mut qs = [0u8; 16];
            for (j, x) in group.iter().enumerate() {
                assert_eq!(x.to_bits() & 0x7fff, d, "{h}: group {b} is not ±d");
                qs[j / 8] |= u8::from(x.to_bits() & 0x8000 == 0) << (j % 8);
            }
            q1.extend_from_slice(&qs);
        }
        dims.truncate(2);
        w.add_tensor(g, dims, GgmlType::Q1_0, q1);
    }
    Gguf::from_bytes(w.try_to_bytes().expect("gguf")).expect("parse gguf")
}

fn last_logits(model: &Arc<CpuModel>, tokens: &[u32]) -> Vec<f32> {
    let mut s = CpuSession::new(Arc::clone(model), tokens.len()).expect("session");
    pollster::block_on(s.feed(tokens)).expect("feed");
    pollster::block_on(s.logits()).expect("logits")
}

#[test]
fn cpu_reference_on_exported_fp16_gives_the_gguf_logits() {
    let from_gguf = CpuModel::from_gguf(gguf()).expect("model from gguf");
    let from_export = CpuModel::from_gguf(&gguf_from_export(&exported().fp16)).expect("model");
    assert_eq!(
        from_export.config, from_gguf.config,
        "config.json round trip"
    );
    for p in &llama_fixture().prompts {
        let want = last_logits(&from_gguf, &p.tokens);
        let got = last_logits(&from_export, &p.tokens);
        let cos = cosine(&got, &want);
        eprintln!("{} tokens: cosine {cos:.8}", p.tokens.len());
        assert!(
            cos >= EXPORT_COSINE_MIN,
            "{} tokens: cosine {cos}",
            p.tokens.len()
        );
    }
}

#[test]
fn tokenizer_json_reproduces_llama_cpp_vectors() {
    let path = exported().fp16.join("tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&path).expect("load tokenizer.json");
    let mut failures = Vec::new();
    let cases = vocab_cases();
    assert_eq!(cases.len(), 46);
    for (text, want) in &cases {
        let ids = tok
            .encode(text.as_str(), false)
            .expect("encode")
            .get_ids()
            .to_vec();
        if &ids != want {
            failures.push(format!("{text:?}: got {ids:?}, want {want:?}"));
        }
        assert_eq!(&tok.decode(&ids, false).expect("decode"), text, "decode");
    }
    // llama.cpp's tokens of the fixture prompts (special tokens parsed, as HF always does).
    for p in &llama_fixture().prompts {
        let ids = tok
            .encode(p.text.as_str(), false)
            .expect("encode")
            .get_ids()
            .to_vec();
        if ids != p.tokens {
            failures.push(format!(
                "prompt {:?}: got {ids:?}, want {:?}",
                p.text, p.tokens
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(tok.get_vocab_size(true), 151_669);
    let json = read_json(&path);
    assert_eq!(
        json["normalizer"]["type"], "NFC",
        "Qwen's pipeline normalizes to NFC"
    );
    // Qwen2/Qwen3's tokenizer.json regex, as Qwen ships it.
    let qwen_regex = concat!(
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}",
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    let split = &json["pre_tokenizer"]["pretokenizers"][0];
    assert_eq!(split["pattern"]["Regex"].as_str(), Some(qwen_regex));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(151_645));
}

#[test]
fn config_files_carry_the_model() {
    let dir = &exported().fp16;
    let c = read_json(&dir.join("config.json"));
    assert_eq!(c["architectures"], serde_json::json!(["Qwen3ForCausalLM"]));
    assert_eq!(c["model_type"], "qwen3");
    let fields = [
        ("hidden_size", 256),
        ("intermediate_size", 768),
        ("num_hidden_layers", 2),
        ("num_attention_heads", 4),
        ("num_key_value_heads", 2),
        ("head_dim", 128),
        ("max_position_embeddings", 32768),
        ("vocab_size", 151_669),
        ("eos_token_id", 151_645),
    ];
    for (k, v) in fields {
        assert_eq!(c[k].as_u64(), Some(v), "{k}");
    }
    assert_eq!(c["rms_norm_eps"].as_f64(), Some(1e-6));
    assert_eq!(c["rope_theta"].as_f64(), Some(1e6));
    assert_eq!(c["rope_scaling"]["rope_type"], "yarn");
    assert_eq!(c["rope_scaling"]["factor"].as_f64(), Some(4.0));
    assert_eq!(c["rope_scaling"]["original_max_position_embeddings"], 8192);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["torch_dtype"], "float16");
    assert!(c.get("quantization_config").is_none());

    let g = read_json(&dir.join("generation_config.json"));
    assert_eq!(g["eos_token_id"], serde_json::json!([151_645, 151_643]));

    let t = read_json(&dir.join("tokenizer_config.json"));
    let template = gguf().get_str("tokenizer.chat_template").expect("template");
    assert_eq!(t["chat_template"].as_str(), Some(template));
    assert_eq!(t["eos_token"], "<|im_end|>");
    assert_eq!(t["pad_token"], "<|endoftext|>");
    assert_eq!(
        t["added_tokens_decoder"]["151644"]["content"],
        "<|im_start|>"
    );
    assert_eq!(t["added_tokens_decoder"]["151644"]["special"], true);
    let think = gguf_token_id("<think>");
    assert_eq!(
        t["added_tokens_decoder"][think.to_string()]["special"],
        false
    );
}

fn gguf_token_id(text: &str) -> usize {
    let tokens = gguf()
        .get_str_array("tokenizer.ggml.tokens")
        .expect("tokens");
    tokens.iter().position(|t| *t == text).expect("token")
}

/// The fixture with one tensor replaced (or added).
fn fixture_with(name: &str, dims: Vec<u64>, ty: GgmlType, data: Vec<u8>) -> Gguf {
    let mut w = GgufWriter::new();
    for (k, v) in gguf().metadata() {
        w.set(k.clone(), v.clone());
    }
    for t in gguf().tensors().iter().filter(|t| t.name != name) {
        let bytes = gguf().tensor_bytes(t).expect("data").to_vec();
        w.add_tensor(t.name.clone(), t.dims.clone(), t.ggml_type, bytes);
    }
    w.add_tensor(name, dims, ty, data);
    Gguf::from_bytes(w.try_to_bytes().expect("gguf")).expect("parse")
}

fn refusal(g: &Gguf, format: ExportFormat) -> String {
    let dir = out_dir("refused");
    let _ = std::fs::remove_dir_all(&dir);
    let err =
        export_checkpoint(g, &dir, &ExportOptions::new(format), &|_| {}).expect_err("must refuse");
    assert!(!dir.exists(), "nothing written before refusing");
    err.to_string()
}

#[test]
fn refuses_what_cannot_be_exported_exactly() {
    let q = "blk.0.attn_q.weight";
    let info = gguf().tensor_info(q).expect("attn_q").clone();
    let f16_q = fixture_with(
        q,
        info.dims.clone(),
        GgmlType::F16,
        vec![0; 2 * info.n_elements() as usize],
    );
    let msg = refusal(&f16_q, ExportFormat::HfFp16);
    assert!(msg.contains(q) && msg.contains("F16"), "{msg}");

    let extra = fixture_with("rope_freqs.weight", vec![64], GgmlType::F32, vec![0; 256]);
    let msg = refusal(&extra, ExportFormat::Awq);
    assert!(msg.contains("rope_freqs.weight"), "{msg}");

    let msg = bonsai_wgpu::export::awq::check_awq_shape("blk.3.attn_k.weight", 256, 4)
        .expect_err("4 outputs do not fill an int32")
        .to_string();
    assert!(
        msg.contains("blk.3.attn_k.weight") && msg.contains("multiple of 8"),
        "{msg}"
    );
}
