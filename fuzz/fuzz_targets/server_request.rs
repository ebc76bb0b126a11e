//! bonsai-server's request parsing: arbitrary bytes as the body of `/v1/chat/completions`,
//! `/v1/completions`, `/tokenize` and `/detokenize` (`bonsai_wgpu::openai`), then the checked
//! chat messages through the real Qwen3 chat template, as the server renders them. Any bytes give
//! `Ok` or `Error::BadRequest` naming the field; whatever passes the checks is in range.
//!
//! Input: the raw request body (seeds are the JSON bodies the server tests send).
#![no_main]

mod common;

use bonsai_wgpu::Error;
use bonsai_wgpu::openai::{
    DetokenizeRequest, GenerationRequest, MAX_STOP_STRINGS, PromptInput, TokenizeInput,
    TokenizeRequest, check_prompt_tokens, parse,
};
use bonsai_wgpu::text::chat_template::{ChatMessage, MAX_RENDERED_BYTES, TemplateOptions};
use libfuzzer_sys::fuzz_target;

/// The Qwen3 vocabulary size the server would check token ids against.
const N_VOCAB: usize = 151_669;
/// The seed `params` falls back to (the server passes the clock).
const DEFAULT_SEED: u64 = 0x5eed;

// Load the template before fuzzing starts, outside the per-input timeout.
fuzz_target!(init: { common::qwen3_template(); }, |data: &[u8]| {
    // Only JSON objects parse (serde's structs would also take arrays, field by field).
    let object = data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    match parse::<GenerationRequest>(data) {
        Ok(request) => {
            assert!(object);
            check_generation(&request);
        }
        Err(e) => check_error(&e),
    }
    match parse::<TokenizeRequest>(data) {
        Ok(request) => match request.input() {
            Ok(TokenizeInput::Text { content, .. }) => {
                assert!(request.content.as_deref() == Some(content));
            }
            Ok(TokenizeInput::Chat { messages, options }) => render(&messages, &options),
            Err(e) => check_error(&e),
        },
        Err(e) => check_error(&e),
    }
    match parse::<DetokenizeRequest>(data) {
        Ok(request) => match request.checked_tokens(N_VOCAB) {
            Ok(tokens) => assert!(tokens.iter().all(|&t| (t as usize) < N_VOCAB)),
            Err(e) => {
                let Error::BadRequest { param: Some(p), .. } = &e else {
                    panic!("detokenize: {e:?}");
                };
                let i: usize = p["tokens[".len()..p.len() - 1].parse().expect("tokens[i]");
                assert!(request.tokens[i] as usize >= N_VOCAB);
                assert!(request.tokens[..i].iter().all(|&t| (t as usize) < N_VOCAB));
            }
        },
        Err(e) => check_error(&e),
    }
});

/// Every failure is a `BadRequest` with a message, and a named field when there is one.
fn check_error(e: &Error) {
    match e {
        Error::BadRequest { param, message } => {
            assert!(!message.is_empty());
            assert!(param.as_ref().is_none_or(|p| !p.is_empty()));
        }
        other => panic!("untyped request error {other:?}"),
    }
}

fn in_range(v: f32, lo: f32, hi: f32) -> bool {
    v.is_finite() && (lo..=hi).contains(&v)
}

fn check_generation(request: &GenerationRequest) {
    match request.params(DEFAULT_SEED) {
        Ok(p) => {
            let s = &p.sampler;
            assert!(
                in_range(s.temperature, 0.0, 100.0),
                "temperature {}",
                s.temperature
            );
            assert!(in_range(s.top_p, 0.0, 1.0) && in_range(s.min_p, 0.0, 1.0));
            assert!(in_range(s.presence_penalty, -2.0, 2.0));
            assert!(in_range(s.frequency_penalty, -2.0, 2.0));
            assert!(in_range(s.repeat_penalty, 0.01, 100.0));
            assert_eq!(s.seed, request.seed.map_or(DEFAULT_SEED, |v| v as u64));
            assert!(p.stop.len() <= MAX_STOP_STRINGS);
            assert!(p.max_tokens != Some(0));
            assert!(p.stream || !p.include_usage);
        }
        Err(e) => {
            check_error(&e);
            assert!(matches!(e, Error::BadRequest { param: Some(_), .. }));
        }
    }
    // /v1/completions
    match request.prompt() {
        Ok(PromptInput::Text(text)) => assert!(!text.is_empty()),
        Ok(PromptInput::Tokens(tokens)) => {
            let in_vocab = tokens.iter().all(|&t| (t as usize) < N_VOCAB);
            assert_eq!(check_prompt_tokens(tokens, N_VOCAB).is_ok(), in_vocab);
        }
        Err(e) => check_error(&e),
    }
    // /v1/chat/completions
    match request.chat_messages() {
        Ok(messages) => {
            assert_eq!(
                messages.len(),
                request.messages.as_ref().map_or(0, Vec::len)
            );
            for m in &messages {
                assert!(matches!(m.role.as_str(), "system" | "user" | "assistant"));
            }
            render(&messages, &request.template_options());
        }
        Err(e) => check_error(&e),
    }
}

/// The server's rendering of checked messages: bounded output or a template error, and each
/// user turn's text reaches the prompt unchanged.
fn render(messages: &[ChatMessage], options: &TemplateOptions) {
    match common::qwen3_template().render(messages, options) {
        Ok(text) => {
            assert!(text.len() <= MAX_RENDERED_BYTES);
            for m in messages.iter().filter(|m| m.role == "user") {
                assert!(
                    text.contains(&m.content),
                    "user content missing from the prompt"
                );
            }
        }
        Err(Error::ChatTemplate(_)) => {}
        Err(e) => panic!("untyped render error {e:?}"),
    }
}
