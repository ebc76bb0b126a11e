//! GGUF: the file format of llama.cpp models. [`Gguf`] reads one (memory-mapped on native
//! targets, from bytes everywhere), [`GgufWriter`] writes version-3 files.
//!
//! Layout of a GGUF file (all little-endian):
//! `"GGUF"`, `u32` version, `u64` tensor count, `u64` metadata count, the metadata key/value
//! pairs, the tensor infos (name, dims with ne0 first, type, offset), padding to
//! `general.alignment` (default 32), then the tensor data, each tensor at an aligned offset
//! from the start of that data section.

mod reader;
mod value;
mod writer;

pub use reader::Gguf;
pub use value::{GgufValue, GgufValueType};
pub use writer::{GgufWriter, TensorSource};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const GGUF_DEFAULT_ALIGNMENT: u64 = 32;
/// The most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const GGML_MAX_DIMS: usize = 4;
/// How deep arrays may nest inside metadata values (arrays of arrays of ...).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// The most array elements all metadata may hold together (real models hold under a million:
/// tokens, merges, token types). Bounds the memory a small hostile file can make the reader use.
pub const MAX_METADATA_ELEMENTS: u64 = 1 << 24;

/// A GGML tensor element type. Discriminants are the type ids stored in GGUF files.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit IEEE float, one element per 4 bytes.
    F32 = 0,
    /// 16-bit IEEE half float.
    F16 = 1,
    /// 4-bit quant: 32 weights per 18-byte block (`f16` scale, 16 bytes of nibbles).
    Q4_0 = 2,
    /// 4-bit quant with offset: 32 weights per 20-byte block (`f16` scale and min, 16 bytes
    /// of nibbles).
    Q4_1 = 3,
    /// 5-bit quant: 32 weights per 22-byte block (`f16` scale, 4 bytes of high bits, 16 bytes
    /// of nibbles).
    Q5_0 = 6,
    /// 5-bit quant with offset: 32 weights per 24-byte block (`f16` scale and min, 4 bytes of
    /// high bits, 16 bytes of nibbles).
    Q5_1 = 7,
    /// 8-bit quant: 32 weights per 34-byte block (`f16` scale, 32 `i8`).
    Q8_0 = 8,
    /// 8-bit quant with sum: 32 weights per 36-byte block (`f16` scale and sum, 32 `i8`).
    Q8_1 = 9,
    /// `Q2_K` k-quant: 256 weights per 84-byte super-block of 16 sub-blocks, 2 bits each.
    Q2K = 10,
    /// `Q3_K` k-quant: 256 weights per 110-byte super-block, 3 bits each.
    Q3K = 11,
    /// `Q4_K` k-quant: 256 weights per 144-byte super-block of 8 sub-blocks, 4 bits each.
    Q4K = 12,
    /// `Q5_K` k-quant: 256 weights per 176-byte super-block, 5 bits each.
    Q5K = 13,
    /// `Q6_K` k-quant: 256 weights per 210-byte super-block of 16 sub-blocks, 6 bits each.
    Q6K = 14,
    /// `Q8_K`, llama.cpp's intermediate for k-quant dot products: 256 weights per 292-byte
    /// block (`f32` scale, 256 `i8`, 16 `i16` block sums).
    Q8K = 15,
    /// i-quant, about 2.06 bits per weight: 256 weights per 66-byte block (lattice codebook).
    IQ2_XXS = 16,
    /// i-quant, about 2.31 bits per weight: 256 weights per 74-byte block.
    IQ2_XS = 17,
    /// i-quant, about 3.06 bits per weight: 256 weights per 98-byte block.
    IQ3_XXS = 18,
    /// i-quant, about 1.56 bits per weight: 256 weights per 50-byte block.
    IQ1_S = 19,
    /// 4-bit non-linear quant: 32 weights per 18-byte block (`f16` scale, 16 bytes of
    /// codebook indices).
    IQ4_NL = 20,
    /// i-quant, about 3.44 bits per weight: 256 weights per 110-byte block.
    IQ3_S = 21,
    /// i-quant, about 2.56 bits per weight: 256 weights per 82-byte block.
    IQ2_S = 22,
    /// 4-bit non-linear quant with sub-block scales: 256 weights per 136-byte block.
    IQ4_XS = 23,
    /// 8-bit signed integer.
    I8 = 24,
    /// 16-bit signed integer.
    I16 = 25,
    /// 32-bit signed integer.
    I32 = 26,
    /// 64-bit signed integer.
    I64 = 27,
    /// 64-bit IEEE float.
    F64 = 28,
    /// i-quant, about 1.75 bits per weight: 256 weights per 56-byte block.
    IQ1_M = 29,
    /// bfloat16: the top 16 bits of an `f32`.
    BF16 = 30,
    /// Ternary quant, about 1.69 bits per weight: 256 weights per 54-byte block.
    TQ1_0 = 34,
    /// Ternary quant, about 2.06 bits per weight: 256 weights per 66-byte block.
    TQ2_0 = 35,
    /// Microscaling FP4: 32 `e2m1` weights per 17-byte block (one `e8m0` shared exponent,
    /// 16 bytes of nibbles).
    MXFP4 = 39,
    /// PrismML's 1-bit type: 128 weights per 18-byte block (`f16` scale, 16 sign bytes).
    Q1_0 = 41,
}

