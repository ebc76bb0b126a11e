//! The real Qwen tokenizer on arbitrary text: encoding ends, every id is in the vocabulary, the
//! tokens' bytes spell the text exactly, and decoding gives the text back.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

// Load the fixture before fuzzing starts, outside the per-input timeout.
fuzz_target!(init: { common::qwen_tokenizer(); }, |data: &[u8]| {
    let tok = common::qwen_tokenizer();
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let parse_special = flags & 1 != 0;
    let ids = tok.encode(&text, parse_special).expect("encode");
    let mut bytes = Vec::with_capacity(text.len());
    for &id in &ids {
        bytes.extend(tok.token_bytes(id).expect("id in the vocabulary"));
    }
    assert_eq!(bytes, text.as_bytes(), "ids {ids:?}");
    assert_eq!(tok.decode(&ids, false).expect("decode"), text);
});
