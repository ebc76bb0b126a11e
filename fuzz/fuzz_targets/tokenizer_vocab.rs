//! The tokenizer built from a fuzzed GGUF vocabulary, then encode/decode of fuzzed text.
//!
//! Input: `flags spec \0 text`. `spec` is lines: `=a b` a merge, `!tok` a control token,
//! `+tok` a user-defined token, anything else an ordinary token. Flags: bit 0 puts GPT-2's 256
//! byte-level characters first (then every text can be encoded), bit 1 writes token types,
//! bit 2 parses special tokens, bit 3 leaves the merges key out, bit 4 names the last control
//! token as eos (else token 0), bit 5 writes a BOS id past the vocabulary.
#![no_main]

use bonsai_wgpu::gguf::{Gguf, GgufValue, GgufWriter};
use bonsai_wgpu::text::Tokenizer;
use libfuzzer_sys::fuzz_target;

/// GPT-2's bytes_to_unicode, the characters byte-level tokens are written in.
fn byte_alphabet() -> Vec<String> {
    let mut next = 256u32;
    (0..=255u8)
        .map(|b| {
            let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
            let c = if printable {
                u32::from(b)
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(c).map(String::from).unwrap_or_default()
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (spec, text) = match rest.iter().position(|&b| b == 0) {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, &[][..]),
    };
    let mut tokens = if flags & 1 != 0 {
        byte_alphabet()
    } else {
        Vec::new()
    };
    let mut types = vec![1i32; tokens.len()];
    let mut merges = Vec::new();
    let mut last_control = None;
    for line in String::from_utf8_lossy(spec).split('\n') {
        if let Some(m) = line.strip_prefix('=') {
            merges.push(m.to_string());
            continue;
        }
        let (ty, text) = match line.as_bytes().first() {
            Some(b'!') => (3, &line[1..]),
            Some(b'+') => (4, &line[1..]),
            _ => (1, line),
        };
        if ty == 3 {
            last_control = Some(tokens.len() as u32);
        }
        tokens.push(text.to_string());
        types.push(ty);
    }
    let mut w = GgufWriter::new();
    w.set("tokenizer.ggml.model", "gpt2");
    w.set("tokenizer.ggml.pre", "qwen2");
    let n_vocab = tokens.len() as u32;
    w.set("tokenizer.ggml.tokens", GgufValue::from(tokens));
    if flags & 2 != 0 {
        w.set("tokenizer.ggml.token_type", GgufValue::from(types));
    }
    if flags & 8 == 0 {
        w.set("tokenizer.ggml.merges", GgufValue::from(merges));
    }
    let eos = if flags & 16 != 0 {
        last_control.unwrap_or(0)
    } else {
        0
    };
    w.set("tokenizer.ggml.eos_token_id", eos);
    if flags & 32 != 0 {
        w.set("tokenizer.ggml.bos_token_id", n_vocab);
    }
    let gguf = Gguf::from_bytes(w.to_bytes()).expect("the writer's output parses");
    let Ok(tok) = Tokenizer::from_gguf(&gguf) else {
        return;
    };
    assert_eq!(tok.n_vocab(), n_vocab as usize);
    let text = String::from_utf8_lossy(text);
    let parse_special = flags & 4 != 0;
    let Ok(ids) = tok.encode(&text, parse_special) else {
        return;
    };
    let mut bytes = Vec::new();
    for &id in &ids {
        bytes.extend(
            tok.token_bytes(id)
                .expect("encode returns ids in the vocabulary"),
        );
    }
    if flags & 1 != 0 {
        // Every byte has a token: the pieces spell the text exactly.
        assert_eq!(String::from_utf8_lossy(&bytes), text, "ids {ids:?}");
    }
    let _ = tok.decode(&ids, true).expect("decode of encoded ids");
    let _ = tok.decode(&ids, false).expect("decode of encoded ids");
    for &id in &ids {
        let _ = (tok.is_eog(id), tok.is_control(id), tok.id_to_token(id));
    }
    assert!(tok.decode(&[n_vocab], false).is_err());
});
