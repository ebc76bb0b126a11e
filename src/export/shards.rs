//! Safetensors shards: tensors split in order into files of at most `max_shard_bytes`, each
//! written by the `safetensors` crate from views that make their bytes only when it writes them,
//! so one tensor at a time is in memory. More than one file gets `model.safetensors.index.json`.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, View};
use serde_json::json;

use super::ExportProgress;
use super::tensors::PlannedTensor;
use crate::error::{Error, Result};
use crate::gguf::Gguf;

/// The file name of a checkpoint in one file.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The index that maps each tensor to its shard.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Splits the tensors, in order, into shards of at most `max_bytes` (a tensor larger than that
/// gets a shard of its own). Returns index ranges into `tensors`.
fn shard_ranges(tensors: &[PlannedTensor], max_bytes: u64) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, t) in tensors.iter().enumerate() {
        let n = t.n_bytes() as u64;
        if i > start && bytes + n > max_bytes {
            ranges.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < tensors.len() {
        ranges.push(start..tensors.len());
    }
    ranges
}

/// HF's shard names: `model-00001-of-00004.safetensors`.
fn shard_name(i: usize, n: usize) -> String {
    match n {
        1 => SINGLE_FILE.to_string(),
        _ => format!("model-{:05}-of-{n:05}.safetensors", i + 1),
    }
}

/// A tensor whose bytes are made when the `safetensors` writer asks for them.
struct LazyTensor<'a> {
    planned: &'a PlannedTensor,
    gguf: &'a Gguf,
    writer: &'a ShardWriter<'a>,
}

impl View for LazyTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.planned.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.planned.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.writer.produce(self.planned, self.gguf))
    }
    fn data_len(&self) -> usize {
        self.planned.n_bytes()
    }
}

/// Progress and the first error while the `safetensors` crate pulls tensor bytes (its
/// [`View::data`] cannot fail, so an error is kept here and the file discarded).
struct ShardWriter<'a> {
    done: Cell<u64>,
    total: u64,
    error: Cell<Option<Error>>,
    progress: &'a dyn Fn(&ExportProgress),
}

impl ShardWriter<'_> {
    fn produce(&self, t: &PlannedTensor, gguf: &Gguf) -> Vec<u8> {
        let bytes = match t.produce(gguf) {
            Ok(b) if b.len() == t.n_bytes() => b,
            Ok(b) => {
                self.fail(Error::BadTensor {
                    name: t.gguf.clone(),
                    reason: format!(
                        "made {} bytes for `{}`, {} planned",
                        b.len(),
                        t.name,
                        t.n_bytes()
                    ),
                });
                vec![0; t.n_bytes()]
            }
            Err(e) => {
                self.fail(e);
                vec![0; t.n_bytes()]
            }
        };
        self.done.set(self.done.get() + bytes.len() as u64);
        (self.progress)(&ExportProgress {
            tensor: &t.name,
            done_bytes: self.done.get(),
            total_bytes: self.total,
        });
        bytes
    }

    fn fail(&self, e: Error) {
        let first = self.error.take().unwrap_or(e);
        self.error.set(Some(first));
    }
}

/// Writes `tensors` into `dir` as one `model.safetensors` or several shards plus the index,
/// each with the permissions of the file `like` in `dir`. Returns the files written.
pub fn write_shards(
    gguf: &Gguf,
    tensors: &[PlannedTensor],
    dir: &Path,
    max_shard_bytes: u64,
    like: &str,
    progress: &dyn Fn(&ExportProgress),
) -> Result<Vec<PathBuf>> {
    let total: u64 = tensors.iter().map(|t| t.n_bytes() as u64).sum();
    let writer = ShardWriter {
        done: Cell::new(0),
        total,
        error: Cell::new(None),
        progress,
    };
    let ranges = shard_ranges(tensors, max_shard_bytes);
    let mut files = Vec::new();
    let mut weight_map = serde_json::Map::new();
    // transformers refuses safetensors files whose metadata lacks the framework.
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    for (i, range) in ranges.iter().enumerate() {
        let name = shard_name(i, ranges.len());
        let path = dir.join(&name);
        let views = tensors[range.clone()].iter().map(|planned| {
            let view = LazyTensor {
                planned,
                gguf,
                writer: &writer,
            };
            (planned.name.as_str(), view)
        });
        safetensors::serialize_to_file(views, Some(metadata.clone()), &path).map_err(|e| {
            Error::Io {
                path: path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        if let Some(e) = writer.error.take() {
            // Never leave a file with zeros where a tensor failed.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        // The crate writes through a private (0600) temporary file: give the shard the
        // permissions the JSON files got from the umask, so servers running as another user
        // can read it.
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let permissions = std::fs::metadata(dir.join(like)).map_err(io)?.permissions();
        std::fs::set_permissions(&path, permissions).map_err(io)?;
        for t in &tensors[range.clone()] {
            weight_map.insert(t.name.clone(), json!(name));
        }
        files.push(path);
    }
    if ranges.len() > 1 {
        let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        files.push(super::write_json(dir, INDEX_FILE, &index)?);
    }
    Ok(files)
}
