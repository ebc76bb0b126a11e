//! The GGUF reader over arbitrary bytes: header, metadata, tensor table, data views, and the
//! Qwen3 config validation of whatever parses. Must return `Ok` or `Err`, never panic, hang or
//! allocate more than a small multiple of the input.
#![no_main]

use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::model::Qwen3Config;
use bonsai_wgpu::quant::dequantize_row;
use libfuzzer_sys::fuzz_target;

/// Elements of a tensor's first row dequantized per input (bounds the work per run).
const MAX_ROW: u64 = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::from_bytes(data.to_vec()) else {
        return;
    };
    assert!(g.data_offset() <= data.len() as u64 + g.alignment());
    for (key, value) in g.metadata() {
        assert_eq!(g.get(key).map(|v| v.value_type()), Some(value.value_type()));
        let _ = (
            g.get_u32(key),
            g.get_u64(key),
            g.get_f32(key),
            g.get_bool(key),
        );
        let _ = (g.get_str(key), g.get_str_array(key));
    }
    for t in g.tensors() {
        // The reader promised every tensor's data lies inside the file.
        let bytes = g
            .tensor_data(&t.name)
            .expect("validated tensor data is in the file");
        assert_eq!(bytes.len() as u64, t.n_bytes);
        let ne0 = t.dims.first().copied().unwrap_or(1);
        if ne0 <= MAX_ROW && t.n_rows() > 0 {
            let row = &bytes[..t.row_bytes() as usize];
            let mut out = vec![0f32; ne0 as usize];
            // Unsupported types are an error; supported ones decode exactly one row.
            let _ = dequantize_row(t.ggml_type, row, &mut out);
        }
    }
    if let Ok(cfg) = Qwen3Config::from_gguf(&g) {
        let _ = cfg.validate_tensors(&g);
        let _ = (cfg.q_dim(), cfg.kv_dim(), cfg.gqa_group());
    }
});
