//! Building GGUF files in memory ([`GgufWriter`]), for tests and tools.

use std::collections::HashSet;
use std::path::Path;

use crate::error::GgufError;
use crate::reader::align_up;
use crate::types::{tensor_size, GgmlType, Value};
use crate::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ALIGNMENT, MAX_ARRAY_DEPTH};

/// A tensor waiting to be written.
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then writes a GGUF file that [`crate::GgufFile`] accepts.
///
/// Additions are not checked one by one; [`GgufWriter::to_bytes`] validates everything the
/// reader would (duplicates, dims, data lengths, alignment, array element types) so a
/// writer never produces a file its own reader rejects.
///
/// Layout, as llama.cpp and gguf-py write it: header, metadata, tensor infos, zero padding
/// to the alignment, then each tensor's data at an aligned offset, each followed by zero
/// padding to the alignment.
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl GgufWriter {
    /// An empty version-3 file with the default alignment of 32 bytes. Adding a
    /// `general.alignment` entry changes the alignment used.
    pub fn new() -> Self {
        GgufWriter { version: 3, metadata: Vec::new(), tensors: Vec::new() }
    }

    /// Writes format `version` instead of 3; only 2 and 3 are accepted by `to_bytes`
    /// (the two are byte-identical for little-endian files apart from this number).
    pub fn set_version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Appends a metadata entry.
    pub fn add_kv(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_owned(), value));
        self
    }

    /// Appends a tensor with `dims` innermost first and its raw `data` in `ggml_type` layout.
    pub fn add_tensor(&mut self, name: &str, dims: &[u64], ggml_type: GgmlType, data: Vec<u8>) -> &mut Self {
        self.tensors.push(PendingTensor { name: name.to_owned(), dims: dims.to_vec(), ggml_type, data });
        self
    }

    /// The alignment the file will use: `general.alignment` if present, else 32.
    fn alignment(&self) -> Result<u64, GgufError> {
        let Some((_, value)) = self.metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) else {
            return Ok(DEFAULT_ALIGNMENT);
        };
        let alignment = value.as_u64().ok_or_else(|| GgufError::WrongType {
            key: ALIGNMENT_KEY.to_owned(),
            expected: "a non-negative integer",
            got: value.describe(),
        })?;
        if !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT {
            return Err(GgufError::BadAlignment { alignment });
        }
        Ok(alignment)
    }

    /// The complete file, after validating it.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        if self.version != 2 && self.version != 3 {
            return Err(GgufError::UnsupportedVersion { version: self.version });
        }
        let alignment = self.alignment()?;
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());

        let mut keys = HashSet::new();
        for (key, value) in &self.metadata {
            if !keys.insert(key.as_str()) {
                return Err(GgufError::DuplicateKey { key: key.clone() });
            }
            write_string(&mut out, key);
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            write_value(&mut out, key, value, 0)?;
        }

        let mut names = HashSet::new();
        let mut offset = 0u64;
        for t in &self.tensors {
            if !names.insert(t.name.as_str()) {
                return Err(GgufError::DuplicateTensor { name: t.name.clone() });
            }
            let (_, n_bytes) = tensor_size(&t.name, &t.dims, t.ggml_type)?;
            if t.data.len() as u64 != n_bytes {
                return Err(GgufError::TensorDataSize { tensor: t.name.clone(), expected: n_bytes, got: t.data.len() as u64 });
            }
            write_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = offset
                .checked_add(n_bytes)
                .and_then(|end| align_up(end, alignment))
                .ok_or_else(|| GgufError::ElementCountOverflow { tensor: t.name.clone(), dims: t.dims.clone() })?;
        }

        pad_to(&mut out, alignment);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            pad_to(&mut out, alignment);
        }
        Ok(out)
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()?).map_err(|cause| GgufError::Io { path: path.to_owned(), cause })
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends zeros until `out.len()` is a multiple of `alignment` (a power of two no larger
/// than the file will ever be, or the tensors could not have been laid out).
fn pad_to(out: &mut Vec<u8>, alignment: u64) {
    let len = out.len() as u64;
    let target = align_up(len, alignment).unwrap_or(len);
    out.resize(usize::try_from(target).unwrap_or(out.len()), 0);
}

/// The encoding of `value` without its type tag; `depth` counts enclosing arrays.
fn write_value(out: &mut Vec<u8>, key: &str, value: &Value, depth: usize) -> Result<(), GgufError> {
    match value {
        Value::U8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => write_string(out, s),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Array(element_type, items) => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::NestingTooDeep { key: key.to_owned(), max_depth: MAX_ARRAY_DEPTH, offset: out.len() as u64 });
            }
            out.extend_from_slice(&element_type.id().to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                if item.value_type() != *element_type {
                    return Err(GgufError::ArrayTypeMismatch { key: key.to_owned(), expected: *element_type, got: item.value_type() });
                }
                write_value(out, key, item, depth + 1)?;
            }
        }
    }
    Ok(())
}
