//! Chat tests: think-tag splitting, KV cache reuse across turns on the CPU engine with
//! tiny-bonsai-dev, and the chat example driven non-interactively.

mod fake;

use std::ops::ControlFlow;
use std::process::Command;
use std::sync::Arc;

use bonsai_wgpu::chat::{Conversation, PieceKind, ThinkSplitter};
use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::generate::{GenerateOptions, StopReason};
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::sampler::SamplerConfig;
use bonsai_wgpu::text::chat_template::ChatTemplate;
use bonsai_wgpu::text::tokenizer::Tokenizer;
use fake::ScriptedEngine;

const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/tiny-bonsai-dev.gguf"
);

/// Incremental (cached) and one-shot prefill run the same f32 arithmetic per position in the CPU
/// reference; only summation order inside attention can differ, far below this.
const LOGIT_TOL: f32 = 1e-4;

fn split_all(chunks: &[&str]) -> (String, String) {
    let mut s = ThinkSplitter::new();
    let (mut think, mut answer) = (String::new(), String::new());
    let pieces = chunks.iter().flat_map(|c| s.push(c)).collect::<Vec<_>>();
    for (text, kind) in pieces.into_iter().chain(s.finish()) {
        match kind {
            PieceKind::Thinking => think.push_str(&text),
            PieceKind::Answer => answer.push_str(&text),
        }
    }
    (think, answer)
}

#[test]
fn think_block_is_split_out_even_when_tags_arrive_in_parts() {
    let whole = "<think>\nLet me see: 2+2.\n</think>\n\nIt is 4. <b>ok</b>";
    let want = (
        "Let me see: 2+2.\n".to_string(),
        "It is 4. <b>ok</b>".to_string(),
    );
    assert_eq!(split_all(&[whole]), want);
    let chars: Vec<String> = whole.chars().map(String::from).collect();
    let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
    assert_eq!(split_all(&chars), want);
    assert_eq!(
        split_all(&["<thi", "nk>hm</th", "ink>yes"]),
        ("hm".into(), "yes".into())
    );
    // A lone '<' at the end is not swallowed.
    assert_eq!(split_all(&["a <"]), (String::new(), "a <".into()));
}

fn tiny() -> (Gguf, Arc<Tokenizer>, Arc<ChatTemplate>) {
    let gguf = Gguf::open(TINY).expect("tiny-bonsai-dev.gguf fixture");
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    let template = ChatTemplate::from_gguf(&gguf).unwrap();
    (gguf, Arc::new(tokenizer), Arc::new(template))
}

/// The fixture case "multi-turn with earlier reasoning stripped": the reply's `<think>` block is
/// streamed as thinking, dropped from the next rendering, and the cache is cut back to match.
#[test]
fn thinking_is_dropped_from_history_and_the_cache_follows() {
    let (_, tokenizer, template) = tiny();
    let reply = tokenizer
        .encode("<think>\nsimple sum\n</think>\n\n4", true)
        .unwrap();
    let mut engine = ScriptedEngine::new(tokenizer.n_vocab(), 4096, reply);
    engine.stop = tokenizer.eos_id();
    let mut conv = Conversation::new(tokenizer.clone(), template.clone());
    let (mut think, mut answer) = (String::new(), String::new());
    let options = GenerateOptions {
        sampler: SamplerConfig::greedy(),
        ..GenerateOptions::default()
    };
    let out = pollster::block_on(conv.send(&mut engine, "2+2?", &options, |p| {
        match p.kind {
            PieceKind::Thinking => think.push_str(p.text),
            PieceKind::Answer => answer.push_str(p.text),
        }
        ControlFlow::Continue(())
    }))
    .unwrap();
    assert_eq!(out.stop_reason, StopReason::Eos);
    assert_eq!((think.as_str(), answer.as_str()), ("simple sum\n", "4"));

    conv.push_user("And 3+3?");
    let full = conv.prompt_tokens().unwrap();
    let expected = "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n\
                    <|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(full, tokenizer.encode(expected, true).unwrap());
    let pending = conv.pending_prompt(&mut engine).unwrap();
    let prefix = tokenizer
        .encode(
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n",
            true,
        )
        .unwrap();
    assert_eq!(engine.fed, prefix, "cache cut back to the common prefix");
    assert_eq!(pending, full[prefix.len()..]);
}

#[test]
fn replies_stop_on_im_end_and_endoftext() {
    use bonsai_wgpu::text::detok::Vocab;
    let (_, tokenizer, _) = tiny();
    let stops = tokenizer.stop_tokens();
    for (name, id) in [("<|im_end|>", 151645), ("<|endoftext|>", 151643)] {
        assert_eq!(tokenizer.token_id(name), Some(id));
        assert!(stops.contains(&id), "{name} missing from {stops:?}");
    }
    // Control tokens are markup, never streamed as text; <think> is text the splitter sees.
    assert!(tokenizer.is_control(151644));
    assert!(!Vocab::is_control(
        &*tokenizer,
        tokenizer.token_id("<think>").unwrap()
    ));
}

fn options(seed: u64) -> GenerateOptions {
    GenerateOptions {
        sampler: SamplerConfig {
            seed,
            ..SamplerConfig::default()
        },
        max_tokens: 8,
        ..GenerateOptions::default()
    }
}

