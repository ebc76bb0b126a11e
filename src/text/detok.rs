//! Streaming detokenization: token bytes in, valid UTF-8 text out.
//!
//! Byte-level BPE tokens are byte strings, and one character (an emoji, a CJK ideograph) is often
//! split across two or three tokens. [`Utf8Stream`] holds back an incomplete sequence at the end
//! until the bytes that finish it arrive, so a caller printing each piece never prints half a
//! character; bytes that can never become valid UTF-8 turn into U+FFFD at once.

/// A vocabulary that can give the raw bytes of a token and name its stop tokens.
pub trait Vocab {
    /// The bytes a token stands for (special tokens: their literal text), `None` if out of range.
    fn token_bytes(&self, id: u32) -> Option<Vec<u8>>;
    /// Tokens that end a reply (end of turn, end of text).
    fn stop_tokens(&self) -> Vec<u32>;
    /// Control tokens (`<|im_start|>`, ...) are markup, not text: they are left out of the
    /// streamed output. Default: none.
    fn is_control(&self, _id: u32) -> bool {
        false
    }
}

/// Incremental UTF-8 decoder: [`push`](Self::push) bytes, get the complete characters so far.
#[derive(Clone, Debug, Default)]
pub struct Utf8Stream {
    /// An incomplete UTF-8 sequence (at most 3 bytes) waiting for its continuation.
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `bytes` and returns all text that is complete now. Invalid bytes become U+FFFD;
    /// a sequence that is merely unfinished is kept for the next call.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    out.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // Cannot fail: the first `valid_up_to` bytes were just checked.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// Whether bytes of an unfinished character are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: an unfinished sequence left over becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Turns a stream of token ids into text pieces, never splitting a character.
#[derive(Debug)]
pub struct Detokenizer<'v, V: Vocab + ?Sized> {
    vocab: &'v V,
    utf8: Utf8Stream,
}

impl<'v, V: Vocab + ?Sized> Detokenizer<'v, V> {
    /// A detokenizer over `vocab`'s token bytes.
    pub fn new(vocab: &'v V) -> Self {
        Self {
            vocab,
            utf8: Utf8Stream::new(),
        }
    }

    /// The text that token `id` completes (may be empty while a character is unfinished).
    /// Unknown ids and control tokens contribute nothing.
    pub fn push(&mut self, id: u32) -> String {
        if self.vocab.is_control(id) {
            return String::new();
        }
        match self.vocab.token_bytes(id) {
            Some(bytes) => self.utf8.push(&bytes),
            None => String::new(),
        }
    }

    /// Flushes what is left at the end of the stream (invalid leftovers become U+FFFD).
    pub fn finish(&mut self) -> String {
        self.utf8.finish()
    }
}