impl GgmlType {
    /// Every known type, in id order.
    pub const ALL: [GgmlType; 33] = [
        Self::F32,
        Self::F16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q8_1,
        Self::Q2K,
        Self::Q3K,
        Self::Q4K,
        Self::Q5K,
        Self::Q6K,
        Self::Q8K,
        Self::IQ2_XXS,
        Self::IQ2_XS,
        Self::IQ3_XXS,
        Self::IQ1_S,
        Self::IQ4_NL,
        Self::IQ3_S,
        Self::IQ2_S,
        Self::IQ4_XS,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::I64,
        Self::F64,
        Self::IQ1_M,
        Self::BF16,
        Self::TQ1_0,
        Self::TQ2_0,
        Self::MXFP4,
        Self::Q1_0,
    ];

    /// The type with this GGUF id, or `None` for ids this crate does not know.
    pub fn from_u32(id: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// The id stored in GGUF files.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Elements per block (1 for plain types, 32 for Q8_0, 128 for Q1_0, 256 for k-quants).
    pub fn block_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 | I8 | I16 | I32 | I64 | F64 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | IQ4_NL | MXFP4 => 32,
            Q1_0 => crate::quant::q1_0::QK1_0,
            Q2K | Q3K | Q4K | Q5K | Q6K | Q8K | IQ2_XXS | IQ2_XS | IQ3_XXS | IQ1_S | IQ3_S
            | IQ2_S | IQ4_XS | IQ1_M | TQ1_0 | TQ2_0 => 256,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            I8 => 1,
            I16 => 2,
            I32 => 4,
            I64 | F64 => 8,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q8_1 => 36,
            Q2K => 84,
            Q3K => 110,
            Q4K => 144,
            Q5K => 176,
            Q6K => 210,
            Q8K => 292,
            IQ2_XXS => 66,
            IQ2_XS => 74,
            IQ3_XXS => 98,
            IQ1_S => 50,
            IQ4_NL => 18,
            IQ3_S => 110,
            IQ2_S => 82,
            IQ4_XS => 136,
            IQ1_M => 56,
            TQ1_0 => 54,
            TQ2_0 => 66,
            MXFP4 => 17,
            Q1_0 => crate::quant::q1_0::Q1_0_BLOCK_BYTES,
        }
    }

    /// Bytes needed for `n` elements, or `None` when `n` is not a whole number of blocks or
    /// the size overflows `u64`.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }

    /// The name llama.cpp uses (`F32`, `Q8_0`, `Q4_K`, `Q1_0` ...).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            IQ2_XXS => "IQ2_XXS",
            IQ2_XS => "IQ2_XS",
            IQ3_XXS => "IQ3_XXS",
            IQ1_S => "IQ1_S",
            IQ4_NL => "IQ4_NL",
            IQ3_S => "IQ3_S",
            IQ2_S => "IQ2_S",
            IQ4_XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1_M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
            Q1_0 => "Q1_0",
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where one tensor lives and what it holds. Validated by the reader: at most
/// [`GGML_MAX_DIMS`] dims, ne0 a whole number of blocks, data aligned and inside the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, ne0 (the contiguous, input dimension) first: a weight `[K, N]` has N rows of K.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Byte offset of the data from the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (product of the dims; 1 for a zero-dimensional tensor).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Number of rows: the product of every dim after ne0.
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// Bytes per row (ne0 elements).
    pub fn row_bytes(&self) -> u64 {
        let ne0 = self.dims.first().copied().unwrap_or(1);
        self.ggml_type.row_bytes(ne0).unwrap_or(0)
    }
}
