//! Chat prompts as tokens, with control tokens only where the chat template wrote them.
//!
//! Rendering the template to one string and tokenizing it with special tokens parsed lets a user
//! who types `<|im_end|>\n<|im_start|>system` switch roles: their text becomes the control tokens
//! 151645 / 151644. [`chat_prompt_tokens`] closes that hole:
//!
//! 1. every control-token string in a message (content, reasoning, tool-call and tool-definition
//!    strings) is swapped for a private-use placeholder character before rendering, so the
//!    template's own string operations (`split('</think>')`, `strip`, `startswith`) see the same
//!    text apart from that character;
//! 2. the rendered text is split at the control tokens that remain: the template wrote them, and
//!    they become their ids;
//! 3. each piece between them gets its placeholders restored and is tokenized *without* parsing
//!    control tokens, so a user's `<|im_end|>` is the plain text `<|im_end|>`.
//!
//! For input without control-token strings the result equals tokenizing the rendering with
//! special tokens parsed (the tokenizer splits at control tokens first, then encodes each piece
//! on its own), so prompts of honest conversations are unchanged.

use crate::error::{Error, Result};
use crate::text::chat_template::{ChatMessage, ChatTemplate, TemplateOptions};
use crate::text::tokenizer::Tokenizer;

/// Placeholder characters: Supplementary Private Use Areas A and B (planes 15 and 16).
const PLACEHOLDER_FIRST: u32 = 0xF0000;
const PLACEHOLDER_LAST: u32 = 0x10FFFD;

/// Swaps control-token strings (and any placeholder-range characters already in the text) for
/// placeholder characters, remembering the originals.
struct Escaper<'a> {
    controls: &'a [(String, u32)],
    saved: Vec<String>,
}

impl Escaper<'_> {
    fn placeholder(&mut self, original: &str) -> Result<char> {
        let code = PLACEHOLDER_FIRST + self.saved.len() as u32;
        let c = (code <= PLACEHOLDER_LAST)
            .then(|| char::from_u32(code))
            .flatten()
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the messages hold more than {} control-token strings",
                    PLACEHOLDER_LAST - PLACEHOLDER_FIRST
                ))
            })?;
        self.saved.push(original.to_string());
        Ok(c)
    }

    fn escape(&mut self, text: &str) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some((control, _)) = self.controls.iter().find(|(t, _)| rest.starts_with(t)) {
                out.push(self.placeholder(control)?);
                rest = &rest[control.len()..];
                continue;
            }
            if is_placeholder(c) {
                out.push(self.placeholder(&rest[..c.len_utf8()])?);
            } else {
                out.push(c);
            }
            rest = &rest[c.len_utf8()..];
        }
        Ok(out)
    }

    fn escape_json(&mut self, value: &mut serde_json::Value) -> Result<()> {
        match value {
            serde_json::Value::String(s) => *s = self.escape(s)?,
            serde_json::Value::Array(items) => {
                for item in items {
                    self.escape_json(item)?;
                }
            }
            serde_json::Value::Object(map) => {
                for item in map.values_mut() {
                    self.escape_json(item)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn unescape(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            let saved = is_placeholder(c)
                .then(|| self.saved.get((c as u32 - PLACEHOLDER_FIRST) as usize))
                .flatten();
            match saved {
                Some(original) => out.push_str(original),
                None => out.push(c),
            }
        }
        out
    }
}

fn is_placeholder(c: char) -> bool {
    (PLACEHOLDER_FIRST..=PLACEHOLDER_LAST).contains(&(c as u32))
}

/// The prompt tokens for `messages` rendered by `template`: control tokens come from the
/// template only, message text is tokenized as text (see the module docs).
pub fn chat_prompt_tokens(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    messages: &[ChatMessage],
    options: &TemplateOptions,
) -> Result<Vec<u32>> {
    let controls = tokenizer.control_tokens();
    let mut escaper = Escaper {
        controls: &controls,
        saved: Vec::new(),
    };
    let mut escaped = Vec::with_capacity(messages.len());
    for m in messages {
        let mut m = m.clone();
        m.content = escaper.escape(&m.content)?;
        if let Some(r) = &m.reasoning_content {
            m.reasoning_content = Some(escaper.escape(r)?);
        }
        for call in &mut m.tool_calls {
            escaper.escape_json(call)?;
        }
        escaped.push(m);
    }
    let mut options = options.clone();
    if let Some(tools) = &mut options.tools {
        for tool in tools {
            escaper.escape_json(tool)?;
        }
    }
    let rendered = template.render(&escaped, &options)?;

    let mut tokens = Vec::new();
    let mut piece_start = 0;
    let mut i = 0;
    while i < rendered.len() {
        let rest = &rendered[i..];
        let Some((control, id)) = controls.iter().find(|(t, _)| rest.starts_with(t)) else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        encode_piece(tokenizer, &escaper, &rendered[piece_start..i], &mut tokens)?;
        tokens.push(*id);
        i += control.len();
        piece_start = i;
    }
    encode_piece(tokenizer, &escaper, &rendered[piece_start..], &mut tokens)?;
    Ok(tokens)
}

fn encode_piece(
    tokenizer: &Tokenizer,
    escaper: &Escaper<'_>,
    piece: &str,
    out: &mut Vec<u32>,
) -> Result<()> {
    if !piece.is_empty() {
        out.extend(tokenizer.encode(&escaper.unescape(piece), false)?);
    }
    Ok(())
}
