//! The GGUF writer: builds version-3 files (metadata, tensor infos, aligned tensor data).

use std::io::Write;

use super::{GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GgmlType, GgufValue, GgufValueType};
use crate::error::{Error, Result};

/// Writes a tensor's bytes when the file is written: exactly the bytes its type and dims need.
/// Called once per [`GgufWriter::write_to`]; it must write the same bytes each time.
pub type TensorSource = Box<dyn Fn(&mut dyn Write) -> std::io::Result<()> + Send + Sync>;

/// A tensor's bytes: held in memory, or produced while writing.
enum TensorData {
    Bytes(Vec<u8>),
    Streamed(TensorSource),
}

/// One tensor waiting to be written.
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: TensorData,
}

/// Counts the bytes passed through to the inner writer.
struct Counting<'a, W: Write + ?Sized> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write + ?Sized> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Builds a GGUF v3 file. Metadata keys keep insertion order (setting an existing key replaces
/// its value in place); tensors are laid out in insertion order, each at an offset aligned to
/// `general.alignment` (default 32). Everything is validated in [`GgufWriter::write_to`].
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor>,
}

impl GgufWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a metadata key (replacing an earlier value of the same key).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<GgufValue>) -> &mut Self {
        let key = key.into();
        let value = value.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }

    /// Sets `general.alignment` (a power of two) as a `u32`.
    pub fn set_alignment(&mut self, alignment: u32) -> &mut Self {
        self.set("general.alignment", GgufValue::U32(alignment))
    }

    /// Adds a tensor: `dims` ne0 first, `data` exactly the bytes its type and dims need.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        ggml_type: GgmlType,
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push(PendingTensor {
            name: name.into(),
            dims,
            ggml_type,
            data: TensorData::Bytes(data),
        });
        self
    }

    /// Adds a tensor whose bytes `source` writes when the file is written, so large tensors
    /// never sit in memory (e.g. generated ones). `source` must write exactly the bytes the
    /// type and dims need; [`GgufWriter::write_to`] fails with [`Error::BadTensor`] otherwise.
    pub fn add_tensor_streamed(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        ggml_type: GgmlType,
        source: impl Fn(&mut dyn Write) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> &mut Self {
        self.tensors.push(PendingTensor {
            name: name.into(),
            dims,
            ggml_type,
            data: TensorData::Streamed(Box::new(source)),
        });
        self
    }

    /// The alignment the file will use.
    fn alignment(&self) -> Result<u64> {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => Ok(GGUF_DEFAULT_ALIGNMENT),
            Some((_, v)) => match v.as_u32() {
                Some(a) if a.is_power_of_two() => Ok(u64::from(a)),
                _ => Err(Error::BadKey {
                    key: "general.alignment".into(),
                    reason: format!("must be a power of two that fits in u32, found {v:?}"),
                }),
            },
        }
    }

    /// Checks every tensor and returns each one's offset in the data section and its length.
    fn layout(&self, alignment: u64) -> Result<Vec<(u64, u64)>> {
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut next = 0u64;
        for (i, t) in self.tensors.iter().enumerate() {
            let bad = |reason: String| Error::BadTensor {
                name: t.name.clone(),
                reason,
            };
            if self.tensors[..i].iter().any(|o| o.name == t.name) {
                return Err(bad("duplicate tensor name".into()));
            }
            if t.dims.len() > super::GGML_MAX_DIMS {
                return Err(bad(format!(
                    "{} dimensions, at most 4 allowed",
                    t.dims.len()
                )));
            }
            let n: u64 = t
                .dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad("element count overflows".into()))?;
            let ne0 = t.dims.first().copied().unwrap_or(1);
            let rows = n.checked_div(ne0).unwrap_or(0);
            let want = t
                .ggml_type
                .row_bytes(ne0)
                .and_then(|r| r.checked_mul(rows))
                .ok_or_else(|| {
                    bad(format!(
                        "ne0 = {ne0} is not a multiple of the {} block size",
                        t.ggml_type
                    ))
                })?;
            if let TensorData::Bytes(data) = &t.data {
                if want != data.len() as u64 {
                    return Err(bad(format!(
                        "{} bytes of data, dims {:?} of {} need {want}",
                        data.len(),
                        t.dims,
                        t.ggml_type
                    )));
                }
            }
            offsets.push((next, want));
            next = (next + want).next_multiple_of(alignment);
        }
        Ok(offsets)
    }

    /// The header, metadata and tensor infos, without padding or data.
    fn header(&self, offsets: &[(u64, u64)]) -> Result<Vec<u8>> {
        let mut h = Vec::new();
        h.extend_from_slice(&GGUF_MAGIC);
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut h, key);
            h.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut h, value, key)?;
        }
        for (t, &(offset, _)) in self.tensors.iter().zip(offsets) {
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            h.extend_from_slice(&offset.to_le_bytes());
        }
        Ok(h)
    }

    /// Streams the file to `out`: the header, then each tensor's data (not copied) with
    /// zero padding to the alignment. Wrap files in a `BufWriter`.
    pub fn write_to(&self, out: &mut impl Write) -> Result<()> {
        let alignment = self.alignment()?;
        let layout = self.layout(alignment)?;
        self.write_header(out, &layout, alignment)?;
        let zeros = vec![0u8; alignment as usize];
        for (t, &(_, len)) in self.tensors.iter().zip(&layout) {
            match &t.data {
                TensorData::Bytes(data) => out.write_all(data).map_err(io_error)?,
                TensorData::Streamed(source) => {
                    let mut counting = Counting { inner: out, n: 0 };
                    source(&mut counting).map_err(io_error)?;
                    if counting.n != len {
                        return Err(Error::BadTensor {
                            name: t.name.clone(),
                            reason: format!(
                                "its source wrote {} bytes, dims {:?} of {} need {len}",
                                counting.n, t.dims, t.ggml_type
                            ),
                        });
                    }
                }
            }
            // Every tensor, the last included, is padded (as llama.cpp and gguf-py write).
            out.write_all(&zeros[..pad(len, alignment)])
                .map_err(io_error)?;
        }
        out.flush().map_err(io_error)
    }

    /// Writes only the header, metadata, tensor infos and the padding before the data section;
    /// returns the bytes written: the offset of the data section. Tensor sources are not run.
    pub fn write_header_to(&self, out: &mut impl Write) -> Result<u64> {
        let alignment = self.alignment()?;
        let layout = self.layout(alignment)?;
        self.write_header(out, &layout, alignment)
    }

    /// The size in bytes of the file [`GgufWriter::write_to`] writes (tensor sources not run).
    pub fn file_len(&self) -> Result<u64> {
        let alignment = self.alignment()?;
        let layout = self.layout(alignment)?;
        let header = self.header(&layout)?.len() as u64;
        let data: u64 = layout
            .iter()
            .map(|&(_, len)| len.next_multiple_of(alignment))
            .sum();
        Ok(header.next_multiple_of(alignment) + data)
    }

    fn write_header(
        &self,
        out: &mut impl Write,
        layout: &[(u64, u64)],
        alignment: u64,
    ) -> Result<u64> {
        let header = self.header(layout)?;
        let zeros = vec![0u8; alignment as usize];
        let padding = pad(header.len() as u64, alignment);
        out.write_all(&header).map_err(io_error)?;
        out.write_all(&zeros[..padding]).map_err(io_error)?;
        Ok((header.len() + padding) as u64)
    }

    /// The whole file in memory, or the first problem found (bad alignment, a tensor whose
    /// data does not match its dims, mixed-type arrays ...).
    pub fn try_to_bytes(&self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.write_to(&mut v)?;
        Ok(v)
    }

    /// The whole file in memory.
    ///
    /// # Panics
    /// When the contents are invalid; [`GgufWriter::try_to_bytes`] returns the error instead.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.try_to_bytes() {
            Ok(v) => v,
            Err(e) => panic!("GgufWriter::to_bytes: {e}"),
        }
    }
}

