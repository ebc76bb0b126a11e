//! The GGUF reader: a bounds-checked parse of the header, metadata and tensor infos, then
//! zero-copy views into the tensor data. Every size read from the file is checked against the
//! bytes that remain before anything is allocated from it, so hostile files give an [`Error`].

use std::collections::HashMap;

use super::{
    GGML_MAX_DIMS, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GgmlType, GgufValue, GgufValueType,
    MAX_ARRAY_DEPTH, MAX_METADATA_ELEMENTS, TensorInfo,
};
use crate::error::{Error, Result};

/// Fewest bytes one metadata entry can occupy: key length, value type, a 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Fewest bytes one tensor info can occupy: name length, n_dims, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// The bytes behind a [`Gguf`]: a read-only memory map (native) or an owned buffer.
enum Storage {
    #[cfg(not(target_arch = "wasm32"))]
    Mmap(memmap2::Mmap),
    Bytes(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Storage::Mmap(m) => m,
            Storage::Bytes(v) => v,
        }
    }
}

/// A parsed GGUF file that owns its bytes. Metadata and tensor infos are parsed and validated
/// up front; tensor data is handed out as slices of the underlying bytes, never copied.
pub struct Gguf {
    storage: Storage,
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Absolute file offset of the data section.
    data_offset: u64,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .field("file_size", &self.storage.bytes().len())
            .finish()
    }
}

impl Gguf {
    /// Memory-maps and parses the file at `path`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Gguf> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            // Mapping an empty file fails on some platforms; let the parser report it.
            return Gguf::from_bytes(Vec::new());
        }
        // SAFETY: `Mmap::map` is unsafe only because the file could change under the mapping
        // (another process truncating or rewriting it), which Rust cannot rule out. Here the
        // map is read-only, owned by this value and never written through, and every read is
        // bounds-checked against the length parsed from it; what remains is the contract every
        // mmap-based model loader (llama.cpp, safetensors) asks of its users: do not modify a
        // model file while it is open. The crate's other `unsafe` is the trusted shader
        // modules (gpu/kernel.rs).
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Gguf::from_storage(Storage::Mmap(mmap))
    }

    /// Parses a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Gguf> {
        Gguf::from_storage(Storage::Bytes(bytes))
    }

    fn from_storage(storage: Storage) -> Result<Gguf> {
        let parsed = parse(storage.bytes())?;
        Ok(Gguf {
            storage,
            version: parsed.version,
            alignment: parsed.alignment,
            metadata: parsed.metadata,
            key_index: parsed.key_index,
            tensors: parsed.tensors,
            tensor_index: parsed.tensor_index,
            data_offset: parsed.data_offset,
        })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and tensors (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&GgufValue> {
        self.get(key)
            .ok_or_else(|| Error::MissingKey(key.to_owned()))
    }

    fn bad_key(key: &str, want: &str, got: &GgufValue) -> Error {
        Error::BadKey {
            key: key.to_owned(),
            reason: format!("expected {want}, found a {} value", got.value_type()),
        }
    }

    /// A string value; `MissingKey` when absent, `BadKey` when not a string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::bad_key(key, "a string", v))
    }

    /// An integer value that fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let v = self.require(key)?;
        v.as_u32()
            .ok_or_else(|| Self::bad_key(key, "an integer that fits in u32", v))
    }

    /// A non-negative integer value.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| Self::bad_key(key, "a non-negative integer", v))
    }

    /// A float value (`f32`, `f64` narrowed, or an integer).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        v.as_f32().ok_or_else(|| Self::bad_key(key, "a number", v))
    }

    /// A `bool` value.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| Self::bad_key(key, "a bool", v))
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.require(key)?;
        let arr = v
            .as_array()
            .ok_or_else(|| Self::bad_key(key, "an array of strings", v))?;
        arr.iter()
            .map(|e| {
                e.as_str()
                    .ok_or_else(|| Self::bad_key(key, "an array of strings (element)", e))
            })
            .collect()
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of a tensor.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The exact bytes of a tensor (`n_bytes` long); `MissingTensor` when absent.
    pub fn tensor_data(&self, name: &str) -> Result<&[u8]> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| Error::MissingTensor(name.to_owned()))?;
        self.tensor_bytes(info)
    }

    /// The bytes of a tensor described by `info` (one of [`Gguf::tensors`]).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8]> {
        let bad = || Error::BadTensor {
            name: info.name.clone(),
            reason: format!(
                "data at offset {} ({} bytes) lies outside the file",
                info.offset, info.n_bytes
            ),
        };
        let start = self.data_offset.checked_add(info.offset).ok_or_else(bad)?;
        let end = start.checked_add(info.n_bytes).ok_or_else(bad)?;
        let (start, end) = (
            usize::try_from(start).map_err(|_| bad())?,
            usize::try_from(end).map_err(|_| bad())?,
        );
        self.bytes().get(start..end).ok_or_else(bad)
    }
}

