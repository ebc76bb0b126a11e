//! Resource bounds on hostile input, and one test per input the fuzzer (fuzz/, cargo-fuzz) found
//! to crash, hang or exhaust memory: each stays here, in the normal suite, after its fix.
//!
//! The time limits are generous bounds for a loaded 2-core CI machine, not benchmarks: what they
//! catch is super-linear behaviour (minutes), not a slow machine (seconds).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bonsai_wgpu::Error;
use bonsai_wgpu::gguf::{GgmlType, Gguf, GgufWriter};
use bonsai_wgpu::text::Tokenizer;
use bonsai_wgpu::text::{ChatMessage, ChatTemplate, TemplateOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures");

/// Tokenizing 1 MB of hostile text must finish within this. Linear work takes 2-20 s (idle to
/// heavily loaded 2-core machine); anything quadratic in 1 MB would take hours.
const ENCODE_1MB_LIMIT: Duration = Duration::from_secs(90);
/// A template that loops or explodes must be stopped by its fuel within this.
const TEMPLATE_LIMIT: Duration = Duration::from_secs(10);

fn qwen_tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let gguf = Gguf::open(format!("{FIXTURES}/ggml-vocab-qwen2.gguf")).expect("fixture");
        Tokenizer::from_gguf(&gguf).expect("fixture tokenizer")
    })
}

fn qwen3_template() -> ChatTemplate {
    let gguf = Gguf::open(format!("{FIXTURES}/tiny-bonsai-dev.gguf")).expect("fixture");
    ChatTemplate::from_gguf(&gguf).expect("fixture template")
}

/// Encodes `text`, checks the tokens spell it, and returns the time taken.
fn encode_timed(name: &str, text: &str, parse_special: bool) -> Duration {
    let tok = qwen_tokenizer();
    let t0 = Instant::now();
    let ids = tok.encode(text, parse_special).expect("encode");
    let dt = t0.elapsed();
    eprintln!(
        "{name} ({} bytes, parse_special {parse_special}): {} tokens in {dt:?}",
        text.len(),
        ids.len()
    );
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&id| tok.token_bytes(id).unwrap())
        .collect();
    assert!(
        bytes == text.as_bytes(),
        "{name}: tokens do not spell the text"
    );
    dt
}

#[test]
fn tokenizing_1mb_of_hostile_text_is_bounded() {
    const MB: usize = 1 << 20;
    let mut rng = StdRng::seed_from_u64(17);
    let random_bytes: Vec<u8> = (0..MB).map(|_| rng.random()).collect();
    let random_text = String::from_utf8_lossy(&random_bytes).into_owned();
    // Random bytes, and the runs that stress the pre-tokenizer regex's backtracking (a
    // whitespace run before a letter: `\s+(?!\S)`) and BPE on one huge word or number.
    // (Measured besides these: random ASCII, whitespace and newline mixes, punctuation,
    // contractions, special-token lookalikes, CJK: all linear, 3-16 s loaded.)
    let cases = [
        ("random bytes", random_text.clone(), false),
        ("random bytes", random_text, true),
        ("spaces then a letter", " ".repeat(MB - 1) + "a", false),
        ("one long word", "a".repeat(MB), false),
        ("one long number", "7".repeat(MB), false),
    ];
    for (name, text, parse_special) in &cases {
        let dt = encode_timed(name, text, *parse_special);
        assert!(
            dt < ENCODE_1MB_LIMIT,
            "{name}: {dt:?} > {ENCODE_1MB_LIMIT:?}"
        );
    }
}

/// Renders `source` with one user message; returns the error text.
fn render_error(source: &str) -> String {
    let template = ChatTemplate::new(source.to_string()).expect("template compiles");
    let t0 = Instant::now();
    let r = template.render(
        &[ChatMessage::new("user", "hi")],
        &TemplateOptions::default(),
    );
    let dt = t0.elapsed();
    assert!(dt < TEMPLATE_LIMIT, "{source}: {dt:?}");
    match r {
        Err(Error::ChatTemplate(msg)) => msg,
        other => panic!("{source}: expected a chat template error, got {other:?}"),
    }
}

#[test]
fn looping_template_runs_out_of_fuel() {
    let msg = render_error(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    );
    assert!(msg.contains("fuel"), "{msg}");
}

