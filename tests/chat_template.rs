//! Chat template rendering against Python Jinja2 renders of the Qwen3 template.
//!
//! `qwen3-chat-template-cases.json` (shared fixtures) and `tests/data/qwen3-chat-template-extra.json`
//! (tools, tool calls, tool responses, reasoning_content) were rendered by Python Jinja2 set up as
//! transformers' `apply_chat_template` does: trim_blocks, lstrip_blocks, loopcontrols, its `tojson`
//! (`json.dumps(ensure_ascii=False)`) and `raise_exception`.

use bonsai_wgpu::Error;
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::text::chat_template::{ChatMessage, ChatTemplate, TemplateOptions};
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures");
const EXTRA_CASES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/qwen3-chat-template-extra.json"
);

fn qwen3_template() -> ChatTemplate {
    let gguf = Gguf::open(format!("{FIXTURES}/tiny-bonsai-dev.gguf")).expect("open fixture");
    ChatTemplate::from_gguf(&gguf).expect("compile template")
}

fn message(v: &Value) -> ChatMessage {
    ChatMessage {
        role: v["role"].as_str().expect("role").to_string(),
        content: v["content"].as_str().expect("content").to_string(),
        reasoning_content: v["reasoning_content"].as_str().map(str::to_string),
        tool_calls: v["tool_calls"].as_array().cloned().unwrap_or_default(),
    }
}

fn check_cases(template: &ChatTemplate, path: &str) -> usize {
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read cases")).expect("json");
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let messages: Vec<ChatMessage> = case["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(message)
            .collect();
        let opts = TemplateOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap_or(false),
            enable_thinking: case["enable_thinking"].as_bool().unwrap_or(true),
            tools: case["tools"].as_array().cloned(),
        };
        let got = template.render(&messages, &opts).expect(name);
        assert_eq!(
            got,
            case["expected"].as_str().expect("expected"),
            "case `{name}`"
        );
    }
    cases.len()
}

#[test]
fn qwen3_fixture_cases() {
    let n = check_cases(
        &qwen3_template(),
        &format!("{FIXTURES}/qwen3-chat-template-cases.json"),
    );
    assert_eq!(n, 3);
}

#[test]
fn qwen3_tools_and_reasoning_cases() {
    let n = check_cases(&qwen3_template(), EXTRA_CASES);
    assert_eq!(n, 4);
}

#[test]
fn default_options_open_an_assistant_turn() {
    let out = qwen3_template()
        .render(
            &[ChatMessage::new("user", "Hi")],
            &TemplateOptions::default(),
        )
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn broken_templates_are_errors() {
    let err = ChatTemplate::new("{% for m in messages %}{{ m.content }}".into()).unwrap_err();
    assert!(matches!(err, Error::ChatTemplate(_)), "{err}");

    let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}".into()).unwrap();
    let err = t.render(&[], &TemplateOptions::default()).unwrap_err();
    assert!(
        matches!(&err, Error::ChatTemplate(m) if m.contains("roles must alternate")),
        "{err}"
    );

    let gguf = Gguf::from_bytes(bonsai_wgpu::gguf::GgufWriter::new().to_bytes()).unwrap();
    let err = ChatTemplate::from_gguf(&gguf).unwrap_err();
    assert!(
        matches!(&err, Error::MissingKey(k) if k == "tokenizer.chat_template"),
        "{err}"
    );

    // Qwen3 indexes messages[0]: an empty conversation fails to render instead of panicking.
    let t = ChatTemplate::new("{{ messages[0].role + 1 }}".into()).unwrap();
    let err = t
        .render(
            &[ChatMessage::new("user", "x")],
            &TemplateOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::ChatTemplate(_)), "{err}");
}

#[test]
fn tojson_matches_python_json_dumps() {
    let t = ChatTemplate::new(
        concat!(
            "{% set x = tools[0] %}",
            "{{ x | tojson }}|{{ x | tojson(indent=2) }}|",
            "{{ x | tojson(sort_keys=true, separators=(',', ':')) }}|",
            "{{ 'é<' | tojson(ensure_ascii=true) }}"
        )
        .into(),
    )
    .unwrap();
    let tools = vec![serde_json::json!({"b": [1, 2.5, 1e20, null, true], "a": {}, "c": []})];
    let out = t
        .render(
            &[],
            &TemplateOptions {
                tools: Some(tools),
                ..TemplateOptions::default()
            },
        )
        .unwrap();
    // Python: json.dumps(x), json.dumps(x, indent=2), json.dumps(x, sort_keys=True,
    // separators=(',', ':')), json.dumps('é<', ensure_ascii=True).
    let expected = concat!(
        r#"{"b": [1, 2.5, 1e+20, null, true], "a": {}, "c": []}|"#,
        "{\n  \"b\": [\n    1,\n    2.5,\n    1e+20,\n    null,\n    true\n  ],\n  \"a\": {},\n  \"c\": []\n}|",
        r#"{"a":{},"b":[1,2.5,1e+20,null,true],"c":[]}|"#,
        r#""\u00e9<""#,
    );
    assert_eq!(out, expected);
}
