//! Multi-turn chat that reuses the KV cache across turns.
//!
//! Each turn renders the chat template for the *whole* conversation, tokenizes it, and compares
//! the result with the tokens already in the engine's cache. Only the part after the longest
//! common prefix is fed; history is never recomputed. When the rendering of earlier turns changes
//! (Qwen3's template drops an old assistant turn's `<think>` block once a new user message
//! follows, or the system prompt was edited), the cache is truncated to the common prefix and
//! refilled from there, so the cache always equals a fresh rendering of the conversation.
//!
//! Streamed output is split into [`Piece`]s: text inside `<think>...</think>` is
//! [`PieceKind::Thinking`], the rest [`PieceKind::Answer`], so a UI can dim or hide the thinking.

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::Result;
use crate::engine::Engine;
use crate::generate::{GenerateOptions, GenerateOutcome, StopReason, generate};
use crate::text::chat_template::{ChatMessage, ChatTemplate, TemplateOptions};
use crate::text::tokenizer::Tokenizer;

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// Whether streamed text is the model's thinking or its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceKind {
    /// Inside `<think>...</think>`.
    Thinking,
    /// Everything else.
    Answer,
}

/// A piece of streamed reply text (the `<think>` tags themselves are never in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece<'a> {
    /// The text.
    pub text: &'a str,
    /// Thinking or answer.
    pub kind: PieceKind,
}

/// Splits streamed text at `<think>` / `</think>` tags, even when a tag arrives in parts.
/// The newlines the template puts right after a tag are dropped.
#[derive(Clone, Debug)]
pub struct ThinkSplitter {
    kind: PieceKind,
    held: String,
    skip_newlines: bool,
}

impl Default for ThinkSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl ThinkSplitter {
    /// A splitter that starts in answer mode.
    pub fn new() -> Self {
        Self {
            kind: PieceKind::Answer,
            held: String::new(),
            skip_newlines: false,
        }
    }

    /// Whether the stream is inside a think block.
    pub fn kind(&self) -> PieceKind {
        self.kind
    }

    /// Adds text; returns the classified pieces that are complete now.
    pub fn push(&mut self, text: &str) -> Vec<(String, PieceKind)> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            if self.skip_newlines {
                let trimmed = self.held.trim_start_matches('\n');
                if trimmed.is_empty() {
                    self.held.clear();
                    return out;
                }
                self.held = trimmed.to_string();
                self.skip_newlines = false;
            }
            let tag = match self.kind {
                PieceKind::Answer => THINK_OPEN,
                PieceKind::Thinking => THINK_CLOSE,
            };
            if let Some(pos) = self.held.find(tag) {
                if pos > 0 {
                    out.push((self.held[..pos].to_string(), self.kind));
                }
                self.held.drain(..pos + tag.len());
                self.kind = match self.kind {
                    PieceKind::Answer => PieceKind::Thinking,
                    PieceKind::Thinking => PieceKind::Answer,
                };
                self.skip_newlines = true;
                continue;
            }
            // Hold back a tail that could be the start of the tag.
            let keep = (1..tag.len().min(self.held.len() + 1))
                .rev()
                .find(|&n| {
                    self.held.is_char_boundary(self.held.len() - n)
                        && tag.starts_with(&self.held[self.held.len() - n..])
                })
                .unwrap_or(0);
            let cut = self.held.len() - keep;
            if cut > 0 {
                out.push((self.held[..cut].to_string(), self.kind));
                self.held.drain(..cut);
            }
            return out;
        }
    }

    /// Ends the stream: text held back as a possible tag start is emitted as it is.
    pub fn finish(&mut self) -> Option<(String, PieceKind)> {
        let rest = std::mem::take(&mut self.held);
        (!rest.is_empty()).then_some((rest, self.kind))
    }
}

/// A conversation with a model: system prompt, messages, thinking switch, and a mirror of the
/// tokens in the engine's KV cache.
pub struct Conversation {
    tokenizer: Arc<Tokenizer>,
    template: Arc<ChatTemplate>,
    system: Option<String>,
    messages: Vec<ChatMessage>,
    enable_thinking: bool,
    /// The tokens in the engine's cache, position by position.
    cached: Vec<u32>,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("system", &self.system)
            .field("messages", &self.messages)
            .field("enable_thinking", &self.enable_thinking)
            .field("cached", &self.cached.len())
            .finish()
    }
}

impl Conversation {
    /// An empty conversation, thinking on, no system prompt. The tokenizer and template are
    /// shared (several conversations over one model hold the same ones).
    pub fn new(tokenizer: Arc<Tokenizer>, template: Arc<ChatTemplate>) -> Self {
        Self {
            tokenizer,
            template,
            system: None,
            messages: Vec::new(),
            enable_thinking: true,
            cached: Vec::new(),
        }
    }