#[test]
fn exploding_templates_are_stopped() {
    // Each step doubles a string: 2^60 bytes unless something stops it.
    let doubling = "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}\
                    {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}";
    // Straight-line growth, no loop: 8^12 bytes.
    let mut chained = String::from("{% set a0 = 'abcdefgh' %}");
    for i in 1..=12 {
        let p = format!("a{}", i - 1);
        chained += &format!("{{% set a{i} = {p}~{p}~{p}~{p}~{p}~{p}~{p}~{p} %}}");
    }
    chained += "{{ a12 }}";
    // Output instead of a value: 100,000 x 10^5 bytes.
    let output = "{% for i in range(100000) %}{{ 'y' * 100000 }}{% endfor %}";
    // Each replace multiplies the length by 16.
    let replace = "{% set ns = namespace(s='aaaaaaaaaaaaaaaa') %}{% for i in range(20) %}\
                   {% set ns.s = ns.s.replace('a', 'aaaaaaaaaaaaaaaa') %}{% endfor %}{{ ns.s }}";
    for source in [doubling, &chained, output, replace] {
        let msg = render_error(source);
        assert!(
            msg.contains("fuel") || msg.contains("bytes"),
            "{source}: {msg}"
        );
    }
}

#[test]
fn tojson_indent_and_separators_are_capped() {
    for source in [
        "{{ messages | tojson(indent=1000000000000) }}",
        "{{ messages | tojson(indent=' ' * 1000) }}",
        "{{ messages | tojson(separators=(',' * 1000, ':')) }}",
    ] {
        let msg = render_error(source);
        assert!(msg.contains("tojson"), "{source}: {msg}");
    }
    // Ordinary indents still work.
    let t = ChatTemplate::new("{{ messages | tojson(indent=2) }}".into()).unwrap();
    let out = t.render(
        &[ChatMessage::new("user", "hi")],
        &TemplateOptions::default(),
    );
    assert!(out.unwrap().contains("\n    \"role\": \"user\""));
}

#[test]
fn fuel_does_not_starve_long_conversations() {
    // 2,000 turns of 2 KB each: far more than fits in a context, yet the render must succeed.
    let template = qwen3_template();
    let turn = "word ".repeat(400);
    let messages: Vec<ChatMessage> = (0..2000)
        .map(|i| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, turn.clone()))
        .collect();
    let t0 = Instant::now();
    let text = template
        .render(&messages, &TemplateOptions::default())
        .expect("long conversation renders");
    eprintln!("2,000 turns: {} bytes in {:?}", text.len(), t0.elapsed());
    assert!(text.len() > 2000 * turn.len());
}

#[test]
fn zero_ne0_with_overflowing_row_count_is_rejected() {
    // Found auditing for the `gguf` target: with ne0 = 0 the element count is 0, so the
    // overflow check passed and `TensorInfo::n_rows` (2^80 here) overflowed later.
    let mut w = GgufWriter::new();
    w.add_tensor("t", vec![0, 1 << 40, 1 << 40], GgmlType::F32, vec![]);
    match Gguf::from_bytes(w.to_bytes()) {
        Err(Error::BadTensor { name, reason }) => {
            assert_eq!(name, "t");
            assert!(reason.contains("overflow"), "{reason}");
        }
        other => panic!("expected BadTensor, got {other:?}"),
    }
}

#[test]
fn hostile_request_bodies_are_bad_requests() {
    use bonsai_wgpu::openai::{GenerationRequest, parse};
    // The field each body gets wrong (`None`: the body as a whole).
    let deep = format!(
        "{{\"tools\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let cases: [(&[u8], Option<&str>); 7] = [
        // Nesting past serde_json's recursion limit stops there, not with a stack overflow.
        (deep.as_bytes(), None),
        (b"{\"messages\": [", None),
        (b"[\"messages\"]", None),
        // Found by a seed of `server_request`: serde's derived structs also take an array, field
        // by field, so this was a completions request for "hi". Bodies must be objects.
        (b" [null, \"hi\"]", None),
        (
            b"{\"max_tokens\": 18446744073709551616}",
            Some("max_tokens"),
        ),
        (b"{\"seed\": 1e400}", None),
        (
            b"{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": 7}]}]}",
            Some("messages[0].content"),
        ),
    ];
    for (body, want) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        match parse::<GenerationRequest>(body) {
            Err(Error::BadRequest { param, message }) => {
                assert_eq!(param.as_deref(), want, "{shown}: {message}");
            }
            other => panic!("{shown}: expected BadRequest, got {other:?}"),
        }
    }
    // Out-of-range values that parse are caught by the checks, named.
    let body = br#"{"temperature": 1e39, "messages": [{"role": "user", "content": "hi"}]}"#;
    let request: GenerationRequest = parse(body).expect("parses");
    match request.params(0) {
        Err(Error::BadRequest { param, .. }) => assert_eq!(param.as_deref(), Some("temperature")),
        other => panic!("expected BadRequest for temperature, got {other:?}"),
    }
}