/// What the parser extracts; the bytes stay with the caller.
struct Parsed {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_offset: u64,
}

/// A read that ran past the end: where it started, how much it wanted, how much was left.
struct Short {
    offset: usize,
    needed: u64,
    available: usize,
}

impl Short {
    fn into_error(self, what: impl FnOnce() -> String) -> Error {
        Error::Truncated {
            what: what(),
            offset: self.offset as u64,
            needed: self.needed,
            available: self.available as u64,
        }
    }
}

/// A bounds-checked little-endian reader over a byte slice.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless at least `n` bytes remain.
    fn ensure(&self, n: u64) -> std::result::Result<(), Short> {
        if n > self.remaining() as u64 {
            return Err(Short {
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        Ok(())
    }

    fn take(&mut self, n: u64) -> std::result::Result<&'a [u8], Short> {
        self.ensure(n)?;
        // `n <= remaining` so it fits in usize and the range is in bounds.
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], Short> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> std::result::Result<u8, Short> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, Short> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> std::result::Result<u32, Short> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> std::result::Result<u64, Short> {
        self.array().map(u64::from_le_bytes)
    }
}

fn parse(buf: &[u8]) -> Result<Parsed> {
    let mut cur = Cursor { buf, pos: 0 };
    let magic: [u8; 4] = cur.array().map_err(|s| s.into_error(|| "magic".into()))?;
    if magic != GGUF_MAGIC {
        return Err(Error::BadMagic(magic));
    }
    let version = cur.u32().map_err(|s| s.into_error(|| "version".into()))?;
    if version != 2 && version != 3 {
        return Err(Error::UnsupportedVersion(version));
    }
    let header = |s: Short| s.into_error(|| "header counts".into());
    let n_tensors = cur.u64().map_err(header)?;
    let n_kv = cur.u64().map_err(header)?;
    // Both counts against the bytes left, before anything is allocated from them.
    let min_bytes = n_kv
        .checked_mul(MIN_KV_BYTES)
        .and_then(|a| {
            n_tensors
                .checked_mul(MIN_TENSOR_INFO_BYTES)
                .and_then(|b| a.checked_add(b))
        })
        .unwrap_or(u64::MAX);
    cur.ensure(min_bytes).map_err(|s| {
        s.into_error(|| format!("{n_kv} metadata entries and {n_tensors} tensor infos"))
    })?;

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut key_index = HashMap::with_capacity(n_kv as usize);
    let mut element_budget = MAX_METADATA_ELEMENTS;
    for i in 0..n_kv {
        let key = read_string(&mut cur, || format!("key of metadata entry {i}"))?
            .ok_or_else(|| Error::Gguf(format!("key of metadata entry {i} is not UTF-8")))?;
        if key_index.contains_key(&key) {
            return Err(Error::BadKey {
                key,
                reason: "duplicate key".into(),
            });
        }
        let ty = cur
            .u32()
            .map_err(|s| s.into_error(|| format!("type of key `{key}`")))?;
        let ty = GgufValueType::from_u32(ty).ok_or_else(|| Error::BadKey {
            key: key.clone(),
            reason: format!("unknown value type {ty}"),
        })?;
        let value = read_value(&mut cur, ty, 0, &key, &mut element_budget)?;
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let alignment = match key_index.get("general.alignment") {
        None => GGUF_DEFAULT_ALIGNMENT,
        Some(&i) => {
            let v = &metadata[i].1;
            match v.as_u32() {
                Some(a) if a.is_power_of_two() => u64::from(a),
                _ => {
                    return Err(Error::BadKey {
                        key: "general.alignment".into(),
                        reason: format!("must be a power of two that fits in u32, found {v:?}"),
                    });
                }
            }
        }
    };

    cur.ensure(n_tensors.saturating_mul(MIN_TENSOR_INFO_BYTES))
        .map_err(|s| s.into_error(|| format!("{n_tensors} tensor infos")))?;
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let info = read_tensor_info(&mut cur, i, alignment)?;
        if tensor_index.contains_key(&info.name) {
            return Err(Error::BadTensor {
                name: info.name,
                reason: "duplicate tensor name".into(),
            });
        }
        tensor_index.insert(info.name.clone(), tensors.len());
        tensors.push(info);
    }

    // The data section starts at the next multiple of the alignment.
    let data_offset = (cur.pos as u64).next_multiple_of(alignment);
    let data_len = (buf.len() as u64).saturating_sub(data_offset);
    check_tensor_ranges(&tensors, data_len)?;

    Ok(Parsed {
        version,
        alignment,
        metadata,
        key_index,
        tensors,
        tensor_index,
        data_offset,
    })
}

/// Reads a length-prefixed string. `Ok(None)` when its bytes are not UTF-8.
fn read_string(cur: &mut Cursor<'_>, what: impl Fn() -> String) -> Result<Option<String>> {
    let len = cur.u64().map_err(|s| s.into_error(&what))?;
    let bytes = cur.take(len).map_err(|s| s.into_error(&what))?;
    Ok(std::str::from_utf8(bytes).ok().map(str::to_owned))
}

/// Reads one value of type `ty`. `budget` is how many more array elements the file may
/// declare in all (see [`MAX_METADATA_ELEMENTS`]).
fn read_value(
    cur: &mut Cursor<'_>,
    ty: GgufValueType,
    depth: usize,
    key: &str,
    budget: &mut u64,
) -> Result<GgufValue> {
    let what = || format!("value of key `{key}`");
    let short = |s: Short| s.into_error(what);
    Ok(match ty {
        GgufValueType::U8 => GgufValue::U8(cur.u8().map_err(short)?),
        GgufValueType::I8 => GgufValue::I8(cur.u8().map_err(short)? as i8),
        GgufValueType::U16 => GgufValue::U16(cur.u16().map_err(short)?),
        GgufValueType::I16 => GgufValue::I16(cur.u16().map_err(short)? as i16),
        GgufValueType::U32 => GgufValue::U32(cur.u32().map_err(short)?),
        GgufValueType::I32 => GgufValue::I32(cur.u32().map_err(short)? as i32),
        GgufValueType::F32 => GgufValue::F32(f32::from_bits(cur.u32().map_err(short)?)),
        GgufValueType::U64 => GgufValue::U64(cur.u64().map_err(short)?),
        GgufValueType::I64 => GgufValue::I64(cur.u64().map_err(short)? as i64),
        GgufValueType::F64 => GgufValue::F64(f64::from_bits(cur.u64().map_err(short)?)),
        GgufValueType::Bool => match cur.u8().map_err(short)? {
            0 => GgufValue::Bool(false),
            1 => GgufValue::Bool(true),
            b => {
                return Err(Error::BadKey {
                    key: key.to_owned(),
                    reason: format!("bool byte is {b}, expected 0 or 1"),
                });
            }
        },
        GgufValueType::String => {
            GgufValue::String(read_string(cur, what)?.ok_or_else(|| Error::BadKey {
                key: key.to_owned(),
                reason: "string is not valid UTF-8".into(),
            })?)
        }
        GgufValueType::Array => {
            let elem = cur.u32().map_err(short)?;
            let elem = GgufValueType::from_u32(elem).ok_or_else(|| Error::BadKey {
                key: key.to_owned(),
                reason: format!("unknown array element type {elem}"),
            })?;
            if elem == GgufValueType::Array && depth + 1 >= MAX_ARRAY_DEPTH {
                return Err(Error::BadKey {
                    key: key.to_owned(),
                    reason: format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
                });
            }
            let n = cur.u64().map_err(short)?;
            // Every element needs at least min_size bytes: check before allocating.
            cur.ensure(n.saturating_mul(elem.min_size() as u64))
                .map_err(|s| s.into_error(|| format!("{n} {elem} elements of key `{key}`")))?;
            // Each element becomes a GgufValue of up to 32 bytes however few bytes it took in
            // the file: the budget bounds that amplification.
            *budget = budget.checked_sub(n).ok_or_else(|| Error::BadKey {
                key: key.to_owned(),
                reason: format!(
                    "metadata arrays hold more than {MAX_METADATA_ELEMENTS} elements in all"
                ),
            })?;
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                items.push(read_value(cur, elem, depth + 1, key, budget)?);
            }
            GgufValue::Array(items)
        }
    })
}

