//! The one error type of this crate.

use std::path::PathBuf;

use crate::Dtype;

/// Everything that can go wrong reading or writing a safetensors file. Each message is one line
/// saying what is wrong, where (the file, the tensor, the field) and, where it helps, what to do.
///
/// Messages already include the text of any inner error, so no `source()` chain is kept
/// (printing a chain would repeat it).
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    /// The file could not be opened or mapped.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },
    /// An error about the file at `path` (what [`crate::SafeTensors::open`] and the accessors of an
    /// opened file return).
    #[error("{}: {cause}", path.display())]
    InFile { path: PathBuf, cause: Box<SafetensorsError> },
    /// Fewer than the 8 bytes of the header length.
    #[error("the file is {len} bytes long, too short for the 8-byte header length: not a safetensors file")]
    TooShort { len: u64 },
    /// A header length over the format's cap.
    #[error("header length {len} is over the format's limit of {max} bytes: not a safetensors file, or a damaged one")]
    HeaderTooLarge { len: u64, max: u64 },
    /// A header length that runs past the end of the file.
    #[error("header length {len} runs past the end of the file ({available} bytes follow the length): the file is truncated or not safetensors")]
    HeaderPastEnd { len: u64, available: u64 },
    /// The header is not UTF-8.
    #[error("the header is not valid UTF-8 (at byte {offset} of the header): not a safetensors file, or a damaged one")]
    HeaderNotUtf8 { offset: usize },
    /// The header does not start with `{`.
    #[error("the header starts with {found:?}, expected '{{': not a safetensors file, or a damaged one")]
    HeaderStart { found: String },
    /// The header is not a JSON object.
    #[error("the header is not a JSON object of tensors: {message}")]
    HeaderJson { message: String },
    /// Two header entries with the same name.
    #[error("the header names '{name}' twice: each tensor must appear once")]
    DuplicateName { name: String },
    /// A tensor entry with a field missing or of the wrong form.
    #[error("tensor '{tensor}': {field} {problem}")]
    Field { tensor: String, field: &'static str, problem: String },
    /// A dtype the format does not have.
    #[error("tensor '{tensor}' has unknown dtype {dtype:?} (the format's dtypes: {})", Dtype::all_names().collect::<Vec<_>>().join(", "))]
    UnknownDtype { tensor: String, dtype: String },
    /// A shape whose element or byte count does not fit in 64 bits.
    #[error("tensor '{tensor}' with shape {shape:?} has too many elements (the byte count overflows)")]
    SizeOverflow { tensor: String, shape: Vec<u64> },
    /// Packed small floats (4 or 6 bits) that do not fill whole bytes.
    #[error("tensor '{tensor}' holds {elements} elements of {dtype} ({} bits each), which is not a whole number of bytes", dtype.bits())]
    PartialBytes { tensor: String, dtype: Dtype, elements: u64 },
    /// `data_offsets` with begin after end.
    #[error("tensor '{tensor}' has data_offsets [{begin}, {end}]: the begin is after the end")]
    ReversedOffsets { tensor: String, begin: u64, end: u64 },
    /// A byte range whose length does not match the shape and dtype.
    #[error("tensor '{tensor}' ({dtype}, shape {shape:?}) needs {expected} bytes, but its data_offsets [{begin}, {end}] span {}", end - begin)]
    SizeMismatch { tensor: String, dtype: Dtype, shape: Vec<u64>, expected: u64, begin: u64, end: u64 },
    /// The tensors, ordered by offset, leave a gap or overlap.
    #[error(
        "tensor '{tensor}' begins at data byte {begin}, but {} ends at {expected}: tensors must cover the data in order with no gap or overlap",
        previous.as_deref().map_or("the data section begins at 0, so the first tensor".to_owned(), |p| format!("the tensor before it, '{p}',"))
    )]
    NotContiguous { tensor: String, begin: u64, expected: u64, previous: Option<String> },
    /// The tensors do not end where the file does.
    #[error("the tensors cover {covered} bytes of data, but {data_len} bytes follow the header: {}", if covered < data_len { "extra bytes at the end" } else { "the file is truncated" })]
    DataLength { covered: u64, data_len: u64 },
    /// `__metadata__` is not an object of strings.
    #[error("__metadata__ {problem}: it must be an object of string values")]
    Metadata { problem: String },
    /// No tensor of that name.
    #[error("no tensor named '{tensor}' (the file has {count} tensors{})", nearest.as_deref().map_or(String::new(), |n| format!("; did you mean '{n}'?")))]
    NotFound { tensor: String, count: usize, nearest: Option<String> },
    /// A tensor of a dtype that cannot be read as f32.
    #[error("tensor '{tensor}' has dtype {dtype}, which cannot be read as f32 (only F32, F16 and BF16 can)")]
    NotF32 { tensor: String, dtype: Dtype },
    /// Writer: a tensor whose bytes do not match its shape and dtype.
    #[error("tensor '{tensor}' ({dtype}, shape {shape:?}) needs {expected} bytes, got {got}")]
    WriteSize { tensor: String, dtype: Dtype, shape: Vec<u64>, expected: u64, got: u64 },
}

impl SafetensorsError {
    /// The error without the path wrapper ([`SafetensorsError::InFile`]): handy to match on the
    /// variant.
    pub fn innermost(&self) -> &SafetensorsError {
        let mut error = self;
        while let SafetensorsError::InFile { cause, .. } = error {
            error = cause;
        }
        error
    }
}
