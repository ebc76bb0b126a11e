//! Shared by the fuzz targets: the real Qwen vocabulary and chat template from the fixtures
//! (`../shared/fixtures` beside the repository, or `$BONSAI_FIXTURES`), loaded once per process.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::text::ChatTemplate;
use bonsai_wgpu::text::Tokenizer;

fn fixture(name: &str) -> PathBuf {
    let dir = std::env::var_os("BONSAI_FIXTURES").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/fixtures"
            ))
        },
        PathBuf::from,
    );
    dir.join(name)
}

/// The Qwen2/Qwen3 BPE tokenizer (151,643 tokens + added tokens).
pub fn qwen_tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = fixture("ggml-vocab-qwen2.gguf");
        let gguf = Gguf::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Tokenizer::from_gguf(&gguf).expect("fixture tokenizer")
    })
}

/// The Qwen3 chat template of the tiny-bonsai-dev fixture.
pub fn qwen3_template() -> &'static ChatTemplate {
    static TEMPLATE: OnceLock<ChatTemplate> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let path = fixture("tiny-bonsai-dev.gguf");
        let gguf = Gguf::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ChatTemplate::from_gguf(&gguf).expect("fixture template")
    })
}
