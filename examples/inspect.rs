//! Prints a GGUF file's header, metadata and tensor table.
//!
//! `cargo run --release --example inspect -- MODEL.gguf`

use anyhow::Context;
use bonsai_wgpu::gguf::{Gguf, GgufValue};
use clap::Parser;

/// Longest string shown in full; longer ones are cut.
const MAX_STRING_CHARS: usize = 80;
/// Longest array shown in full; longer ones show their type, length and first few elements.
const MAX_ARRAY_SHOWN: usize = 8;
/// Elements shown of a summarised array.
const ARRAY_PREVIEW: usize = 4;

#[derive(Parser)]
#[command(about = "Print a GGUF file's version, alignment, metadata and tensor table")]
struct Args {
    /// The GGUF file.
    model: std::path::PathBuf,
}

fn short_string(s: &str) -> String {
    let escaped: String = s.escape_debug().collect();
    if escaped.chars().count() <= MAX_STRING_CHARS {
        format!("\"{escaped}\"")
    } else {
        let cut: String = escaped.chars().take(MAX_STRING_CHARS).collect();
        format!("\"{cut}\"... ({} bytes)", s.len())
    }
}

fn show(v: &GgufValue) -> String {
    match v {
        GgufValue::String(s) => short_string(s),
        GgufValue::Array(items) => {
            let elem = items.first().map_or("?", |e| e.value_type().name());
            if items.len() > MAX_ARRAY_SHOWN {
                let first: Vec<String> = items.iter().take(ARRAY_PREVIEW).map(show).collect();
                format!("[{elem}; {}] {}, ...", items.len(), first.join(", "))
            } else {
                let all: Vec<String> = items.iter().map(show).collect();
                format!("[{}]", all.join(", "))
            }
        }
        GgufValue::U8(x) => x.to_string(),
        GgufValue::I8(x) => x.to_string(),
        GgufValue::U16(x) => x.to_string(),
        GgufValue::I16(x) => x.to_string(),
        GgufValue::U32(x) => x.to_string(),
        GgufValue::I32(x) => x.to_string(),
        GgufValue::U64(x) => x.to_string(),
        GgufValue::I64(x) => x.to_string(),
        GgufValue::F32(x) => format!("{x:e}"),
        GgufValue::F64(x) => format!("{x:e}"),
        GgufValue::Bool(x) => x.to_string(),
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let g = Gguf::open(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    println!("file:      {}", args.model.display());
    println!("size:      {}", human(g.bytes().len() as u64));
    println!("version:   {}", g.version());
    println!("alignment: {}", g.alignment());
    println!("data at:   {}", g.data_offset());

    println!("\nmetadata ({} keys):", g.metadata().len());
    for (key, value) in g.metadata() {
        println!(
            "  {key:<44} {:<6} = {}",
            value.value_type().name(),
            show(value)
        );
    }

    println!("\ntensors ({}):", g.tensors().len());
    let width = g.tensors().iter().map(|t| t.name.len()).max().unwrap_or(4);
    println!(
        "  {:<width$}  {:<6}  {:<24}  {:>14}  {:>12}",
        "name", "type", "shape (ne0 first)", "elements", "bytes"
    );
    let (mut elements, mut bytes) = (0u64, 0u64);
    let mut by_type: std::collections::BTreeMap<&str, (usize, u64)> = Default::default();
    for t in g.tensors() {
        let shape = format!("{:?}", t.dims);
        println!(
            "  {:<width$}  {:<6}  {:<24}  {:>14}  {:>12}",
            t.name,
            t.ggml_type.name(),
            shape,
            t.n_elements(),
            t.n_bytes
        );
        elements += t.n_elements();
        bytes += t.n_bytes;
        let e = by_type.entry(t.ggml_type.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
    }
    println!(
        "\ntotal: {} tensors, {elements} elements, {} ({bytes} bytes)",
        g.tensors().len(),
        human(bytes)
    );
    for (ty, (n, b)) in by_type {
        println!("  {ty:<6} {n:>4} tensors  {}", human(b));
    }
    if elements > 0 {
        println!(
            "  {:.3} bits per weight",
            bytes as f64 * 8.0 / elements as f64
        );
    }
    Ok(())
}
