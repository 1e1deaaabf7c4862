//! Parsing and validating a safetensors file ([`SafeTensors`]).
//!
//! Everything the header claims is checked against the bytes present before it is used: the
//! header length against the cap and the file, each entry's fields, each byte count (with
//! overflow checks) against its shape and dtype, and the offsets against one another: ordered by
//! offset, the tensors must tile the data section exactly, from its first byte to the file's
//! last, as the format requires. After [`SafeTensors::open`] every tensor's bytes are a plain
//! slice of the file.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::Value;

use crate::error::SafetensorsError;
use crate::{Dtype, MAX_HEADER_LEN, METADATA_KEY};

/// One tensor as the header lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `encoder.layer.0.attention.self.query.weight`.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first (row-major): a linear layer's weight is `[out, in]`.
    pub shape: Vec<u64>,
    /// Byte range of the data within the file (not relative to the data section).
    pub bytes: Range<usize>,
}

impl TensorInfo {
    /// The number of elements (the product of the shape; 1 for a scalar).
    pub fn elements(&self) -> u64 {
        // Checked at open: the product fits.
        self.shape.iter().product()
    }
}

/// The bytes behind a [`SafeTensors`]: a read-only memory map or an owned buffer.
enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned(bytes) => bytes,
        }
    }
}

/// A parsed and validated safetensors file, holding its bytes.
pub struct SafeTensors {
    path: Option<PathBuf>,
    /// Tensors in the order of their data.
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    /// `__metadata__`, sorted by key.
    metadata: Vec<(String, String)>,
    storage: Storage,
}

impl fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafeTensors")
            .field("path", &self.path)
            .field("n_tensors", &self.tensors.len())
            .field("metadata", &self.metadata)
            .field("file_len", &self.storage.bytes().len())
            .finish()
    }
}

impl SafeTensors {
    /// Memory-maps and parses the file at `path`. Errors, now and from the accessors later, name
    /// the path.
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensors, SafetensorsError> {
        let path = path.as_ref();
        let io_error = |cause| SafetensorsError::Io { path: path.to_owned(), cause };
        let file = File::open(path).map_err(io_error)?;
        let len = file.metadata().map_err(io_error)?.len();
        let storage = if len == 0 {
            // Mapping zero bytes fails on some platforms; an empty buffer gives the same error.
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and private to this struct. If another process
            // truncates or rewrites the file while it is mapped, reads may fault or see new
            // bytes; like every mmap-based model loader, we accept that model files are not
            // modified while in use.
            Storage::Mapped(unsafe { Mmap::map(&file) }.map_err(io_error)?)
        };
        SafeTensors::from_storage(storage, Some(path.to_owned()))
    }

    /// Parses a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<SafeTensors, SafetensorsError> {
        SafeTensors::from_storage(Storage::Owned(bytes), None)
    }

    fn from_storage(storage: Storage, path: Option<PathBuf>) -> Result<SafeTensors, SafetensorsError> {
        let header = match parse(storage.bytes()) {
            Ok(header) => header,
            Err(cause) => return Err(in_file(&path, cause)),
        };
        let index = header.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(SafeTensors { path, tensors: header.tensors, index, metadata: header.metadata, storage })
    }

    /// Every tensor, in the order of their data in the file.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The names of every tensor, in the order of their data in the file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|t| t.name.as_str())
    }

    /// The `__metadata__` entries, sorted by key (empty when the file has none).
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The value of `__metadata__` key `key`.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| self.metadata[i].1.as_str())
    }

    /// The tensor named `name`; the error names the file and, if one is close, a similar name.
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo, SafetensorsError> {
        match self.index.get(name) {
            Some(&i) => Ok(&self.tensors[i]),
            None => {
                let nearest = self.names().filter(|n| n.ends_with(name) || name.ends_with(n)).min_by_key(|n| n.len()).map(str::to_owned);
                Err(self.error(SafetensorsError::NotFound { tensor: name.to_owned(), count: self.tensors.len(), nearest }))
            }
        }
    }

    /// The dtype of tensor `name`.
    pub fn dtype(&self, name: &str) -> Result<Dtype, SafetensorsError> {
        Ok(self.tensor(name)?.dtype)
    }

    /// The shape of tensor `name`, outermost first.
    pub fn shape(&self, name: &str) -> Result<&[u64], SafetensorsError> {
        Ok(&self.tensor(name)?.shape)
    }

    /// The raw little-endian bytes of tensor `name`.
    pub fn bytes(&self, name: &str) -> Result<&[u8], SafetensorsError> {
        let info = self.tensor(name)?;
        // Proven in bounds at open.
        Ok(&self.storage.bytes()[info.bytes.clone()])
    }

    /// Tensor `name` converted to f32, row-major: F32 as is, F16 and BF16 widened exactly. Other
    /// dtypes are an error naming the tensor and its dtype.
    pub fn to_f32_vec(&self, name: &str) -> Result<Vec<f32>, SafetensorsError> {
        let info = self.tensor(name)?;
        let bytes = &self.storage.bytes()[info.bytes.clone()];
        Ok(match info.dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            // bf16 is the top half of an f32: the widening is exact.
            Dtype::BF16 => bytes.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect(),
            dtype => return Err(self.error(SafetensorsError::NotF32 { tensor: name.to_owned(), dtype })),
        })
    }

    /// The path the file was opened from, if it was.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn error(&self, cause: SafetensorsError) -> SafetensorsError {
        in_file(&self.path, cause)
    }
}