#[test]
fn second_turn_reuses_cache_and_matches_a_fresh_prefill() {
    let (gguf, tokenizer, template) = tiny();
    let model = CpuModel::from_gguf(&gguf).unwrap();
    let mut engine = CpuSession::new(model.clone(), 512).unwrap();
    let mut conv = Conversation::new(tokenizer.clone(), template.clone());
    conv.set_system(Some("You are terse.".into()));
    let mut pieces = 0;
    for (i, text) in ["Hi there!", "What is 2+2?"].iter().enumerate() {
        let out = pollster::block_on(conv.send(&mut engine, text, &options(i as u64), |_| {
            pieces += 1;
            ControlFlow::Continue(())
        }))
        .unwrap();
        assert_eq!(engine.n_past(), conv.cached_tokens().len());
        assert!(out.n_gen > 0);
    }
    assert_eq!(conv.messages().len(), 4);

    conv.push_user("And 3+3?");
    let full = conv.prompt_tokens().unwrap();
    let pending = conv.pending_prompt(&mut engine).unwrap();
    // Everything up to the second reply is reused; only the changed tail is fed again.
    let first_turn_len = {
        let mut c = Conversation::new(tokenizer.clone(), template.clone());
        c.set_system(Some("You are terse.".into()));
        c.push_user("Hi there!");
        c.prompt_tokens().unwrap().len()
    };
    assert!(
        full.len() - pending.len() >= first_turn_len,
        "reused {} of {}",
        full.len() - pending.len(),
        full.len()
    );
    pollster::block_on(engine.feed(&pending)).unwrap();
    let reused = pollster::block_on(engine.logits()).unwrap();

    let mut fresh = CpuSession::new(model, 512).unwrap();
    pollster::block_on(fresh.feed(&full)).unwrap();
    let want = pollster::block_on(fresh.logits()).unwrap();
    assert_eq!(engine.n_past(), full.len());
    let (i, diff) = reused
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0.0f32), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    assert!(
        diff <= LOGIT_TOL,
        "logit {i}: got {}, want {} (|diff| {diff})",
        reused[i],
        want[i]
    );
}

#[test]
fn same_seed_same_reply() {
    let (gguf, tokenizer, template) = tiny();
    let model = CpuModel::from_gguf(&gguf).unwrap();
    let reply = |seed| {
        let mut engine = CpuSession::new(model.clone(), 256).unwrap();
        let mut conv = Conversation::new(tokenizer.clone(), template.clone());
        let out = pollster::block_on(conv.send(&mut engine, "Hello", &options(seed), |_| {
            ControlFlow::Continue(())
        }))
        .unwrap();
        out.tokens
    };
    assert_eq!(reply(42), reply(42));
}

/// `cargo run` of the chat example with the same profile the tests are built with.
fn chat_example(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "--quiet",
            "--profile",
            "test",
            "--example",
            "chat",
            "--",
        ])
        .args(args)
        .stdin(std::process::Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("running cargo")
}

#[test]
fn chat_example_answers_a_prompt_on_the_cpu() {
    let out = chat_example(
        &[
            "--cpu", "--model", TINY, "--prompt", "Hello", "-n", "8", "--seed", "7", "--ctx", "256",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(
        stderr.contains("context ") && stderr.contains("/256"),
        "stats line missing: {stderr}"
    );
    // Deterministic for a fixed seed.
    let again = chat_example(
        &[
            "--cpu", "--model", TINY, "--prompt", "Hello", "-n", "8", "--seed", "7", "--ctx", "256",
        ],
        &[],
    );
    assert_eq!(out.stdout, again.stdout);
}

/// The default engine is the GPU (lavapipe in CI): same checks as on the CPU.
#[test]
fn chat_example_answers_a_prompt_on_the_gpu() {
    let args = [
        "--model", TINY, "--prompt", "Hello", "-n", "8", "--seed", "7", "--ctx", "256",
    ];
    let out = chat_example(&args, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("GPU: "), "adapter line missing: {stderr}");
    assert!(stderr.contains("/256"), "stats line missing: {stderr}");
    assert!(!out.stdout.is_empty(), "no reply text");
    assert_eq!(
        out.stdout,
        chat_example(&args, &[]).stdout,
        "same seed, same reply"
    );
}

#[test]
fn chat_example_without_model_or_network_explains_what_to_download() {
    let home = std::env::temp_dir().join(format!("bonsai-chat-nonet-{}", std::process::id()));
    let home_str = home.to_str().unwrap();
    let out = chat_example(
        &["--cpu", "--prompt", "Hello"],
        &[
            ("HF_HOME", home_str),
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
            ("HF_HUB_CACHE", ""),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Bonsai-1.7B-Q1_0.gguf"), "{stderr}");
    assert!(stderr.contains("prism-ml/Bonsai-1.7B-gguf"), "{stderr}");
    assert!(
        stderr.contains(home_str),
        "names the cache folder: {stderr}"
    );
    assert!(stderr.contains("--model"), "{stderr}");
    let _ = std::fs::remove_dir_all(home);
}
