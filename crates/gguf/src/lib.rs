//! Reading and writing GGUF model files (format versions 2 and 3, little-endian).
//!
//! A GGUF file is a header (magic `GGUF`, version, tensor count, metadata count), typed
//! metadata key/value pairs, tensor infos (name, dims innermost first, ggml type, offset),
//! then an aligned data section holding the raw tensor bytes.
//!
//! [`GgufFile`] memory-maps (or takes ownership of) a file, parses and validates all of it
//! up front, and then hands out metadata values and tensor bytes without further checks.
//! The parser treats the file as hostile: truncation, forged counts and lengths, unknown
//! type ids, overflowing sizes and out-of-range offsets are all reported as a
//! [`GgufError`] naming the byte offset, key or tensor, never as a panic or a huge
//! allocation. [`GgufWriter`] builds files in memory, mainly for tests and tools.
//!
//! This crate knows nothing of what tensors mean: it does not dequantize (see `kernels`)
//! or interpret architecture metadata (see `model`).
//!
//! ```
//! use gguf::{GgmlType, GgufFile, GgufWriter, Value};
//!
//! let mut writer = GgufWriter::new();
//! writer
//!     .add_kv("general.architecture", Value::from("llama"))
//!     .add_tensor("w", &[4, 2], GgmlType::F32, vec![0u8; 32]);
//! let file = GgufFile::from_bytes(writer.to_bytes()?)?;
//! assert_eq!(file.architecture()?, "llama");
//! let w = file.tensor("w").expect("tensor w");
//! assert_eq!(file.tensor_data(w).len(), 32);
//! # Ok::<(), gguf::GgufError>(())
//! ```

mod error;
mod reader;
mod types;
mod writer;

pub use error::GgufError;
pub use reader::{GgufFile, TensorInfo};
pub use types::{GgmlType, Value, ValueType, MAX_DIMS, QK, QK_K};
pub use writer::GgufWriter;

/// The four bytes every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest `general.alignment` accepted. Real files use 32; the cap keeps a forged value
/// from making the writer pad with gigabytes of zeros.
pub const MAX_ALIGNMENT: u64 = 1 << 30;
/// Deepest nesting of arrays inside one value (an array of arrays has depth 2). Bounds the
/// parser's recursion.
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Metadata key holding the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Metadata key naming the model architecture, e.g. "llama".
pub const ARCHITECTURE_KEY: &str = "general.architecture";