/// Zero bytes that pad `len` to a multiple of `alignment`.
fn pad(len: u64, alignment: u64) -> usize {
    (len.next_multiple_of(alignment) - len) as usize
}

fn io_error(source: std::io::Error) -> Error {
    Error::Io {
        path: "<GGUF writer output>".into(),
        source,
    }
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

/// Appends a value's payload (its type tag is written by the caller).
fn put_value(h: &mut Vec<u8>, v: &GgufValue, key: &str) -> Result<()> {
    match v {
        GgufValue::U8(x) => h.push(*x),
        GgufValue::I8(x) => h.push(*x as u8),
        GgufValue::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => h.push(u8::from(*x)),
        GgufValue::String(s) => put_str(h, s),
        GgufValue::U64(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Array(items) => {
            // An empty array has no element to take the type from: write it as u8.
            let elem = items
                .first()
                .map_or(GgufValueType::U8, GgufValue::value_type);
            if let Some(other) = items.iter().find(|e| e.value_type() != elem) {
                return Err(Error::BadKey {
                    key: key.to_owned(),
                    reason: format!("array mixes {elem} and {} elements", other.value_type()),
                });
            }
            h.extend_from_slice(&elem.id().to_le_bytes());
            h.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for e in items {
                put_value(h, e, key)?;
            }
        }
    }
    Ok(())
}
