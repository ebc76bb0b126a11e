//! Hostile GGUF inputs: every corruption gives a typed error naming what is wrong, never a
//! panic, hang or huge allocation.

use bonsai_wgpu::Error;
use bonsai_wgpu::gguf::{GgmlType, Gguf, GgufValue, GgufWriter};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// A small valid file touching every part of the format.
fn small_file() -> (Vec<u8>, u64) {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "qwen3");
    w.set("n", 7u32);
    w.set("f", 0.5f32);
    w.set("flag", true);
    w.set(
        "toks",
        GgufValue::Array(vec!["a".into(), "bc".into(), "".into()]),
    );
    w.set(
        "nested",
        GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::I64(-1)])]),
    );
    w.add_tensor("w", vec![128, 2], GgmlType::Q1_0, vec![0xA5; 36]);
    w.add_tensor("t", vec![64, 2], GgmlType::Q2_0, vec![0x5A; 36]);
    w.add_tensor("norm", vec![8], GgmlType::F32, vec![0x3F; 32]);
    let bytes = w.to_bytes();
    let g = Gguf::from_bytes(bytes.clone()).unwrap();
    let end = g
        .tensors()
        .iter()
        .map(|t| g.data_offset() + t.offset + t.n_bytes)
        .max()
        .unwrap();
    (bytes, end)
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let (bytes, data_end) = small_file();
    for cut in 0..bytes.len() {
        let r = Gguf::from_bytes(bytes[..cut].to_vec());
        if (cut as u64) < data_end {
            assert!(r.is_err(), "truncated at {cut} of {} parsed", bytes.len());
        } else {
            // Only trailing padding was cut.
            assert!(r.is_ok(), "cut at {cut}: {:?}", r.err());
        }
    }
}

#[test]
fn random_corruption_never_panics() {
    let (bytes, _) = small_file();
    let mut rng = StdRng::seed_from_u64(0x6767_7566);
    for _ in 0..20_000 {
        let mut b = bytes.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..b.len());
            b[i] = match rng.random_range(0..3) {
                0 => rng.random(),
                1 => 0xFF,
                _ => b[i] ^ (1 << rng.random_range(0..8)),
            };
        }
        let _ = Gguf::from_bytes(b); // must return, Ok or Err
    }
}

/// Builds raw GGUF bytes by hand, so that the writer's own checks do not get in the way.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut r = Raw::default();
        r.0.extend_from_slice(b"GGUF");
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(&mut self, n: usize) -> Vec<u8> {
        let mut b = self.0.clone();
        b.resize(b.len().next_multiple_of(32), 0);
        b.extend(std::iter::repeat_n(0x11, n));
        b
    }
}

fn parse(b: Vec<u8>) -> Error {
    Gguf::from_bytes(b).expect_err("hostile file parsed")
}

#[test]
fn raw_builder_makes_valid_files() {
    let mut r = Raw::header(3, 2, 1);
    r.kv_u32("k", 1)
        .tensor("a", &[4], 0, 0)
        .tensor("b", &[32], 8, 32);
    let g = Gguf::from_bytes(r.data(32 + 34)).unwrap();
    assert_eq!(g.tensor_data("b").unwrap().len(), 34);
}

#[test]
fn bad_magic_and_versions() {
    assert!(matches!(parse(b"GGML\x03\0\0\0".to_vec()), Error::BadMagic(m) if &m == b"GGML"));
    assert!(matches!(parse(Vec::new()), Error::Truncated { .. }));
    assert!(matches!(
        parse(Raw::header(1, 0, 0).0),
        Error::UnsupportedVersion(1)
    ));
    assert!(matches!(
        parse(Raw::header(4, 0, 0).0),
        Error::UnsupportedVersion(4)
    ));
    // Big-endian files read as an absurd version.
    assert!(matches!(
        parse(Raw::header(3u32.swap_bytes(), 0, 0).0),
        Error::UnsupportedVersion(_)
    ));
    assert!(Gguf::from_bytes(Raw::header(3, 0, 0).0).is_ok());
}

#[test]
fn absurd_counts_and_lengths() {
    assert!(matches!(
        parse(Raw::header(3, 0, u64::MAX).0),
        Error::Truncated { .. }
    ));
    assert!(matches!(
        parse(Raw::header(3, u64::MAX, 0).0),
        Error::Truncated { .. }
    ));
    assert!(matches!(
        parse(Raw::header(3, 1 << 40, 1 << 40).0),
        Error::Truncated { .. }
    ));
    // A key whose length exceeds the file.
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).u32(0).u8(0);
    assert!(matches!(parse(r.0), Error::Truncated { .. }));
    // A string value whose length exceeds the file.
    let mut r = Raw::header(3, 0, 1);
    r.str("s").u32(8).u64(1 << 50);
    assert!(matches!(parse(r.0), Error::Truncated { what, .. } if what.contains("`s`")));
    // An array of 2^40 strings in a tiny file: refused before allocating.
    let mut r = Raw::header(3, 0, 1);
    r.str("toks").u32(9).u32(8).u64(1 << 40).str("x");
    assert!(matches!(parse(r.0), Error::Truncated { what, .. } if what.contains("`toks`")));
    // Nested arrays of huge counts.
    let mut r = Raw::header(3, 0, 1);
    r.str("nest").u32(9).u32(9).u64(u64::MAX);
    assert!(matches!(parse(r.0), Error::Truncated { .. }));
}

