//! Streaming detokenization of arbitrary token sequences (in and out of the vocabulary) with the
//! real Qwen vocabulary, plus the other streaming text stages: the UTF-8 stream fed arbitrary
//! byte chunks, the stop-string matcher and the `<think>` splitter fed arbitrary pieces.
//! Streamed output must equal the one-shot result.
#![no_main]

mod common;

use bonsai_wgpu::chat::ThinkSplitter;
use bonsai_wgpu::generate::StopMatcher;
use bonsai_wgpu::text::{Detokenizer, Utf8Stream, Vocab};
use libfuzzer_sys::fuzz_target;

// Load the fixture before fuzzing starts, outside the per-input timeout.
fuzz_target!(init: { common::qwen_tokenizer(); }, |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => detokenize(rest),
        1 => utf8_chunks(rest),
        _ => text_stages(rest),
    }
});

/// Three bytes per id; ids run a little past the vocabulary.
fn detokenize(data: &[u8]) {
    let tok = common::qwen_tokenizer();
    let n = tok.n_vocab() as u32 + 64;
    let ids: Vec<u32> = data
        .chunks_exact(3)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], 0]) % n)
        .collect();
    let mut streamed = String::new();
    let mut detok = Detokenizer::new(tok);
    for &id in &ids {
        streamed.push_str(&detok.push(id));
    }
    streamed.push_str(&detok.finish());
    let mut bytes = Vec::new();
    for &id in &ids {
        if !Vocab::is_control(tok, id) {
            bytes.extend(Vocab::token_bytes(tok, id).unwrap_or_default());
        }
    }
    assert_eq!(streamed, String::from_utf8_lossy(&bytes));
}

/// First byte of each chunk is its length.
fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len % 16).min(tail.len());
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    out
}

fn utf8_chunks(data: &[u8]) {
    let pieces = chunks(data);
    let all: Vec<u8> = pieces.concat();
    let want = String::from_utf8_lossy(&all);
    let mut stream = Utf8Stream::new();
    let mut got = String::new();
    for p in &pieces {
        got.push_str(&stream.push(p));
    }
    got.push_str(&stream.finish());
    assert_eq!(got, want);
}

/// Pieces of text; the first piece is the stop string.
fn text_stages(data: &[u8]) {
    let pieces: Vec<String> = chunks(data)
        .into_iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let Some((stop, pieces)) = pieces.split_first() else {
        return;
    };
    let input: String = pieces.concat();

    let mut matcher = StopMatcher::new(std::slice::from_ref(stop));
    let mut out = String::new();
    let mut stopped = None;
    for p in pieces {
        let (text, hit) = matcher.push(p);
        out.push_str(&text);
        if hit.is_some() {
            stopped = hit;
            break;
        }
    }
    match stopped {
        // Everything before the first occurrence of the stop string, nothing after.
        Some(s) => {
            assert_eq!(&s, stop);
            let at = input.find(stop.as_str()).expect("the stop string occurs");
            assert_eq!(out, input[..at]);
        }
        None => {
            out.push_str(&matcher.finish());
            assert!(stop.is_empty() || !input.contains(stop.as_str()));
            assert_eq!(out, input);
        }
    }

    let mut split = ThinkSplitter::new();
    let mut total = 0;
    for p in pieces {
        total += split.push(p).iter().map(|(t, _)| t.len()).sum::<usize>();
    }
    total += split.finish().map_or(0, |(t, _)| t.len());
    assert!(total <= input.len());
}
