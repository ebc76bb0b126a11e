//! Text in and out: the tokenizer built from GGUF metadata ([`tokenizer`]), streaming
//! detokenization with one UTF-8 stream ([`detok`]), and the model's chat template
//! ([`chat_template`]).

pub mod chat_template;
pub mod detok;
pub mod tokenizer;

pub use chat_template::{ChatMessage, ChatTemplate, TemplateOptions};
pub use detok::{Detokenizer, Utf8Stream, Vocab};
pub use tokenizer::Tokenizer;
