//! Chat templates: the Jinja template stored in `tokenizer.chat_template`, rendered the way
//! Hugging Face `apply_chat_template` renders it.
//!
//! Rendering uses minijinja with the settings of transformers' template environment:
//! `trim_blocks`, `lstrip_blocks`, loop controls, no trailing newline kept, Python string methods
//! (`.split`, `.startswith`, `.strip`, ... via minijinja-contrib's pycompat), a
//! `raise_exception(msg)` function and a `tojson` filter that writes JSON as Python's
//! `json.dumps` does (`", "` / `": "` separators, non-ASCII kept, nothing HTML-escaped).

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use minijinja::value::{Kwargs, Serde, Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde::Serialize;

/// The metadata key holding the template.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// Name the template is registered under in the minijinja environment.
const TEMPLATE_NAME: &str = "chat_template";

/// One conversation turn.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The turn's text.
    pub content: String,
    /// An assistant turn's thinking, if kept apart from `content` (Qwen3 templates read it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// An assistant turn's tool calls, as the OpenAI-style JSON objects templates expect
    /// (`{"function": {"name": .., "arguments": {..}}}`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<serde_json::Value>,
}

impl ChatMessage {
    /// A message with just a role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            ..ChatMessage::default()
        }
    }
}

/// Options passed to the template alongside the messages.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateOptions {
    /// End the prompt with the opening of an assistant turn (default `true`: we generate next).
    pub add_generation_prompt: bool,
    /// Qwen3 thinking mode (default `true`). `false` makes the Qwen3 template emit an empty
    /// `<think>\n\n</think>\n\n` block after the generation prompt.
    pub enable_thinking: bool,
    /// Tool (function) definitions, as JSON schema objects; `None` passes no `tools`.
    pub tools: Option<Vec<serde_json::Value>>,
}

impl Default for TemplateOptions {
    fn default() -> Self {
        TemplateOptions {
            add_generation_prompt: true,
            enable_thinking: true,
            tools: None,
        }
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

fn template_err(e: minijinja::Error) -> Error {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    Error::ChatTemplate(msg)
}

impl ChatTemplate {
    /// Reads and compiles `tokenizer.chat_template`. The `bos_token` / `eos_token` template
    /// variables are filled from `tokenizer.ggml.{bos,eos}_token_id` when present.
    pub fn from_gguf(gguf: &Gguf) -> Result<ChatTemplate> {
        let source = gguf.get_str(CHAT_TEMPLATE_KEY)?.to_string();
        let mut template = ChatTemplate::new(source)?;
        let token_text = |key: &str| -> Option<String> {
            let id = gguf.get(key)?.as_u32()? as usize;
            let tokens = gguf.get("tokenizer.ggml.tokens")?.as_array()?;
            Some(tokens.get(id)?.as_str()?.to_string())
        };
        template.bos_token = token_text("tokenizer.ggml.bos_token_id").unwrap_or_default();
        template.eos_token = token_text("tokenizer.ggml.eos_token_id").unwrap_or_default();
        Ok(template)
    }

    /// Compiles a template from its Jinja source. A syntax error is [`Error::ChatTemplate`].
    pub fn new(source: String) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(false)
                .build()
                .map_err(template_err)?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(template_err)?;
        Ok(ChatTemplate {
            env,
            source,
            bos_token: String::new(),
            eos_token: String::new(),
        })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation into the prompt text (tokenize it with special tokens parsed).
    /// A template error (including `raise_exception`) is [`Error::ChatTemplate`].
    pub fn render(&self, messages: &[ChatMessage], opts: &TemplateOptions) -> Result<String> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(template_err)?;
        let tools = opts.tools.as_ref().map(|t| Value::from(Serde(t)));
        let ctx = minijinja::context! {
            messages => Value::from(Serde(messages)),
            add_generation_prompt => opts.add_generation_prompt,
            enable_thinking => opts.enable_thinking,
            tools => tools,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        template.render(ctx).map_err(template_err)
    }
}

/// `raise_exception(message)`: templates call it to reject a conversation.
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// Python `json.dumps` settings for the `tojson` filter.
struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;

    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(n.max(0) as usize)),
            None => Some(v.as_str().map(str::to_string).ok_or_else(|| {
                minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                )
            })?),
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] => match (a.as_str(), b.as_str()) {
                    (Some(a), Some(b)) => (a.to_string(), b.to_string()),
                    _ => return Err(bad_separators()),
                },
                _ => return Err(bad_separators()),
            }
        }
        // Python's default: ", " without indent, "," with it.
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(value, &style, 0, &mut out)?;
    Ok(Value::from(out))
}

fn bad_separators() -> minijinja::Error {
    minijinja::Error::new(
        ErrorKind::InvalidOperation,
        "tojson: separators must be a pair of strings",
    )
}

fn write_json_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A float as Python's `repr` writes it (`1.0`, `0.5`, `1e+16`, `1e-05`).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        // Rust: "1e16", "1.5e-5"; Python: "1e+16", "1.5e-05".
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mant}e{sign}{digits:0>2}");
    }
    let s = format!("{f}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

fn newline_indent(style: &JsonStyle, level: usize, out: &mut String) {
    if let Some(ind) = &style.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(ind);
        }
    }
}

fn write_json(
    value: &Value,
    style: &JsonStyle,
    level: usize,
    out: &mut String,
) -> std::result::Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Some(i) = value.as_i64().filter(|_| value.is_integer()) {
                out.push_str(&i.to_string());
            } else if value.is_integer() {
                out.push_str(&value.to_string());
            } else {
                let f = f64::try_from(value.clone())?;
                out.push_str(&python_float(f));
            }
        }
        ValueKind::String => write_json_str(value.as_str().unwrap_or(""), style.ensure_ascii, out),
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if style.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline_indent(style, level + 1, out);
                match key.as_str() {
                    Some(k) => write_json_str(k, style.ensure_ascii, out),
                    None => {
                        // Python converts int / bool / None keys to their JSON text.
                        let mut k = String::new();
                        write_json(key, style, level + 1, &mut k)?;
                        write_json_str(&k, style.ensure_ascii, out);
                    }
                }
                out.push_str(&style.key_sep);
                let item = value.get_item(key)?;
                write_json(&item, style, level + 1, out)?;
            }
            newline_indent(style, level, out);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline_indent(style, level + 1, out);
                write_json(item, style, level + 1, out)?;
            }
            newline_indent(style, level, out);
            out.push(']');
        }
        _ => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialize a value of type {}", value.kind()),
            ));
        }
    }
    Ok(())
}
