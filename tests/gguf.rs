//! GGUF reader/writer tests: the fixture files, writer round trips, and hostile inputs.

use bonsai_wgpu::Error;
use bonsai_wgpu::gguf::{GgmlType, Gguf, GgufValue, GgufWriter};

const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/tiny-bonsai-dev.gguf"
);
const VOCAB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/ggml-vocab-qwen2.gguf"
);

#[test]
fn tiny_bonsai_fixture_parses() {
    let g = Gguf::open(TINY).expect("open tiny-bonsai-dev.gguf");
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.get_str("general.architecture").unwrap(), "qwen3");
    assert_eq!(g.get_u32("qwen3.block_count").unwrap(), 2);
    assert_eq!(g.get_u32("qwen3.embedding_length").unwrap(), 256);
    assert_eq!(g.get_u32("qwen3.feed_forward_length").unwrap(), 768);
    assert_eq!(g.get_u32("qwen3.attention.head_count").unwrap(), 4);
    assert_eq!(g.get_u32("qwen3.attention.head_count_kv").unwrap(), 2);
    let eps = g.get_f32("qwen3.attention.layer_norm_rms_epsilon").unwrap();
    assert!((eps - 1e-6).abs() < 1e-12);
    let tokens = g.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 151_669);
    assert_eq!(tokens[151_645], "<|im_end|>");
    assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), "gpt2");

    // token_embd + output_norm + 2 layers of 11 tensors; tied head.
    assert_eq!(g.tensors().len(), 2 + 2 * 11);
    assert!(g.tensor_info("output.weight").is_none());
    let emb = g.tensor_info("token_embd.weight").unwrap();
    assert_eq!(emb.dims, vec![256, 151_669]);
    assert_eq!(emb.ggml_type, GgmlType::Q1_0);
    assert_eq!(emb.n_bytes, 151_669 * 2 * 18);
    let q = g.tensor_info("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.dims, vec![256, 512]);
    assert_eq!(q.ggml_type, GgmlType::Q1_0);
    let qn = g.tensor_info("blk.0.attn_q_norm.weight").unwrap();
    assert_eq!(qn.dims, vec![128]);
    assert_eq!(qn.ggml_type, GgmlType::F32);
    let down = g.tensor_info("blk.1.ffn_down.weight").unwrap();
    assert_eq!(down.dims, vec![768, 256]);
    for t in g.tensors() {
        let data = g.tensor_data(&t.name).unwrap();
        assert_eq!(data.len() as u64, t.n_bytes, "{}", t.name);
        assert_eq!(t.offset % g.alignment(), 0, "{}", t.name);
    }
    assert!(matches!(
        g.tensor_data("nope"),
        Err(Error::MissingTensor(n)) if n == "nope"
    ));
    assert!(matches!(g.get_str("nope"), Err(Error::MissingKey(_))));
    assert!(matches!(
        g.get_u32("general.architecture"),
        Err(Error::BadKey { .. })
    ));
}

#[test]
fn vocab_fixture_parses() {
    let g = Gguf::open(VOCAB).expect("open ggml-vocab-qwen2.gguf");
    assert!(g.tensors().is_empty());
    assert_eq!(g.get_str("tokenizer.ggml.pre").unwrap(), "qwen2");
    let merges = g.get_str_array("tokenizer.ggml.merges").unwrap();
    assert_eq!(merges.len(), 151_387);
    // from_bytes and open agree.
    let bytes = std::fs::read(VOCAB).unwrap();
    let g2 = Gguf::from_bytes(bytes).unwrap();
    assert_eq!(g.metadata(), g2.metadata());
}

#[test]
fn writer_round_trip_small() {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "qwen3");
    w.set("x.u32", GgufValue::U32(7));
    w.add_tensor("a", vec![4, 2], GgmlType::F32, vec![1u8; 32]);
    let bytes = w.to_bytes();
    let g = Gguf::from_bytes(bytes).unwrap();
    assert_eq!(g.get_str("general.architecture").unwrap(), "qwen3");
    assert_eq!(g.tensor_data("a").unwrap(), &[1u8; 32][..]);
}
