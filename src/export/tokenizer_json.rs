//! `tokenizer.json` and `tokenizer_config.json` for Hugging Face, from the GGUF vocabulary.
//!
//! The BPE model, its vocabulary, merges and added tokens (control tokens special, user-defined
//! ones not) come from [`Tokenizer::from_gguf`]; the pipeline around it is the one Qwen2/Qwen3
//! ship: NFC normalizer, the Qwen2 split regex (with its `(?i:...)` contractions, as Qwen's
//! `tokenizer.json` spells it), byte-level pre-tokenizer, post-processor and decoder. Added
//! tokens stay in the BPE vocabulary too (as in the GGUF), so every id is the GGUF's id
//! wherever the added tokens sit.

use serde_json::{Value, json};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::text::chat_template::CHAT_TEMPLATE_KEY;
use crate::text::tokenizer::{QWEN2_PRE_REGEX, Tokenizer};

/// llama.cpp spells Qwen2's case-insensitive contractions out by hand ...
const LLAMA_CPP_CONTRACTIONS: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
/// ... where Qwen's `tokenizer.json` writes them with a flag (which also folds e.g. `'ſ`).
const HF_CONTRACTIONS: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";

/// The pre-tokenizer regex of Qwen2/Qwen3's `tokenizer.json`: [`QWEN2_PRE_REGEX`] with the
/// contractions as Qwen writes them.
pub fn qwen2_hf_regex() -> Result<String> {
    if !QWEN2_PRE_REGEX.starts_with(LLAMA_CPP_CONTRACTIONS) {
        return Err(Error::Tokenizer(
            "the qwen2 regex no longer starts with the contractions group".into(),
        ));
    }
    Ok(QWEN2_PRE_REGEX.replacen(LLAMA_CPP_CONTRACTIONS, HF_CONTRACTIONS, 1))
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

/// The Hugging Face tokenizer of a Qwen3 GGUF, ready to serialize as `tokenizer.json`.
pub fn hf_tokenizer(tokenizer: &Tokenizer) -> Result<tokenizers::Tokenizer> {
    let mut hf = tokenizer.inner().clone();
    let split = Split::new(
        SplitPattern::Regex(qwen2_hf_regex()?),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(tok_err)?;
    // add_prefix_space, trim_offsets, use_regex: all false, as Qwen's file has them.
    let byte_level = ByteLevel::new(false, false, false);
    hf.with_normalizer(Some(NFC));
    hf.with_pre_tokenizer(Some(Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(byte_level),
    ])));
    hf.with_post_processor(Some(byte_level));
    hf.with_decoder(Some(byte_level));
    Ok(hf)
}

/// `tokenizer.json`: [`hf_tokenizer`] serialized.
pub fn tokenizer_json(tokenizer: &Tokenizer) -> Result<String> {
    hf_tokenizer(tokenizer)?.to_string(false).map_err(tok_err)
}

/// `tokenizer_config.json`: the added tokens, bos/eos/pad, `model_max_length` (the training
/// context) and the chat template from `tokenizer.chat_template` (omitted when the GGUF has
/// none).
pub fn tokenizer_config_json(
    gguf: &Gguf,
    tokenizer: &Tokenizer,
    model_max_length: usize,
) -> Result<Value> {
    let mut added: Vec<_> = tokenizer
        .inner()
        .get_added_tokens_decoder()
        .into_iter()
        .collect();
    added.sort_by_key(|(id, _)| *id);
    let text = |id: Option<u32>| id.and_then(|id| tokenizer.id_to_token(id));
    let (bos, eos, pad) = (
        text(tokenizer.bos_id().filter(|_| tokenizer.add_bos())),
        text(Some(tokenizer.eos_id())),
        text(tokenizer.pad_id()),
    );
    let additional: Vec<&str> = added
        .iter()
        .filter(|(_, t)| t.special)
        .map(|(_, t)| t.content.as_str())
        .filter(|c| Some(*c) != eos.as_deref() && Some(*c) != pad.as_deref())
        .collect();
    let decoder: serde_json::Map<String, Value> = added
        .iter()
        .map(|(id, t)| {
            let entry = json!({
                "content": t.content,
                "lstrip": t.lstrip,
                "normalized": t.normalized,
                "rstrip": t.rstrip,
                "single_word": t.single_word,
                "special": t.special,
            });
            (id.to_string(), entry)
        })
        .collect();
    let mut config = json!({
        "add_bos_token": tokenizer.add_bos(),
        "add_prefix_space": false,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": additional,
        "bos_token": bos,
        "clean_up_tokenization_spaces": false,
        "eos_token": eos,
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": pad,
        "split_special_tokens": false,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": null,
    });
    if gguf.get(CHAT_TEMPLATE_KEY).is_some() {
        config["chat_template"] = json!(gguf.get_str(CHAT_TEMPLATE_KEY)?);
    }
    Ok(config)
}
