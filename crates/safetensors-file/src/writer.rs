//! Writing safetensors files in memory ([`serialize`]), for tests and tools.

use crate::error::SafetensorsError;
use crate::{Dtype, METADATA_KEY};

/// One tensor to write: name, dtype, shape (outermost first) and its little-endian bytes.
pub type TensorToWrite<'a> = (&'a str, Dtype, &'a [u64], &'a [u8]);

/// A safetensors file holding `tensors` (data in the given order) and `metadata`.
///
/// The header is padded with spaces to a multiple of 8 bytes, so that the data of a file whose
/// tensors are laid out largest element first is aligned for its type, as the usual writer does.
/// Errors if a tensor's bytes do not match its shape and dtype.
pub fn serialize(tensors: &[TensorToWrite], metadata: &[(&str, &str)]) -> Result<Vec<u8>, SafetensorsError> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let map = metadata.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
        header.insert(METADATA_KEY.to_owned(), serde_json::Value::Object(map));
    }
    let mut offset = 0u64;
    for &(name, dtype, shape, bytes) in tensors {
        let expected = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).and_then(|n| n.checked_mul(dtype.bits())).map(|bits| bits.div_ceil(8));
        if expected != Some(bytes.len() as u64) {
            return Err(SafetensorsError::WriteSize {
                tensor: name.to_owned(),
                dtype,
                shape: shape.to_vec(),
                expected: expected.unwrap_or(u64::MAX),
                got: bytes.len() as u64,
            });
        }
        let end = offset + bytes.len() as u64;
        header.insert(name.to_owned(), serde_json::json!({ "dtype": dtype.name(), "shape": shape, "data_offsets": [offset, end] }));
        offset = end;
    }
    let mut text = serde_json::Value::Object(header).to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset as usize);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    for &(_, _, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    Ok(out)
}
