//! The one error type of this crate.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::types::{GgmlType, ValueType};

/// Everything that can go wrong reading or writing a GGUF file. Each message says what is
/// wrong and where: a byte offset, a key, a tensor name or a path.
///
/// Messages already include the text of any inner error, so no `source()` chain is kept
/// (printing a chain would repeat it).
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, mapped or written.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },
    /// A parse error in the file at `path` (what [`crate::GgufFile::open`] returns).
    #[error("{}: {cause}", path.display())]
    InFile { path: PathBuf, cause: Box<GgufError> },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: it starts with {}, expected the magic \"GGUF\"", show_bytes(found))]
    BadMagic { found: Vec<u8> },
    /// A version other than 2 or 3.
    #[error("unsupported GGUF version {version}{}: only versions 2 and 3 are supported", version_hint(*version))]
    UnsupportedVersion { version: u32 },
    /// The file ends inside a field.
    #[error("file truncated: {what} at byte {offset} needs {needed} bytes, only {available} left")]
    Truncated { what: String, offset: u64, needed: u64, available: u64 },
    /// A count (tensors, kv pairs, array elements) larger than the rest of the file could hold.
    #[error("{what} at byte {offset} is {count}, but each entry takes at least {min_each} bytes and only {available} bytes are left")]
    CountTooLarge { what: String, offset: u64, count: u64, min_each: u64, available: u64 },
    /// A string length that runs past the end of the file.
    #[error("{what} at byte {offset} claims {len} bytes, but only {available} bytes are left")]
    StringPastEnd { what: String, offset: u64, len: u64, available: u64 },
    /// A string that is not valid UTF-8.
    #[error("invalid UTF-8 in {what} at byte {offset}")]
    InvalidUtf8 { what: String, offset: u64 },
    /// A value type id outside 0..=12.
    #[error("unknown value type id {id} for key '{key}' at byte {offset}")]
    UnknownValueType { key: String, id: u32, offset: u64 },
    /// A bool stored as a byte other than 0 or 1.
    #[error("bool value of key '{key}' at byte {offset} is {byte}, expected 0 or 1")]
    InvalidBool { key: String, byte: u8, offset: u64 },
    /// Arrays nested deeper than [`crate::MAX_ARRAY_DEPTH`].
    #[error("arrays of key '{key}' are nested deeper than {max_depth} levels (at byte {offset})")]
    NestingTooDeep { key: String, max_depth: usize, offset: u64 },
    /// Two metadata entries with the same key.
    #[error("duplicate metadata key '{key}'")]
    DuplicateKey { key: String },
    /// `general.alignment` is not a power of two in 1..=[`crate::MAX_ALIGNMENT`].
    #[error("alignment {alignment} (general.alignment) is not a power of two from 1 to {}", crate::MAX_ALIGNMENT)]
    BadAlignment { alignment: u64 },
    /// A tensor whose ggml type id this crate does not know.
    #[error("tensor '{tensor}' has unknown or unsupported ggml type id {id}")]
    UnknownGgmlType { tensor: String, id: u32 },
    /// A tensor with 0 or more than 4 dimensions.
    #[error("tensor '{tensor}' has {n_dims} dimensions, expected 1 to 4")]
    BadDimCount { tensor: String, n_dims: u64 },
    /// A tensor whose element count or byte size does not fit in 63 bits.
    #[error("tensor '{tensor}' with dims {dims:?} has too many elements (the count overflows)")]
    ElementCountOverflow { tensor: String, dims: Vec<u64> },
    /// A quantized tensor whose rows are not whole blocks.
    #[error(
        "tensor '{tensor}' of type {ggml_type} has an innermost dimension of {inner_dim}, which is not a multiple of the block size {block_size}"
    )]
    NotBlockMultiple { tensor: String, ggml_type: GgmlType, inner_dim: u64, block_size: usize },
    /// A tensor data offset that is not a multiple of the file's alignment.
    #[error("tensor '{tensor}' has data offset {offset}, which is not a multiple of the alignment {alignment}")]
    MisalignedOffset { tensor: String, offset: u64, alignment: u64 },
    /// Tensor data that runs past the end of the file (`end` saturates at `u64::MAX`).
    #[error("data of tensor '{tensor}' spans bytes {start}..{end}, past the end of the {file_len}-byte file")]
    TensorDataPastEnd { tensor: String, start: u64, end: u64, file_len: u64 },
    /// Two tensors with the same name.
    #[error("duplicate tensor name '{name}'")]
    DuplicateTensor { name: String },
    /// A typed getter found no entry with this key.
    #[error("missing metadata key '{key}'")]
    MissingKey { key: String },
    /// A typed getter found a value of another type (or one that does not fit).
    #[error("metadata key '{key}': expected {expected}, got {got}")]
    WrongType { key: String, expected: &'static str, got: String },
    /// Writer: tensor data whose length does not match its dims and type.
    #[error("tensor '{tensor}' needs {expected} bytes of data for its dims and type, got {got}")]
    TensorDataSize { tensor: String, expected: u64, got: u64 },
    /// Writer: an array element whose type differs from the array's element type.
    #[error("array of key '{key}' is declared as {expected} but holds a {got}")]
    ArrayTypeMismatch { key: String, expected: ValueType, got: ValueType },
}

impl GgufError {
    /// The error without the path wrappers ([`GgufError::InFile`]) that `open` adds: handy
    /// to match on the variant of a parse error.
    pub fn innermost(&self) -> &GgufError {
        let mut error = self;
        while let GgufError::InFile { cause, .. } = error {
            error = cause;
        }
        error
    }
}

/// `47 47 55 46 ("GGUF")`-style rendering of a file's first bytes.
fn show_bytes(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "nothing (the file is empty)".to_owned();
    }
    let mut out = String::new();
    for (i, b) in bytes.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(out, "{sep}{b:02x}");
    }
    let text: String = bytes.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }).collect();
    let _ = write!(out, " (\"{text}\")");
    out
}

/// A hint for the two likely causes of an odd version number.
fn version_hint(version: u32) -> &'static str {
    match version {
        1 => " (the obsolete first GGUF format with 32-bit lengths)",
        // A big-endian file read as little-endian shows its version byte-swapped.
        0x0200_0000 | 0x0300_0000 => " (a big-endian file?)",
        _ => "",
    }
}
