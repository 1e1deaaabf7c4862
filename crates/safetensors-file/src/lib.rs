//! Reading safetensors files: the Hugging Face format of model weights.
//!
//! A file is an 8-byte little-endian header length N, N bytes of JSON, then the data:
//!
//! ```text
//! {"__metadata__": {"format": "pt"},
//!  "embeddings.word_embeddings.weight": {"dtype": "F32", "shape": [30522, 384], "data_offsets": [0, 46881792]},
//!  ...}
//! ```
//!
//! Each tensor's `data_offsets` are `[begin, end)` relative to the first byte after the header; its
//! data is little-endian, row-major and dense. The format caps the header at 100 MB and requires
//! the tensors, ordered by offset, to cover the data section exactly: no gap, no overlap, no
//! trailing bytes.
//!
//! [`SafeTensors`] memory-maps (or takes ownership of) a file and validates all of that up front,
//! treating the file as hostile: every malformed header, offset, shape or size is a
//! [`SafetensorsError`] naming the file and the tensor, never a panic or a huge allocation. Then
//! it hands out tensors' bytes, and converts F32, F16 and BF16 tensors to f32. [`serialize`] writes
//! files, for tests and tools.
//!
//! This crate knows nothing of what tensors mean: model code (the `embed` crate) checks names and
//! shapes.
//!
//! ```
//! use safetensors_file::{serialize, Dtype, SafeTensors};
//!
//! let weights: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
//! let bytes = serialize(&[("w", Dtype::F32, &[2, 3], &weights)], &[("format", "pt")])?;
//! let file = SafeTensors::from_bytes(bytes)?;
//! assert_eq!(file.shape("w")?, &[2, 3]);
//! assert_eq!(file.to_f32_vec("w")?, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
//! assert_eq!(file.metadata_value("format"), Some("pt"));
//! # Ok::<(), safetensors_file::SafetensorsError>(())
//! ```

mod dtype;
mod error;
mod reader;
mod writer;

pub use dtype::Dtype;
pub use error::SafetensorsError;
pub use reader::{SafeTensors, TensorInfo};
pub use writer::{serialize, TensorToWrite};

/// The largest header the format allows (100 MB); a larger length means a damaged or foreign file.
pub const MAX_HEADER_LEN: u64 = 100_000_000;
/// The header key of the string-to-string metadata map.
pub const METADATA_KEY: &str = "__metadata__";