fn in_file(path: &Option<PathBuf>, cause: SafetensorsError) -> SafetensorsError {
    match path {
        Some(path) => SafetensorsError::InFile { path: path.clone(), cause: Box::new(cause) },
        None => cause,
    }
}

/// What the header says, validated.
struct Header {
    tensors: Vec<TensorInfo>,
    metadata: Vec<(String, String)>,
}

fn parse(bytes: &[u8]) -> Result<Header, SafetensorsError> {
    let file_len = bytes.len() as u64;
    let Some(len_bytes) = bytes.first_chunk::<8>() else {
        return Err(SafetensorsError::TooShort { len: file_len });
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    if header_len > MAX_HEADER_LEN {
        return Err(SafetensorsError::HeaderTooLarge { len: header_len, max: MAX_HEADER_LEN });
    }
    let available = file_len - 8;
    if header_len > available {
        return Err(SafetensorsError::HeaderPastEnd { len: header_len, available });
    }
    // Both fit in usize: they are at most the length of a slice.
    let data_start = 8 + header_len as usize;
    let text = std::str::from_utf8(&bytes[8..data_start]).map_err(|e| SafetensorsError::HeaderNotUtf8 { offset: e.valid_up_to() })?;
    if !text.starts_with('{') {
        let found: String = text.chars().take(8).collect();
        return Err(SafetensorsError::HeaderStart { found });
    }
    let entries = read_entries(text)?;

    let mut tensors = Vec::with_capacity(entries.len());
    let mut metadata = None;
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    for (name, value) in entries {
        if !seen.insert(name.clone()) {
            return Err(SafetensorsError::DuplicateName { name });
        }
        if name == METADATA_KEY {
            metadata = Some(read_metadata(value)?);
        } else {
            tensors.push(read_entry(name, value)?);
        }
    }

    // Ordered by offset, the tensors must tile the data section: [0, e0), [e0, e1), ... up to the
    // end of the file. Empty tensors sort before a non-empty one at the same offset.
    let data_len = file_len - data_start as u64;
    tensors.sort_by_key(|t: &Entry| (t.begin, t.end));
    let mut covered = 0u64;
    let mut previous: Option<&str> = None;
    for t in &tensors {
        if t.begin != covered {
            return Err(SafetensorsError::NotContiguous {
                tensor: t.info.name.clone(),
                begin: t.begin,
                expected: covered,
                previous: previous.map(str::to_owned),
            });
        }
        covered = t.end;
        previous = Some(&t.info.name);
    }
    if covered != data_len {
        return Err(SafetensorsError::DataLength { covered, data_len });
    }
    let tensors = tensors
        .into_iter()
        .map(|mut t| {
            // In bounds: every end is at most data_len, so start + end fits the file length.
            t.info.bytes = data_start + t.begin as usize..data_start + t.end as usize;
            t.info
        })
        .collect();
    Ok(Header { tensors, metadata: metadata.unwrap_or_default() })
}

/// The header's top-level entries in file order, duplicates kept (a JSON map would silently
/// keep only the last of two entries with one name).
fn read_entries(text: &str) -> Result<Vec<(String, Value)>, SafetensorsError> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(String, Value)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            while let Some(entry) = map.next_entry::<String, Value>()? {
                entries.push(entry);
            }
            Ok(entries)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let json_error = |e: serde_json::Error| SafetensorsError::HeaderJson { message: e.to_string() };
    let entries = (&mut de).deserialize_map(Entries).map_err(json_error)?;
    // Trailing spaces are allowed (writers pad the header to a multiple of 8); anything else is not.
    de.end().map_err(json_error)?;
    Ok(entries)
}