#[test]
fn bad_metadata_values() {
    let bad_key = |r: Raw, want: &str| match parse(r.0) {
        Error::BadKey { key, .. } => assert_eq!(key, want),
        e => panic!("expected BadKey {want}, got {e}"),
    };
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("dup", 1).kv_u32("dup", 2);
    bad_key(r, "dup");
    let mut r = Raw::header(3, 0, 1);
    r.str("ty").u32(13).u32(0);
    bad_key(r, "ty");
    let mut r = Raw::header(3, 0, 1);
    r.str("arr").u32(9).u32(77).u64(0);
    bad_key(r, "arr");
    let mut r = Raw::header(3, 0, 1);
    r.str("b").u32(7).u8(2);
    bad_key(r, "b");
    let mut r = Raw::header(3, 0, 1);
    r.str("utf").u32(8).u64(2).u8(0xC3).u8(0x28);
    bad_key(r, "utf");
    for a in [0u32, 3, 48] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a);
        bad_key(r, "general.alignment");
    }
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("general.alignment", 64);
    assert_eq!(Gguf::from_bytes(r.0).unwrap().alignment(), 64);
}

/// `depth` arrays nested in each other around one u8.
fn nested(depth: usize) -> Raw {
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(9);
    for _ in 1..depth {
        r.u32(9).u64(1);
    }
    r.u32(0).u64(1).u8(42);
    r
}

#[test]
fn array_nesting_is_capped() {
    let g = Gguf::from_bytes(nested(8).0).unwrap();
    let mut v = g.get("deep").unwrap();
    for _ in 0..8 {
        v = &v.as_array().unwrap()[0];
    }
    assert_eq!(v, &GgufValue::U8(42));
    assert!(matches!(parse(nested(9).0), Error::BadKey { key, .. } if key == "deep"));
    // Far deeper than any stack could recurse: refused at the cap, no stack overflow.
    assert!(matches!(parse(nested(100_000).0), Error::BadKey { .. }));
}

#[test]
fn bad_tensor_infos() {
    let bad_tensor = |b: Vec<u8>, want: &str| match parse(b) {
        Error::BadTensor { name, .. } => assert_eq!(name, want),
        e => panic!("expected BadTensor {want}, got {e}"),
    };
    // Five dimensions.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("five", &[1, 1, 1, 1, 1], 0, 0);
    bad_tensor(r.data(4), "five");
    // Element count overflow.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("huge", &[1 << 32, 1 << 32], 0, 0);
    bad_tensor(r.data(4), "huge");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("i64max", &[1 << 62, 2], 0, 0);
    bad_tensor(r.data(4), "i64max");
    // ne0 not a multiple of the Q1_0 block.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("q", &[100, 1], 41, 0);
    bad_tensor(r.data(18), "q");
    // ne0 not a multiple of the Q2_0 block (64): 96 is a whole number of bytes but not blocks.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("q2", &[96, 1], 42, 0);
    bad_tensor(r.data(36), "q2");
    // Q2_0 data past the end: [64, 4] needs 72 bytes.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("q2short", &[64, 4], 42, 0);
    bad_tensor(r.data(71), "q2short");
    // A Q2_0 tensor of 2^62 elements (2^56 blocks) in a tiny file.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("q2huge", &[1 << 31, 1 << 31], 42, 0);
    bad_tensor(r.data(64), "q2huge");
    // Data past the end of the file.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("past", &[16], 0, 0);
    bad_tensor(r.data(63), "past");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("far", &[16], 0, 1 << 60);
    bad_tensor(r.data(64), "far");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("wrap", &[16], 0, u64::MAX - 31);
    bad_tensor(r.data(64), "wrap");
    // Misaligned offset.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("mis", &[4], 0, 4);
    bad_tensor(r.data(64), "mis");
    // Overlapping tensors.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("first", &[16], 0, 0)
        .tensor("second", &[16], 0, 32);
    bad_tensor(r.data(128), "second");
    // Duplicate names.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("twice", &[4], 0, 0).tensor("twice", &[4], 0, 32);
    bad_tensor(r.data(64), "twice");
    // Unknown type id.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("odd", &[4], 99, 0);
    assert!(matches!(
        parse(r.data(64)),
        Error::UnsupportedType { name, ggml_type: 99 } if name == "odd"
    ));
    // A tensor-name length beyond the file.
    let mut r = Raw::header(3, 1, 0);
    r.u64(1 << 40);
    assert!(matches!(parse(r.data(64)), Error::Truncated { .. }));
}

#[test]
fn metadata_element_budget_bounds_memory() {
    use bonsai_wgpu::gguf::MAX_METADATA_ELEMENTS;
    // 2^24 + 1 one-byte elements in two arrays: a 16 MiB file that would expand 32-fold.
    let half = MAX_METADATA_ELEMENTS / 2 + 1;
    let mut r = Raw::header(3, 0, 2);
    for key in ["a", "b"] {
        r.str(key).u32(9).u32(0).u64(half);
        r.0.resize(r.0.len() + half as usize, 7);
    }
    assert!(matches!(parse(r.0), Error::BadKey { key, .. } if key == "b"));
    // Exactly at the budget is fine.
    let mut r = Raw::header(3, 0, 1);
    r.str("a").u32(9).u32(0).u64(MAX_METADATA_ELEMENTS);
    r.0.resize(r.0.len() + MAX_METADATA_ELEMENTS as usize, 7);
    let g = Gguf::from_bytes(r.0).unwrap();
    assert_eq!(
        g.get("a").unwrap().as_array().unwrap().len() as u64,
        MAX_METADATA_ELEMENTS
    );
}
