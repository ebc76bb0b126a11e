//! Tokenizer tests against llama.cpp: its Qwen2 vocabulary test vectors and its tokenization of
//! the tiny-bonsai-dev prompts.

mod common;

use bonsai_wgpu::Error;
use bonsai_wgpu::gguf::{Gguf, GgufValue, GgufWriter};
use bonsai_wgpu::text::detok::Utf8Stream;
use bonsai_wgpu::text::tokenizer::Tokenizer;
use std::sync::OnceLock;
use std::time::Instant;

use common::vocab_cases;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

fn load(name: &str) -> Tokenizer {
    let gguf = Gguf::open(fixture(name)).expect("open fixture GGUF");
    let t0 = Instant::now();
    let tok = Tokenizer::from_gguf(&gguf).expect("build tokenizer");
    eprintln!("{name}: tokenizer built in {:?}", t0.elapsed());
    tok
}

fn qwen2_vocab() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| load("ggml-vocab-qwen2.gguf"))
}

fn bonsai() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| load("tiny-bonsai-dev.gguf"))
}

#[test]
fn llama_cpp_vocab_test_vectors() {
    let tok = qwen2_vocab();
    let cases = vocab_cases();
    assert_eq!(cases.len(), 46);
    let mut failures = Vec::new();
    for (text, expected) in &cases {
        // test-tokenizer-0 tokenizes with add_special = false, parse_special = false.
        let ids = tok.encode(text, false).expect("encode");
        if &ids != expected {
            failures.push(format!("{text:?}: got {ids:?}, expected {expected:?}"));
        }
        let back = tok.decode(&ids, false).expect("decode");
        assert_eq!(&back, text, "decode round trip");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn llama_cpp_prompt_tokens() {
    let tok = bonsai();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-bonsai-dev.llama.json")).expect("read json"),
    )
    .expect("parse json");
    assert_eq!(json["n_vocab"].as_u64(), Some(tok.n_vocab() as u64));
    let prompts = json["prompts"].as_array().expect("prompts");
    assert_eq!(prompts.len(), 4);
    for p in prompts {
        let text = p["text"].as_str().expect("text");
        let expected: Vec<u32> = p["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        let ids = tok.encode(text, true).expect("encode");
        assert_eq!(ids, expected, "tokens of {text:?}");
        assert_eq!(tok.decode(&ids, false).expect("decode"), text);
    }
}

#[test]
fn bonsai_metadata() {
    let tok = bonsai();
    assert_eq!(tok.n_vocab(), 151_669);
    assert_eq!(tok.eos_id(), 151_645);
    assert_eq!(tok.pad_id(), Some(151_643));
    assert!(!tok.add_bos());
    assert_eq!(tok.token_id("<|im_end|>"), Some(151_645));
    assert_eq!(tok.id_to_token(151_644).as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.token_id("Ġthe"), Some(279));
    assert!(tok.is_eog(151_645) && tok.is_eog(151_643));
    assert!(!tok.is_eog(151_644) && !tok.is_eog(279));
    assert!(tok.is_control(151_644) && !tok.is_control(151_667));
}

#[test]
fn special_tokens_parsed_only_when_asked() {
    let tok = bonsai();
    let text = "<|im_start|>user\nHi<|im_end|>";
    let parsed = tok.encode(text, true).unwrap();
    assert_eq!(parsed.first(), Some(&151_644));
    assert_eq!(parsed.last(), Some(&151_645));
    assert_eq!(parsed.len(), 5, "{parsed:?}"); // <|im_start|> user \n Hi <|im_end|>

    let plain = tok.encode(text, false).unwrap();
    assert!(
        !plain.contains(&151_644) && !plain.contains(&151_645),
        "{plain:?}"
    );
    assert_eq!(tok.decode(&plain, false).unwrap(), text);

    // User-defined tokens (<think>) are recognised either way, as in llama.cpp.
    for parse_special in [true, false] {
        let ids = tok.encode("<think>\nx\n</think>", parse_special).unwrap();
        assert_eq!(ids.first(), Some(&151_667));
        assert_eq!(ids.last(), Some(&151_668));
    }

    // skip_special drops control tokens only.
    let ids = tok.encode("<|im_start|><think>a<|im_end|>", true).unwrap();
    assert_eq!(tok.decode(&ids, true).unwrap(), "<think>a");
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        "<|im_start|><think>a<|im_end|>"
    );
}

#[test]
fn token_bytes_split_multibyte_char() {
    let tok = bonsai();
    // llama.cpp: " this is 🦙.cpp" -> 419 374 11162 99 247 13 10821: " " and the llama emoji's
    // four UTF-8 bytes are spread over three tokens.
    let ids = tok.encode(" this is 🦙.cpp", false).unwrap();
    assert_eq!(ids, [419, 374, 11162, 99, 247, 13, 10821]);
    let pieces: Vec<Vec<u8>> = ids.iter().map(|&i| tok.token_bytes(i).unwrap()).collect();
    assert_eq!(pieces[0], b" this");
    assert!(std::str::from_utf8(&pieces[2]).is_err());
    assert!(std::str::from_utf8(&pieces[3]).is_err());
    assert_eq!(pieces[2..5].concat(), " 🦙".as_bytes());
    assert_eq!(pieces.concat(), " this is 🦙.cpp".as_bytes());

    assert_eq!(tok.token_bytes(151_644).unwrap(), b"<|im_start|>");
    assert_eq!(tok.token_bytes(151_667).unwrap(), b"<think>");
    assert_eq!(tok.token_bytes(198).unwrap(), b"\n");
    assert_eq!(tok.token_bytes(tok.n_vocab() as u32), None);
}

#[test]
fn decode_rejects_out_of_range_ids() {
    let tok = bonsai();
    let err = tok.decode(&[1, 999_999], false).unwrap_err();
    assert!(matches!(err, Error::BadToken { id: 999_999, .. }), "{err}");
}

/// A minimal byte-level vocabulary: "a", "b", "ab", "Ġ", plus one control token.
fn tiny_writer() -> GgufWriter {
    let strs = |v: &[&str]| GgufValue::Array(v.iter().map(|s| GgufValue::from(*s)).collect());
    let mut w = GgufWriter::new();
    w.set("general.architecture", "qwen3")
        .set("tokenizer.ggml.model", "gpt2")
        .set("tokenizer.ggml.pre", "qwen2")
        .set(
            "tokenizer.ggml.tokens",
            strs(&["a", "b", "ab", "Ġ", "<|end|>"]),
        )
        .set(
            "tokenizer.ggml.token_type",
            GgufValue::Array([1, 1, 1, 1, 3].map(GgufValue::I32).to_vec()),
        )
        .set("tokenizer.ggml.merges", strs(&["a b"]))
        .set("tokenizer.ggml.eos_token_id", 4u32);
    w
}

fn build(w: &GgufWriter) -> Result<Tokenizer, Error> {
    Tokenizer::from_gguf(&Gguf::from_bytes(w.to_bytes()).expect("parse written GGUF"))
}

#[test]
fn tiny_vocabulary() {
    let tok = build(&tiny_writer()).unwrap();
    assert_eq!(tok.encode("ab ba<|end|>", true).unwrap(), [2, 3, 1, 0, 4]);
    assert_eq!(tok.decode(&[2, 3, 1, 0], false).unwrap(), "ab ba");
    assert_eq!(tok.eos_id(), 4);
    assert!(tok.is_eog(4));
}

#[test]
fn bad_metadata_is_a_typed_error() {
    let mut w = tiny_writer();
    w.set("tokenizer.ggml.model", "llama");
    let err = build(&w).unwrap_err();
    assert!(
        matches!(&err, Error::Tokenizer(m) if m.contains("tokenizer.ggml.model")),
        "{err}"
    );

    let mut w = tiny_writer();
    w.set("tokenizer.ggml.pre", "llama3");
    let err = build(&w).unwrap_err();
    assert!(
        matches!(&err, Error::Tokenizer(m) if m.contains("tokenizer.ggml.pre")),
        "{err}"
    );

    let mut w = tiny_writer();
    w.set(
        "tokenizer.ggml.merges",
        GgufValue::Array(vec!["a c".into()]),
    );
    let err = build(&w).unwrap_err();
    assert!(
        matches!(&err, Error::BadKey { key, .. } if key == "tokenizer.ggml.merges"),
        "{err}"
    );

    let mut w = tiny_writer();
    w.set("tokenizer.ggml.merges", GgufValue::Array(vec!["ab".into()]));
    let err = build(&w).unwrap_err();
    assert!(
        matches!(&err, Error::BadKey { key, .. } if key == "tokenizer.ggml.merges"),
        "{err}"
    );

    let mut w = tiny_writer();
    w.set(
        "tokenizer.ggml.token_type",
        GgufValue::Array(vec![GgufValue::I32(1)]),
    );
    let err = build(&w).unwrap_err();
    assert!(
        matches!(&err, Error::BadKey { key, .. } if key == "tokenizer.ggml.token_type"),
        "{err}"
    );

    let mut w = tiny_writer();
    w.set("tokenizer.ggml.eos_token_id", 99u32);
    let err = build(&w).unwrap_err();
    assert!(
        matches!(&err, Error::BadKey { key, .. } if key == "tokenizer.ggml.eos_token_id"),
        "{err}"
    );

    let mut w = GgufWriter::new();
    w.set("tokenizer.ggml.model", "gpt2")
        .set("tokenizer.ggml.pre", "qwen2");
    let err = build(&w).unwrap_err();
    assert!(
        matches!(&err, Error::MissingKey(k) if k == "tokenizer.ggml.tokens"),
        "{err}"
    );

    let mut w = tiny_writer();
    w.set("tokenizer.ggml.tokens", "not an array");
    let err = build(&w).unwrap_err();
    assert!(
        matches!(&err, Error::BadKey { key, .. } if key == "tokenizer.ggml.tokens"),
        "{err}"
    );
}

#[test]
fn utf8_stream_holds_back_split_characters() {
    let tok = bonsai();
    let text = " this is 🦙.cpp, ½ Äpfel — 我想在apple工作";
    let ids = tok.encode(text, false).unwrap();
    let mut stream = Utf8Stream::new();
    let mut pieces = Vec::new();
    for &id in &ids {
        pieces.push(stream.push(&tok.token_bytes(id).unwrap()));
    }
    assert!(!stream.has_pending());
    assert_eq!(stream.finish(), "");
    assert!(pieces.iter().all(|p| !p.contains('\u{fffd}')), "{pieces:?}");
    assert_eq!(pieces.concat(), text);
    // The llama emoji arrives over three tokens: nothing, nothing, then the whole character.
    let llama = ids.iter().position(|&i| i == 11162).unwrap();
    assert_eq!(pieces[llama], " ");
    assert_eq!(pieces[llama + 1], "");
    assert_eq!(pieces[llama + 2], "🦙");

    // Invalid bytes become U+FFFD; a truncated character is flushed by finish().
    let mut s = Utf8Stream::new();
    assert_eq!(s.push(b"a\xffb\xe2\x82"), "a\u{fffd}b");
    assert!(s.has_pending());
    assert_eq!(s.push(b"\xac"), "€");
    assert_eq!(s.push(b"\xf0\x9f"), "");
    assert_eq!(s.finish(), "\u{fffd}");
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<bonsai_wgpu::text::chat_template::ChatTemplate>();
}
