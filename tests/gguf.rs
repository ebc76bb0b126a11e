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

/// Every value type, arrays of them, nested arrays and an empty array.
fn all_values() -> Vec<(&'static str, GgufValue)> {
    use GgufValue::*;
    vec![
        ("t.u8", U8(200)),
        ("t.i8", I8(-100)),
        ("t.u16", U16(60_000)),
        ("t.i16", I16(-30_000)),
        ("t.u32", U32(4_000_000_000)),
        ("t.i32", I32(-2_000_000_000)),
        ("t.f32", F32(-1.25e-7)),
        ("t.bool", Bool(true)),
        ("t.bool_false", Bool(false)),
        ("t.string", String("héllo, wörld ✓".into())),
        ("t.empty_string", String(std::string::String::new())),
        ("t.u64", U64(u64::MAX)),
        ("t.i64", I64(i64::MIN)),
        ("t.f64", F64(std::f64::consts::PI)),
        ("t.arr_u8", Array(vec![U8(1), U8(2), U8(255)])),
        ("t.arr_i32", Array(vec![I32(-1), I32(7)])),
        ("t.arr_f32", Array(vec![F32(0.5), F32(-0.0), F32(f32::MAX)])),
        ("t.arr_bool", Array(vec![Bool(false), Bool(true)])),
        (
            "t.arr_str",
            Array(vec![
                String("a".into()),
                String("".into()),
                String("ü".into()),
            ]),
        ),
        ("t.arr_u64", Array(vec![U64(0), U64(1 << 40)])),
        ("t.arr_f64", Array(vec![F64(1e300)])),
        ("t.arr_i8_i16_u16", Array(vec![I8(-1), I8(1)])),
        ("t.arr_i16", Array(vec![I16(-2)])),
        ("t.arr_u16", Array(vec![U16(9)])),
        ("t.arr_u32", Array(vec![U32(9)])),
        ("t.arr_i64", Array(vec![I64(-9)])),
        ("t.arr_empty", Array(vec![])),
        (
            "t.nested",
            Array(vec![
                Array(vec![U32(1), U32(2)]),
                Array(vec![]),
                Array(vec![U32(3)]),
            ]),
        ),
        (
            "t.nested_str",
            Array(vec![Array(vec![Array(vec![String("deep".into())])])]),
        ),
    ]
}

#[test]
fn writer_round_trips_every_value_type() {
    let mut w = GgufWriter::new();
    for (k, v) in all_values() {
        w.set(k, v);
    }
    w.set("t.u8", GgufValue::U8(201)); // replaces in place, keeps order
    let g = Gguf::from_bytes(w.to_bytes()).unwrap();
    let mut want = all_values();
    want[0].1 = GgufValue::U8(201);
    assert_eq!(g.metadata().len(), want.len());
    for ((k, v), (wk, wv)) in g.metadata().iter().zip(&want) {
        assert_eq!(k, wk);
        assert_eq!(v, wv, "key {k}");
    }
    // Accessors.
    assert_eq!(g.get("t.u8").unwrap().as_u32(), Some(201));
    assert_eq!(g.get("t.i8").unwrap().as_u64(), None);
    assert_eq!(g.get("t.i8").unwrap().as_i64(), Some(-100));
    assert_eq!(g.get("t.u64").unwrap().as_u32(), None);
    assert_eq!(g.get("t.u64").unwrap().as_i64(), None);
    assert_eq!(g.get("t.u64").unwrap().as_u64(), Some(u64::MAX));
    assert_eq!(g.get_u64("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(g.get_f32("t.f64").unwrap(), std::f32::consts::PI);
    assert_eq!(g.get_f32("t.i32").unwrap(), -2e9);
    assert!(g.get_bool("t.bool").unwrap());
    assert_eq!(g.get("t.u32").unwrap().as_bool(), None);
    assert_eq!(g.get_str("t.string").unwrap(), "héllo, wörld ✓");
    assert_eq!(g.get_str_array("t.arr_str").unwrap(), vec!["a", "", "ü"]);
    assert!(
        matches!(g.get_str_array("t.arr_u8"), Err(Error::BadKey { key, .. }) if key == "t.arr_u8")
    );
    assert!(matches!(g.get_u32("t.i32"), Err(Error::BadKey { .. })));
    assert_eq!(g.get("t.nested").unwrap().as_array().unwrap().len(), 3);
}

#[test]
fn writer_honours_alignment_and_round_trips_tensors() {
    for alignment in [1u32, 8, 32, 64, 4096] {
        let mut w = GgufWriter::new();
        w.set_alignment(alignment);
        w.set("general.architecture", "test");
        let a: Vec<u8> = (0..3 * 4).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..2 * 18).map(|i| (i * 7) as u8).collect();
        let c: Vec<u8> = (0..34).map(|i| (i * 3) as u8).collect();
        w.add_tensor("a", vec![3], GgmlType::F32, a.clone());
        w.add_tensor("b", vec![128, 2], GgmlType::Q1_0, b.clone());
        w.add_tensor("c", vec![32, 1, 1, 1], GgmlType::Q8_0, c.clone());
        w.add_tensor("empty", vec![0, 5], GgmlType::F16, vec![]);
        let bytes = w.to_bytes();
        let g = Gguf::from_bytes(bytes.clone()).unwrap();
        assert_eq!(g.alignment(), u64::from(alignment));
        assert_eq!(g.data_offset() % u64::from(alignment), 0);
        assert_eq!(bytes.len() as u64 % u64::from(alignment), 0);
        for (name, data) in [("a", &a), ("b", &b), ("c", &c)] {
            let t = g.tensor_info(name).unwrap();
            assert_eq!(t.offset % u64::from(alignment), 0, "{name}");
            assert_eq!(g.tensor_data(name).unwrap(), &data[..], "{name}");
        }
        assert_eq!(g.tensor_info("b").unwrap().dims, vec![128, 2]);
        assert_eq!(g.tensor_info("b").unwrap().n_elements(), 256);
        assert_eq!(g.tensor_info("c").unwrap().dims, vec![32, 1, 1, 1]);
        assert_eq!(g.tensor_data("empty").unwrap(), &[] as &[u8]);
        let names: Vec<_> = g.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "empty"]);
    }
}

