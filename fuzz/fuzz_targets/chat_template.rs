//! Chat-template rendering with fuzzed templates and fuzzed messages. Must end (fuel), stay
//! bounded in memory and output, and answer `Ok` or a typed error.
//!
//! Input: `flags [template \0] role \0 content \0 role \0 content ...`. Flags: bit 0
//! add_generation_prompt, bit 1 enable_thinking, bit 2 renders the real Qwen3 template (no
//! template segment in the input), bit 3 passes one tool named after the first content, bit 4
//! splits a content at `\x01` into reasoning_content and content.
#![no_main]

mod common;

use bonsai_wgpu::Error;
use bonsai_wgpu::text::chat_template::{
    ChatMessage, ChatTemplate, MAX_RENDERED_BYTES, TemplateOptions,
};
use libfuzzer_sys::fuzz_target;

// Load the fixture before fuzzing starts, outside the per-input timeout.
fuzz_target!(init: { common::qwen3_template(); }, |data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.split(|&b| b == 0).map(String::from_utf8_lossy);
    let owned;
    let template = if flags & 4 != 0 {
        common::qwen3_template()
    } else {
        let source = parts.next().unwrap_or_default().into_owned();
        match ChatTemplate::new(source) {
            Ok(t) => {
                owned = t;
                &owned
            }
            Err(Error::ChatTemplate(_)) => return,
            Err(e) => panic!("untyped template error {e:?}"),
        }
    };
    let mut messages = Vec::new();
    while let (Some(role), Some(content)) = (parts.next(), parts.next()) {
        let mut m = ChatMessage::new(role, content.clone());
        if flags & 16 != 0 {
            if let Some((thinking, answer)) = content.split_once('\x01') {
                m.reasoning_content = Some(thinking.to_string());
                m.content = answer.to_string();
            }
        }
        messages.push(m);
    }
    let tools = (flags & 8 != 0).then(|| {
        let name = messages.first().map_or("f", |m| m.content.as_str());
        vec![bonsai_wgpu_tool(name)]
    });
    let opts = TemplateOptions {
        add_generation_prompt: flags & 1 != 0,
        enable_thinking: flags & 2 != 0,
        tools,
    };
    match template.render(&messages, &opts) {
        Ok(text) => assert!(text.len() <= MAX_RENDERED_BYTES),
        Err(Error::ChatTemplate(_)) => {}
        Err(e) => panic!("untyped render error {e:?}"),
    }
});

fn bonsai_wgpu_tool(name: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "function",
        "function": {
            "name": name,
            "description": "a fuzzed tool",
            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
        }
    })
}