    /// Sets (or with `None` removes) the system prompt; takes effect from the next turn.
    pub fn set_system(&mut self, system: Option<String>) {
        self.system = system.filter(|s| !s.is_empty());
    }

    /// The system prompt.
    pub fn system(&self) -> Option<&str> {
        self.system.as_deref()
    }

    /// Turns Qwen3 thinking mode on or off for the next replies.
    pub fn set_thinking(&mut self, on: bool) {
        self.enable_thinking = on;
    }

    /// Whether thinking mode is on.
    pub fn thinking(&self) -> bool {
        self.enable_thinking
    }

    /// The user and assistant messages so far (assistant replies as generated, thinking
    /// included: the template decides what of it to render).
    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// Forgets all messages (the system prompt stays); the cache is trimmed on the next turn.
    pub fn clear(&mut self) {
        self.messages.clear();
    }

    /// Tokens this conversation believes are in the engine's cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Removes and returns the last message (e.g. a user message whose reply could not fit).
    pub fn pop(&mut self) -> Option<ChatMessage> {
        self.messages.pop()
    }

    /// Adds a user message (call [`reply`](Self::reply) next).
    pub fn push_user(&mut self, text: &str) {
        self.messages.push(ChatMessage::new("user", text));
    }

    /// The whole conversation rendered by the template with the assistant prompt, tokenized.
    pub fn prompt_tokens(&self) -> Result<Vec<u32>> {
        let mut all = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = &self.system {
            all.push(ChatMessage::new("system", system.as_str()));
        }
        all.extend(self.messages.iter().cloned());
        let options = TemplateOptions {
            add_generation_prompt: true,
            enable_thinking: self.enable_thinking,
            ..TemplateOptions::default()
        };
        let text = self.template.render(&all, &options)?;
        self.tokenizer.encode(&text, true)
    }

    /// Truncates `engine` to the longest common prefix of its cache and the new rendering and
    /// returns the tokens still to feed (never empty: the last prompt token is re-fed if needed
    /// so its logits exist).
    pub fn pending_prompt<E: Engine>(&mut self, engine: &mut E) -> Result<Vec<u32>> {
        let tokens = self.prompt_tokens()?;
        let limit = self.cached.len().min(engine.n_past());
        let mut common = self.cached[..limit]
            .iter()
            .zip(&tokens)
            .take_while(|(a, b)| a == b)
            .count();
        if common == tokens.len() {
            common = common.saturating_sub(1);
        }
        engine.truncate(common)?;
        self.cached.truncate(common);
        Ok(tokens[common..].to_vec())
    }

    /// Generates the assistant's reply to the conversation so far, streaming [`Piece`]s. The
    /// reply is added to the history (also when cut short by a limit or a cancel, unless the
    /// cancel came before any text).
    pub async fn reply<E: Engine>(
        &mut self,
        engine: &mut E,
        options: &GenerateOptions,
        mut on_piece: impl FnMut(Piece<'_>) -> ControlFlow<()>,
    ) -> Result<GenerateOutcome> {
        let prompt = self.pending_prompt(engine)?;
        let mut splitter = ThinkSplitter::new();
        let mut flow = ControlFlow::Continue(());
        let outcome = generate(engine, &*self.tokenizer, &prompt, options, |text| {
            for (text, kind) in splitter.push(text) {
                if on_piece(Piece { text: &text, kind }).is_break() {
                    flow = ControlFlow::Break(());
                }
            }
            flow
        })
        .await?;
        if let Some((text, kind)) = splitter.finish() {
            let _ = on_piece(Piece { text: &text, kind });
        }
        // The generate invariant: the cache now holds the fed prompt, then the reply tokens.
        self.cached.extend_from_slice(&prompt[..outcome.n_prompt]);
        self.cached.extend_from_slice(&outcome.tokens);
        if !(outcome.text.is_empty() && outcome.stop_reason == StopReason::Cancelled) {
            self.messages
                .push(ChatMessage::new("assistant", outcome.text.as_str()));
        }
        Ok(outcome)
    }

    /// [`push_user`](Self::push_user) then [`reply`](Self::reply).
    pub async fn send<E: Engine>(
        &mut self,
        engine: &mut E,
        user: &str,
        options: &GenerateOptions,
        on_piece: impl FnMut(Piece<'_>) -> ControlFlow<()>,
    ) -> Result<GenerateOutcome> {
        self.push_user(user);
        self.reply(engine, options, on_piece).await
    }
}