#[test]
fn writer_rejects_bad_contents() {
    let mut w = GgufWriter::new();
    w.add_tensor("short", vec![4], GgmlType::F32, vec![0; 15]);
    assert!(matches!(w.try_to_bytes(), Err(Error::BadTensor { name, .. }) if name == "short"));
    let mut w = GgufWriter::new();
    w.add_tensor("q", vec![100], GgmlType::Q1_0, vec![0; 18]);
    assert!(matches!(w.try_to_bytes(), Err(Error::BadTensor { name, .. }) if name == "q"));
    let mut w = GgufWriter::new();
    w.set(
        "mixed",
        GgufValue::Array(vec![GgufValue::U8(1), GgufValue::I8(1)]),
    );
    assert!(matches!(w.try_to_bytes(), Err(Error::BadKey { key, .. }) if key == "mixed"));
    let mut w = GgufWriter::new();
    w.set_alignment(48);
    assert!(matches!(w.try_to_bytes(), Err(Error::BadKey { .. })));
    let mut w = GgufWriter::new();
    w.add_tensor("x", vec![1], GgmlType::F32, vec![0; 4]);
    w.add_tensor("x", vec![1], GgmlType::F32, vec![0; 4]);
    assert!(matches!(w.try_to_bytes(), Err(Error::BadTensor { .. })));
}

#[test]
fn version_2_files_are_read() {
    let mut w = GgufWriter::new();
    w.set("k", 5u32);
    w.add_tensor("t", vec![2], GgmlType::F32, vec![0; 8]);
    let mut bytes = w.to_bytes();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let g = Gguf::from_bytes(bytes).unwrap();
    assert_eq!(g.version(), 2);
    assert_eq!(g.get_u32("k").unwrap(), 5);
}

#[test]
fn open_reports_missing_file() {
    let err = Gguf::open("/nonexistent/model.gguf").unwrap_err();
    assert!(
        matches!(err, Error::Io { ref path, .. } if path.contains("model.gguf")),
        "{err}"
    );
}

#[test]
fn truncated_fixture_is_an_error_not_a_panic() {
    let bytes = std::fs::read(TINY).unwrap();
    let g = Gguf::from_bytes(bytes.clone()).unwrap();
    let data_offset = g.data_offset() as usize;
    let data_end = g
        .tensors()
        .iter()
        .map(|t| data_offset + (t.offset + t.n_bytes) as usize)
        .max()
        .unwrap();
    // Inside the header, the token array, the merges, the tensor infos, and the data.
    let mut cuts: Vec<usize> = (0..64).collect();
    cuts.extend((1..60).map(|i| i * data_offset / 60));
    cuts.extend([data_offset - 1, data_offset, data_offset + 1, data_end - 1]);
    for cut in cuts {
        assert!(
            Gguf::from_bytes(bytes[..cut].to_vec()).is_err(),
            "cut at {cut} parsed"
        );
    }
}

#[test]
fn fixture_q1_0_rows_dequantize_to_plus_minus_scale() {
    use bonsai_wgpu::quant::dequantize_row;
    use bonsai_wgpu::quant::q1_0::BlockQ1_0;
    let g = Gguf::open(TINY).unwrap();
    let t = g.tensor_info("blk.0.attn_q.weight").unwrap();
    let data = g.tensor_data(&t.name).unwrap();
    let row_bytes = t.row_bytes() as usize;
    assert_eq!(row_bytes, 2 * 18);
    let blocks: &[BlockQ1_0] = bytemuck::cast_slice(data);
    assert_eq!(blocks.len(), 2 * 512);
    let mut row = vec![0.0f32; 256];
    dequantize_row(GgmlType::Q1_0, &data[..row_bytes], &mut row).unwrap();
    for (b, vals) in blocks[..2].iter().zip(row.chunks(128)) {
        let d = b.scale();
        assert!(d.is_finite() && d != 0.0);
        assert!(vals.iter().all(|&v| v == d || v == -d));
    }
}

#[test]
fn writer_streams_to_a_file_that_open_maps() {
    let dir = std::env::temp_dir().join(format!("bonsai-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rt.gguf");
    let data: Vec<u8> = (0..1024 * 18).map(|i| (i % 251) as u8).collect();
    let mut w = GgufWriter::new();
    w.set("general.architecture", "qwen3");
    w.add_tensor("big", vec![1024, 128], GgmlType::Q1_0, data.clone());
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    w.write_to(&mut f).unwrap();
    drop(f);
    let g = Gguf::open(&path).unwrap();
    assert_eq!(g.tensor_data("big").unwrap(), &data[..]);
    assert_eq!(g.bytes(), &w.to_bytes()[..]);
    // An empty file is an error, not a failed mmap.
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(Gguf::open(&empty), Err(Error::Truncated { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}