fn read_tensor_info(cur: &mut Cursor<'_>, i: u64, alignment: u64) -> Result<TensorInfo> {
    let name = read_string(cur, || format!("name of tensor {i}"))?
        .ok_or_else(|| Error::Gguf(format!("name of tensor {i} is not UTF-8")))?;
    let bad = |reason: String| Error::BadTensor {
        name: name.clone(),
        reason,
    };
    let short = |s: Short| s.into_error(|| format!("info of tensor `{name}`"));
    let n_dims = cur.u32().map_err(short)?;
    if n_dims as usize > GGML_MAX_DIMS {
        return Err(bad(format!(
            "{n_dims} dimensions, at most {GGML_MAX_DIMS} allowed"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(cur.u64().map_err(short)?);
    }
    let ty = cur.u32().map_err(short)?;
    let offset = cur.u64().map_err(short)?;

    // The row count too: with a zero ne0 the element count is 0 whatever the other dims are,
    // and `TensorInfo::n_rows` must not overflow either.
    let product = |d: &[u64]| {
        d.iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
    };
    let (Some(n_elements), Some(_)) = (product(&dims), product(dims.get(1..).unwrap_or(&[])))
    else {
        return Err(bad(format!(
            "dimensions {dims:?} overflow the element count"
        )));
    };
    let ggml_type = GgmlType::from_u32(ty).ok_or_else(|| Error::UnsupportedType {
        name: name.clone(),
        ggml_type: ty,
    })?;
    let ne0 = dims.first().copied().unwrap_or(1);
    let row_bytes = ggml_type.row_bytes(ne0).ok_or_else(|| {
        bad(format!(
            "ne0 = {ne0} is not a multiple of the {ggml_type} block size {}",
            ggml_type.block_size()
        ))
    })?;
    let n_rows = n_elements.checked_div(ne0).unwrap_or(0);
    let n_bytes = row_bytes
        .checked_mul(n_rows)
        .ok_or_else(|| bad(format!("size of dimensions {dims:?} overflows")))?;
    if offset % alignment != 0 {
        return Err(bad(format!(
            "data offset {offset} is not a multiple of the alignment {alignment}"
        )));
    }
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_bytes,
    })
}

/// Every tensor's data lies inside the data section and no two overlap.
fn check_tensor_ranges(tensors: &[TensorInfo], data_len: u64) -> Result<()> {
    for t in tensors {
        let end = t.offset.checked_add(t.n_bytes);
        if end.is_none_or(|e| e > data_len) {
            return Err(Error::BadTensor {
                name: t.name.clone(),
                reason: format!(
                    "data [{}, +{}) lies outside the data section of {data_len} bytes",
                    t.offset, t.n_bytes
                ),
            });
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    order.sort_by_key(|t| t.offset);
    for w in order.windows(2) {
        // Ends cannot overflow: checked above.
        if w[0].offset + w[0].n_bytes > w[1].offset {
            return Err(Error::BadTensor {
                name: w[1].name.clone(),
                reason: format!("data overlaps tensor `{}`", w[0].name),
            });
        }
    }
    Ok(())
}
