//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong in a search or with an index file. Each message is one line
/// saying what is wrong and where (the file, the field, the row), and, where it helps, what to do.
///
/// Messages include the text of any inner error, so no `source()` chain is kept (printing a chain
/// would repeat it).
#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    /// Vectors whose lengths do not fit the dimension, or a dimension of zero.
    #[error("{0}")]
    Shape(String),
    /// The index file could not be opened or mapped.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },
    /// An error about the index file at `path`.
    #[error("{}: {cause}", path.display())]
    InFile { path: PathBuf, cause: Box<RetrieveError> },
    /// Fewer bytes than the header.
    #[error("the file is {len} bytes long, shorter than the {header}-byte header: truncated, or not a ferrolm vector index")]
    TooShort { len: u64, header: usize },
    /// Not this format's magic bytes.
    #[error("not a ferrolm vector index (the file starts with {found:?}, expected {expected:?})")]
    Magic { found: String, expected: String },
    /// A version this reader does not know.
    #[error("index format version {found}, but this ferrolm reads version {supported}: rebuild the index with `ferrolm index build`")]
    Version { found: u32, supported: u32 },
    /// A dimension of zero or past the limit.
    #[error("the header gives dimension {dim}, outside 1..={max}: a damaged file")]
    Dim { dim: u64, max: usize },
    /// A model name longer than the limit.
    #[error("the header gives a model name of {len} bytes, over the limit of {max}: a damaged file")]
    ModelNameLength { len: u64, max: usize },
    /// Header bytes the format reserves are not zero.
    #[error("reserved header bytes are not zero (byte {offset}): a damaged file, or one from a newer format")]
    Reserved { offset: usize },
    /// The sizes the header gives overflow 64 bits (or this machine's address space).
    #[error("{count} vectors of dimension {dim} with {id_bytes} bytes of ids do not fit in this machine's address space: a damaged file")]
    SizeOverflow { count: u64, dim: u64, id_bytes: u64 },
    /// The file is not as long as the header says.
    #[error("the header describes a file of {expected} bytes ({count} vectors of dimension {dim}, {id_bytes} bytes of ids), but it is {actual} bytes: {}", if actual < expected { "the file is truncated" } else { "extra bytes at the end" })]
    Length { expected: u64, actual: u64, count: u64, dim: u64, id_bytes: u64 },
    /// The model name is not UTF-8.
    #[error("the model name is not valid UTF-8: a damaged file")]
    ModelUtf8,
    /// The table of id offsets is out of order or out of range.
    #[error("id offset {index} is {offset}, {problem}: a damaged file")]
    IdOffset { index: u64, offset: u64, problem: String },
    /// An id is not UTF-8.
    #[error("id {index} is not valid UTF-8: a damaged file")]
    IdUtf8 { index: u64 },
    /// This machine stores numbers big-endian; the format is little-endian and mapped as it is.
    #[error("vector index files are read on little-endian machines only")]
    BigEndian,
    /// A vector handed to the writer that cannot be stored.
    #[error("vector {row}: {problem}")]
    Vector { row: u64, problem: String },
    /// A model name handed to the writer that cannot be stored.
    #[error("model name of {len} bytes is over the limit of {max}")]
    ModelNameTooLong { len: usize, max: usize },
    /// Writing the index failed.
    #[error("cannot write the index: {0}")]
    Write(std::io::Error),
}

impl RetrieveError {
    /// The error without the path wrapper ([`RetrieveError::InFile`]): handy to match on the
    /// variant.
    pub fn innermost(&self) -> &RetrieveError {
        let mut error = self;
        while let RetrieveError::InFile { cause, .. } = error {
            error = cause;
        }
        error
    }
}
