//! The model's tokenizer, built from the GGUF `tokenizer.ggml.*` metadata.
//!
//! Bonsai (Qwen3) uses GPT-2 style byte-level BPE with the `qwen2` pre-tokenizer regex. We build a
//! [`tokenizers`] (Hugging Face) tokenizer from the vocabulary and merges stored in the file, so the
//! BPE itself is the upstream implementation:
//!
//! - model: BPE over the byte-level vocabulary (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`),
//! - pre-tokenizer: `Sequence[Split(qwen2 regex, Isolated), ByteLevel(no prefix space, no regex)]`,
//!   with the regex exactly as llama.cpp's `LLAMA_VOCAB_PRE_TYPE_QWEN2` uses it,
//! - decoder: byte-level,
//! - added tokens: every CONTROL token (type 3) as a *special* added token, every USER_DEFINED
//!   token (type 4) as a plain added token, both matched verbatim in the input text.
//!
//! Like llama.cpp, there is no normalizer (no NFC) and no BOS is added.
//!
//! `parse_special = false` behaves like llama.cpp's `parse_special = false`: control tokens such as
//! `<|im_start|>` are tokenized as ordinary text, while user-defined tokens (`<think>`, ...) are
//! still recognised.

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, AddedVocabulary, Model, NormalizerWrapper, OffsetType, PreTokenizer,
    PreTokenizerWrapper, SplitDelimiterBehavior,
};

/// llama.cpp's pre-tokenizer regex for `tokenizer.ggml.pre = "qwen2"` (src/llama-vocab.cpp). It is
/// the Qwen2 `tokenizer.json` regex with the `(?i:...)` contraction group spelled out by hand.
pub const QWEN2_PRE_REGEX: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+",
    r"|\p{N}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*",
    r"|\s*[\r\n]+",
    r"|\s+(?!\S)",
    r"|\s+",
);

/// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Token texts llama.cpp treats as end-of-generation besides `eos`/`eot` (llama-vocab.cpp).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
];

/// What one token is, for [`Tokenizer::token_bytes`] and special-token handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An ordinary byte-level BPE token: its text is the GPT-2 byte-to-unicode encoding.
    Normal,
    /// A control token (`<|im_start|>`): special, skipped by `decode(.., skip_special = true)`.
    Control,
    /// A user-defined added token (`<think>`): matched verbatim, decoded as its text.
    UserDefined,
}

/// Byte-level BPE tokenizer for a Bonsai / Qwen3 GGUF file.
pub struct Tokenizer {
    /// The Hugging Face tokenizer: BPE model, pre-tokenizer, decoder, added tokens.
    inner: tokenizers::Tokenizer,
    /// The same added tokens with `encode_special_tokens` on: control tokens are not matched.
    plain_added: AddedVocabulary,
    /// Per token id, its kind (n_vocab).
    kinds: Vec<Kind>,
    /// Inverse of GPT-2's bytes_to_unicode: `char_to_byte[c]` for `c < 324`, else none.
    char_to_byte: Vec<Option<u8>>,
    eos_id: u32,
    bos_id: Option<u32>,
    pad_id: Option<u32>,
    add_bos: bool,
    /// Token ids that end generation (eos, eot and llama.cpp's end-of-generation texts).
    eog_ids: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("n_vocab", &self.kinds.len())
            .field("eos_id", &self.eos_id)
            .field("bos_id", &self.bos_id)
            .field("pad_id", &self.pad_id)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

fn bad_key(key: &str, reason: impl Into<String>) -> Error {
    Error::BadKey {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the others to U+0100 upwards.
fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            u32::from(b)
        } else {
            let c = next;
            next += 1;
            c
        };
        table[usize::from(b)] = char::from_u32(c).unwrap_or('\0');
    }
    table
}

