//! The library's one error type. Every variant names what failed: the key, tensor, limit or file.

use thiserror::Error;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in bonsai-wgpu, from a hostile GGUF file to a missing GPU feature.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file failed (open, mmap, read).
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file that was being opened or read.
        path: String,
        /// The underlying operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// The bytes are not a GGUF file we can read: bad magic, version, truncation, absurd counts.
    #[error("invalid GGUF: {0}")]
    Gguf(String),

    /// The bytes do not start with the GGUF magic `GGUF`.
    #[error("not a GGUF file: it starts with \"{}\", expected \"GGUF\"", .0.escape_ascii())]
    BadMagic([u8; 4]),

    /// A GGUF version this crate cannot read (it reads versions 2 and 3).
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),

    /// The file ends before something it declares (or a declared count cannot fit in it).
    #[error(
        "truncated GGUF: {what} needs {needed} bytes at offset {offset}, only {available} left"
    )]
    Truncated {
        /// What was being read (a key, a tensor info, the tensor data ...).
        what: String,
        /// Byte offset in the file where the read starts.
        offset: u64,
        /// Bytes the read needs.
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
    },

    /// A metadata key the model needs is absent.
    #[error("GGUF metadata key `{0}` is missing")]
    MissingKey(String),

    /// A metadata key has the wrong type or an unusable value.
    #[error("GGUF metadata key `{key}`: {reason}")]
    BadKey {
        /// The metadata key.
        key: String,
        /// What is wrong with its value.
        reason: String,
    },

    /// A tensor the model needs is absent.
    #[error("tensor `{0}` is missing")]
    MissingTensor(String),

    /// A tensor has the wrong type, shape, or its data lies outside the file.
    #[error("tensor `{name}`: {reason}")]
    BadTensor {
        /// The tensor's name in the file.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A GGML tensor type this crate does not know or cannot use here.
    #[error("tensor `{name}` has unsupported GGML type {ggml_type}")]
    UnsupportedType {
        /// The tensor's name in the file.
        name: String,
        /// The GGML type id stored in the file.
        ggml_type: u32,
    },

    /// `general.architecture` names a model family this crate does not run.
    #[error("unsupported architecture `{0}` (bonsai-wgpu runs `qwen3`)")]
    UnsupportedArchitecture(String),

    /// Building or using the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// Rendering the chat template failed.
    #[error("chat template: {0}")]
    ChatTemplate(String),

    /// The tokens do not fit in the KV cache / context.
    #[error("context overflow: {needed} tokens needed but the context holds {capacity}")]
    ContextOverflow {
        /// Tokens the request needs in the context (prompt plus cached ones).
        needed: usize,
        /// Tokens the context (KV cache) can hold.
        capacity: usize,
    },

    /// A token id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken {
        /// The offending token id.
        id: u32,
        /// Vocabulary size; valid ids are below it.
        n_vocab: usize,
    },

    /// No usable GPU adapter was found, or the one found cannot run the model.
    #[error("GPU adapter: {0}")]
    Adapter(String),

    /// Requesting the device failed, or it was lost (the message says which, e.g.
    /// "GPU: device lost (Destroyed): ...").
    #[error("GPU: device {0}")]
    Device(String),

    /// A model or buffer exceeds what the adapter allows.
    #[error("GPU limit `{limit}` exceeded: need {needed}, adapter allows {allowed}")]
    Limit {
        /// Name of the `wgpu::Limits` field (e.g. `max_storage_buffer_binding_size`).
        limit: &'static str,
        /// What the model or buffer needs.
        needed: u64,
        /// What the adapter allows.
        allowed: u64,
    },

    /// A context (KV cache and the buffers sized with it) does not fit the device: the memory
    /// plan ([`crate::gpu::memory_plan`]) names what overflows and the largest context that fits.
    #[error(
        "a context of {n_ctx} tokens with a {cache_type} KV cache does not fit: {what} needs \
         {needed} bytes, the device allows {allowed}; the largest context that fits is \
         {max_n_ctx} tokens"
    )]
    ContextTooLarge {
        /// The context length asked for.
        n_ctx: usize,
        /// The KV cache type asked for.
        cache_type: crate::cache_type::CacheType,
        /// The buffer or total that overflows, and the limit it is checked against.
        what: String,
        /// Bytes it needs.
        needed: u64,
        /// Bytes the device allows.
        allowed: u64,
        /// The largest context that fits with the same options (0 if none).
        max_n_ctx: usize,
    },

    /// A GPU operation (map, submit, validation) failed.
    #[error("GPU: {0}")]
    Gpu(String),

    /// An argument from the caller is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An API request body ([`crate::openai`]) is malformed JSON, has a field of the wrong type,
    /// or asks for something out of range or unsupported; the server answers 400.
    #[error("invalid request: {message}")]
    BadRequest {
        /// The field at fault (`messages[0].role`, `temperature`), or `None` for the whole body.
        param: Option<String>,
        /// What is wrong, for the client.
        message: String,
    },
}