/// `__metadata__`: an object of strings, returned sorted by key.
fn read_metadata(value: Value) -> Result<Vec<(String, String)>, SafetensorsError> {
    let Value::Object(map) = value else {
        return Err(SafetensorsError::Metadata { problem: format!("is {}", describe(&value)) });
    };
    let mut metadata = Vec::with_capacity(map.len());
    for (key, value) in map {
        match value {
            Value::String(s) => metadata.push((key, s)),
            other => return Err(SafetensorsError::Metadata { problem: format!("key '{key}' holds {}", describe(&other)) }),
        }
    }
    metadata.sort();
    Ok(metadata)
}

/// A tensor entry with its offsets relative to the data section.
struct Entry {
    info: TensorInfo,
    begin: u64,
    end: u64,
}

fn read_entry(name: String, value: Value) -> Result<Entry, SafetensorsError> {
    let field_error = |field, problem: String| SafetensorsError::Field { tensor: name.clone(), field, problem };
    let Value::Object(fields) = value else {
        return Err(field_error("entry", format!("is {}, expected an object with dtype, shape and data_offsets", describe(&value))));
    };
    let get = |field: &'static str| fields.get(field).ok_or_else(|| field_error(field, "is missing".to_owned()));

    let dtype_name = match get("dtype")? {
        Value::String(s) => s,
        other => return Err(field_error("dtype", format!("is {}, expected a string such as \"F32\"", describe(other)))),
    };
    let dtype = Dtype::from_name(dtype_name).ok_or_else(|| SafetensorsError::UnknownDtype { tensor: name.clone(), dtype: dtype_name.clone() })?;
    let shape = u64_array(get("shape")?)
        .ok_or_else(|| field_error("shape", format!("is {}, expected an array of non-negative integers", describe(&fields["shape"]))))?;
    let offsets = u64_array(get("data_offsets")?).filter(|o| o.len() == 2);
    let Some(&[begin, end]) = offsets.as_deref() else {
        return Err(field_error(
            "data_offsets",
            format!("is {}, expected two non-negative integers [begin, end]", describe(&fields["data_offsets"])),
        ));
    };
    if begin > end {
        return Err(SafetensorsError::ReversedOffsets { tensor: name, begin, end });
    }

    let overflow = || SafetensorsError::SizeOverflow { tensor: name.clone(), shape: shape.clone() };
    let elements = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).ok_or_else(overflow)?;
    let bits = elements.checked_mul(dtype.bits()).ok_or_else(overflow)?;
    if !bits.is_multiple_of(8) {
        return Err(SafetensorsError::PartialBytes { tensor: name, dtype, elements });
    }
    let expected = bits / 8;
    if end - begin != expected {
        return Err(SafetensorsError::SizeMismatch { tensor: name, dtype, shape, expected, begin, end });
    }
    Ok(Entry { info: TensorInfo { name, dtype, shape, bytes: 0..0 }, begin, end })
}

/// The values of a JSON array of non-negative integers that fit in u64.
fn u64_array(value: &Value) -> Option<Vec<u64>> {
    value.as_array()?.iter().map(Value::as_u64).collect()
}

/// A short description of a JSON value for error messages: `a string "abc"`, `the number -1`...
fn describe(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 40 {
        let cut = (0..=37).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    let kind = match value {
        Value::Null => return "null".to_owned(),
        Value::Bool(_) => "the bool",
        Value::Number(_) => "the number",
        Value::String(_) => "the string",
        Value::Array(_) => "the array",
        Value::Object(_) => "the object",
    };
    format!("{kind} {text}")
}