/// Reads an optional token id key; present but not an in-range integer is an error.
fn optional_id(gguf: &Gguf, key: &str, n_vocab: usize) -> Result<Option<u32>> {
    match gguf.get(key) {
        None => Ok(None),
        Some(v) => {
            let id = v
                .as_u32()
                .ok_or_else(|| bad_key(key, "expected an integer token id"))?;
            if id as usize >= n_vocab {
                return Err(bad_key(
                    key,
                    format!("token id {id} is outside the vocabulary of {n_vocab}"),
                ));
            }
            Ok(Some(id))
        }
    }
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    ///
    /// Errors: [`Error::MissingKey`] / [`Error::BadKey`] naming the key for absent or malformed
    /// metadata, [`Error::Tokenizer`] for a model or pre-tokenizer type we do not support.
    pub fn from_gguf(gguf: &Gguf) -> Result<Tokenizer> {
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "`tokenizer.ggml.model` is `{model}`; only `gpt2` (byte-level BPE) is supported"
            )));
        }
        let pre = match gguf.get("tokenizer.ggml.pre") {
            None => "default",
            Some(v) => v
                .as_str()
                .ok_or_else(|| bad_key("tokenizer.ggml.pre", "expected a string"))?,
        };
        let regex = match pre {
            "qwen2" => QWEN2_PRE_REGEX,
            other => {
                return Err(Error::Tokenizer(format!(
                    "`tokenizer.ggml.pre` is `{other}`; only `qwen2` is supported"
                )));
            }
        };

        let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
        let n_vocab = tokens.len();
        if n_vocab == 0 || n_vocab > u32::MAX as usize {
            return Err(bad_key(
                "tokenizer.ggml.tokens",
                format!("vocabulary size {n_vocab} is out of range"),
            ));
        }

        let kinds = Self::read_kinds(gguf, n_vocab)?;

        let mut vocab = Vocab::with_capacity(n_vocab);
        for (id, tok) in tokens.iter().enumerate() {
            // A duplicate token text would make ids ambiguous: keep the first, as llama.cpp does.
            vocab.entry((*tok).to_string()).or_insert(id as u32);
        }

        let merges_raw = gguf.get_str_array("tokenizer.ggml.merges")?;
        let mut merges = Vec::with_capacity(merges_raw.len());
        for (i, m) in merges_raw.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte.
            let split = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(p, _)| p);
            let Some(p) = split else {
                return Err(bad_key(
                    "tokenizer.ggml.merges",
                    format!("merge {i} `{m}` is not two tokens separated by a space"),
                ));
            };
            merges.push((m[..p].to_string(), m[p + 1..].to_string()));
        }

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| bad_key("tokenizer.ggml.merges", e.to_string()))?;

        let split = Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tok_err)?;
        let pre_tokenizer = Sequence::new(vec![
            PreTokenizerWrapper::Split(split),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
        ]);

        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevel::default()));

        let added: Vec<AddedToken> = kinds
            .iter()
            .enumerate()
            .filter(|(_, k)| **k != Kind::Normal)
            .map(|(id, k)| {
                AddedToken::from(tokens[id], *k == Kind::Control)
                    .normalized(false)
                    .single_word(false)
                    .lstrip(false)
                    .rstrip(false)
            })
            .collect();
        let specials: Vec<AddedToken> = added.iter().filter(|t| t.special).cloned().collect();
        let plain: Vec<AddedToken> = added.iter().filter(|t| !t.special).cloned().collect();
        inner.add_special_tokens(&specials);
        inner.add_tokens(&plain);
        for (id, k) in kinds.iter().enumerate() {
            if *k != Kind::Normal && inner.token_to_id(tokens[id]) != Some(id as u32) {
                return Err(bad_key(
                    "tokenizer.ggml.tokens",
                    format!("added token `{}` (id {id}) appears twice", tokens[id]),
                ));
            }
        }
        let mut plain_added = inner.get_added_vocabulary().clone();
        plain_added.set_encode_special_tokens(true);

        let eos_id = optional_id(gguf, "tokenizer.ggml.eos_token_id", n_vocab)?
            .ok_or_else(|| Error::MissingKey("tokenizer.ggml.eos_token_id".into()))?;
        let bos_id = optional_id(gguf, "tokenizer.ggml.bos_token_id", n_vocab)?;
        let pad_id = optional_id(gguf, "tokenizer.ggml.padding_token_id", n_vocab)?;
        let eot_id = optional_id(gguf, "tokenizer.ggml.eot_token_id", n_vocab)?;
        let add_bos = match gguf.get("tokenizer.ggml.add_bos_token") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad_key("tokenizer.ggml.add_bos_token", "expected a bool"))?,
        };

        let mut eog_ids = vec![eos_id];
        eog_ids.extend(eot_id);
        for (id, k) in kinds.iter().enumerate() {
            if *k != Kind::Normal && EOG_TEXTS.contains(&tokens[id]) {
                eog_ids.push(id as u32);
            }
        }
        eog_ids.sort_unstable();
        eog_ids.dedup();

        let mut char_to_byte = vec![None; 324];
        for (b, c) in byte_to_char_table().iter().enumerate() {
            char_to_byte[*c as usize] = Some(b as u8);
        }

        Ok(Tokenizer {
            inner,
            plain_added,
            kinds,
            char_to_byte,
            eos_id,
            bos_id,
            pad_id,
            add_bos,
            eog_ids,
        })
    }

    fn read_kinds(gguf: &Gguf, n_vocab: usize) -> Result<Vec<Kind>> {
        const KEY: &str = "tokenizer.ggml.token_type";
        let Some(value) = gguf.get(KEY) else {
            // Without types every token is ordinary BPE; no special tokens are recognised.
            return Ok(vec![Kind::Normal; n_vocab]);
        };
        let types = value
            .as_array()
            .ok_or_else(|| bad_key(KEY, "expected an array of integers"))?;
        if types.len() != n_vocab {
            return Err(bad_key(
                KEY,
                format!(
                    "{} entries but `tokenizer.ggml.tokens` has {n_vocab}",
                    types.len()
                ),
            ));
        }
        types
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_i64() {
                Some(TOKEN_TYPE_CONTROL) => Ok(Kind::Control),
                Some(TOKEN_TYPE_USER_DEFINED) => Ok(Kind::UserDefined),
                Some(_) => Ok(Kind::Normal),
                None => Err(bad_key(KEY, format!("entry {i} is not an integer"))),
            })
            .collect()
    }

    /// Tokenizes `text`. No BOS is added (see [`Tokenizer::add_bos`]).
    ///
    /// With `parse_special`, control tokens written in the text (`<|im_start|>`) become their ids;
    /// without it they are tokenized as ordinary text, as llama.cpp does. User-defined tokens
    /// (`<think>`) are recognised either way, also as llama.cpp does.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        if parse_special {
            let enc = self.inner.encode_fast(text, false).map_err(tok_err)?;
            return Ok(enc.get_ids().to_vec());
        }
        // The same pipeline as `tokenizers::Tokenizer::encode_fast`, with the added-token split
        // done by a copy of the added vocabulary that leaves control tokens in the text.
        let mut pre = self
            .plain_added
            .extract_and_normalize::<NormalizerWrapper>(None, text);
        if let Some(pt) = self.inner.get_pre_tokenizer() {
            pt.pre_tokenize(&mut pre).map_err(tok_err)?;
        }
        let model = self.inner.get_model();
        pre.tokenize(|normalized| model.tokenize(normalized.get()))
            .map_err(tok_err)?;
        let enc = pre
            .into_encoding(None, 0, OffsetType::None)
            .map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Turns ids back into text. Invalid UTF-8 (a character split across the ids given) becomes
    /// U+FFFD; use [`Tokenizer::token_bytes`] to stream text token by token.
    /// `skip_special` drops control tokens (`<|im_end|>`), not user-defined ones (`<think>`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        for &id in ids {
            self.check_id(id)?;
        }
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    /// The raw bytes token `id` stands for: byte-level decoded for ordinary tokens (may be part of
    /// a UTF-8 character), the token text for control and user-defined tokens. `None` if `id` is
    /// outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let kind = *self.kinds.get(id as usize)?;
        let text = self.inner.id_to_token(id)?;
        if kind != Kind::Normal {
            return Some(text.into_bytes());
        }
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            match self.char_to_byte.get(c as usize).copied().flatten() {
                Some(b) => out.push(b),
                // Not a byte-level character (malformed vocabulary): keep its UTF-8, like
                // llama.cpp's llama_decode_text.
                None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        Some(out)
    }

    /// Number of tokens in the vocabulary (151,669 for Bonsai).
    pub fn n_vocab(&self) -> usize {
        self.kinds.len()
    }

    /// End-of-sequence token (`<|im_end|>` = 151645 for Bonsai).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Beginning-of-sequence token, if the file names one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Padding token, if the file names one.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// Whether the model expects a BOS token in front of the prompt (`false` for Bonsai).
    /// [`Tokenizer::encode`] never adds it; callers prepend [`Tokenizer::bos_id`] when this is set.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether generating `id` ends the turn: eos, eot, and the end-of-generation control
    /// tokens llama.cpp recognises by text (`<|im_end|>`, `<|endoftext|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog_ids.binary_search(&id).is_ok()
    }

    /// All end-of-generation token ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog_ids
    }

    /// Whether `id` is a control token (`<|im_start|>`, `<|im_end|>`, ...).
    pub fn is_control(&self, id: u32) -> bool {
        self.kinds.get(id as usize) == Some(&Kind::Control)
    }

    /// The id of the token whose vocabulary text is `token` (byte-level form for ordinary
    /// tokens: `"Ġthe"`; verbatim for added tokens: `"<|im_start|>"`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary text of token `id` (byte-level form for ordinary tokens).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn check_id(&self, id: u32) -> Result<()> {
        if (id as usize) < self.kinds.len() {
            Ok(())
        } else {
            Err(Error::BadToken {
                id,
                n_vocab: self.kinds.len(),
            })
        }
    }
}

impl crate::text::detok::Vocab for Tokenizer {
    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        Tokenizer::token_bytes(self, id)
    }

    fn stop_tokens(&self) -> Vec<u32> {
        self.eog_ids().to_vec()
    }

    fn is_control(&self, id: u32) -> bool {
        Tokenizer::is_control(self, id)
    }
}
