//! Parsing and validating a GGUF file ([`GgufFile`]).
//!
//! Everything the file claims is checked against the bytes actually present before it is
//! used: counts and lengths are bounded by the bytes left before any allocation, all offset
//! arithmetic is checked, and every tensor's data range is proven to lie inside the file at
//! open time, so [`GgufFile::tensor_data`] is a plain slice afterwards.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::GgufError;
use crate::types::{tensor_size, GgmlType, Value, ValueType, MAX_DIMS};
use crate::{ALIGNMENT_KEY, ARCHITECTURE_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ALIGNMENT, MAX_ARRAY_DEPTH};

/// Fewest bytes a metadata entry can take: empty key (u64 length), type id (u32), one byte.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Fewest bytes a tensor info can take: empty name, n_dims, one dim, type id, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;
/// Upper bound on up-front `Vec` reservations. Counts are already bounded by the bytes
/// left, but one byte of file can become a 32-byte `Value`; reserving only this much and
/// growing as elements really parse keeps memory proportional to what the file holds.
const MAX_PREALLOC: usize = 1 << 16;

/// Description of one tensor, as listed in the file's header.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost first as in the file: a weight `[in, out]` is `out` rows of `in`.
    pub dims: Vec<u64>,
    /// Element storage type.
    pub ggml_type: GgmlType,
    /// Start of the tensor's data, relative to the data section.
    pub offset: u64,
    /// Product of `dims`.
    pub n_elements: u64,
    /// Bytes of data: `n_elements / block_size * type_size`.
    pub n_bytes: u64,
}

/// The bytes behind a [`GgufFile`]: a read-only memory map or an owned buffer.
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

/// A parsed and validated GGUF file (version 2 or 3), holding its bytes.
pub struct GgufFile {
    /// Format version: 2 or 3 (they are identical for little-endian files).
    pub version: u32,
    /// Alignment of the data section and of every tensor offset (`general.alignment`, default 32).
    pub alignment: u64,
    /// Metadata entries in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Absolute byte offset of the data section.
    data_offset: u64,
    key_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
    storage: Storage,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .field("file_len", &self.storage.bytes().len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`. Errors name the path.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io_error = |cause| GgufError::Io { path: path.to_owned(), cause };
        let file = File::open(path).map_err(io_error)?;
        let len = file.metadata().map_err(io_error)?.len();
        let storage = if len == 0 {
            // Mapping zero bytes fails on some platforms; an empty buffer parses the same.
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and private to this struct. If another process
            // truncates or rewrites the file while it is mapped, reads may fault or see new
            // bytes; like every mmap-based model loader, we accept that model files are not
            // modified while in use.
            Storage::Mapped(unsafe { Mmap::map(&file) }.map_err(io_error)?)
        };
        GgufFile::from_storage(storage).map_err(|cause| GgufError::InFile { path: path.to_owned(), cause: Box::new(cause) })
    }

    /// Parses a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile, GgufError> {
        let header = parse(storage.bytes())?;
        Ok(GgufFile {
            version: header.version,
            alignment: header.alignment,
            metadata: header.metadata,
            tensors: header.tensors,
            data_offset: header.data_offset,
            key_index: header.key_index,
            tensor_index: header.tensor_index,
            storage,
        })
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        // The fields are public, so re-check the indexed entry in case they were edited.
        let &i = self.key_index.get(key)?;
        self.metadata.get(i).filter(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn get_as<'a, T>(&'a self, key: &str, expected: &'static str, convert: impl FnOnce(&'a Value) -> Option<T>) -> Result<T, GgufError> {
        let value = self.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_owned() })?;
        convert(value).ok_or_else(|| GgufError::WrongType { key: key.to_owned(), expected, got: value.describe() })
    }

    /// An integer value that fits in u32.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.get_as(key, "an integer that fits in u32", Value::as_u32)
    }

    /// A non-negative integer value.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get_as(key, "a non-negative integer", Value::as_u64)
    }

    /// A float value (F32 or F64) or an integer, as f32.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.get_as(key, "a number", Value::as_f32)
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.get_as(key, "a bool", Value::as_bool)
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get_as(key, "a string", Value::as_str)
    }

    /// The elements of an array value.
    pub fn get_array(&self, key: &str) -> Result<&[Value], GgufError> {
        self.get_as(key, "an array", Value::as_array)
    }

    /// `general.architecture`, e.g. "llama".
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str(ARCHITECTURE_KEY)
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let &i = self.tensor_index.get(name)?;
        self.tensors.get(i).filter(|t| t.name == name)
    }

    /// The data bytes of `info`, a tensor of this file. Bounds were validated at open, so
    /// this never panics; for an info that does not describe a range of this file it
    /// returns an empty slice.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let range = self
            .data_offset
            .checked_add(info.offset)
            .and_then(|start| Some((start, start.checked_add(info.n_bytes)?)))
            .and_then(|(start, end)| Some(usize::try_from(start).ok()?..usize::try_from(end).ok()?));
        range.and_then(|range| self.storage.bytes().get(range)).unwrap_or(&[])
    }

    /// Absolute byte offset of the data section in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }
}

/// Everything parsed from the header, before it is joined with its storage.
struct Header {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    data_offset: u64,
    key_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

/// A reading position in the file. Invariant: `pos <= bytes.len()`.
///
/// Field readers take a `what` closure naming the field for error messages; it only runs
/// when an error is built, so the happy path allocates nothing for it.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

type What<'w> = &'w dyn Fn() -> String;

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        self.bytes.len().saturating_sub(self.pos) as u64
    }

    fn take(&mut self, n: u64, what: What) -> Result<&'a [u8], GgufError> {
        let truncated = || GgufError::Truncated { what: what(), offset: self.offset(), needed: n, available: self.remaining() };
        let end = usize::try_from(n).ok().and_then(|n| self.pos.checked_add(n)).ok_or_else(truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: What) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: What) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: What) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A gguf string: u64 byte length, then UTF-8 bytes.
    fn string(&mut self, what: What) -> Result<String, GgufError> {
        let len_at = self.offset();
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(GgufError::StringPastEnd { what: format!("length of {}", what()), offset: len_at, len, available: self.remaining() });
        }
        let text_at = self.offset();
        let raw = self.take(len, what)?;
        match std::str::from_utf8(raw) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 { what: what(), offset: text_at }),
        }
    }

    /// A u64 count of entries that each take at least `min_each` bytes, checked against the
    /// bytes left so that a forged count fails here instead of in an allocation.
    fn count(&mut self, min_each: u64, what: What) -> Result<usize, GgufError> {
        let count_at = self.offset();
        let count = self.u64(what)?;
        let fits = count.checked_mul(min_each).is_some_and(|need| need <= self.remaining());
        match usize::try_from(count) {
            Ok(count) if fits => Ok(count),
            _ => Err(GgufError::CountTooLarge { what: what(), offset: count_at, count, min_each, available: self.remaining() }),
        }
    }
}

fn parse(bytes: &[u8]) -> Result<Header, GgufError> {
    let mut cur = Cursor { bytes, pos: 0 };
    check_magic(bytes)?;
    cur.pos = MAGIC.len();
    let version = cur.u32(&|| "version".to_owned())?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let tensor_count = cur.count(MIN_TENSOR_INFO_BYTES, &|| "tensor count".to_owned())?;
    let kv_count = cur.count(MIN_KV_BYTES, &|| "metadata entry count".to_owned())?;

    let mut metadata = Vec::with_capacity(kv_count.min(MAX_PREALLOC));
    let mut key_index = HashMap::with_capacity(kv_count.min(MAX_PREALLOC));
    for i in 0..kv_count {
        let key = cur.string(&|| format!("key of metadata entry #{i}"))?;
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        let type_at = cur.offset();
        let type_id = cur.u32(&|| format!("value type of key '{key}'"))?;
        let value_type =
            ValueType::from_u32(type_id).ok_or_else(|| GgufError::UnknownValueType { key: key.clone(), id: type_id, offset: type_at })?;
        let value = read_value(&mut cur, value_type, &key, 0)?;
        key_index.insert(key.clone(), i);
        metadata.push((key, value));
    }

    let alignment = match key_index.get(ALIGNMENT_KEY).and_then(|&i| metadata.get(i)) {
        None => DEFAULT_ALIGNMENT,
        Some((_, value)) => value.as_u64().ok_or_else(|| GgufError::WrongType {
            key: ALIGNMENT_KEY.to_owned(),
            expected: "a non-negative integer",
            got: value.describe(),
        })?,
    };
    if !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT {
        return Err(GgufError::BadAlignment { alignment });
    }

    let mut tensors = Vec::with_capacity(tensor_count.min(MAX_PREALLOC));
    let mut tensor_index = HashMap::with_capacity(tensor_count.min(MAX_PREALLOC));
    for i in 0..tensor_count {
        let info = read_tensor_info(&mut cur, i)?;
        if tensor_index.contains_key(&info.name) {
            return Err(GgufError::DuplicateTensor { name: info.name });
        }
        tensor_index.insert(info.name.clone(), i);
        tensors.push(info);
    }

    // If rounding up overflows, no tensor can fit; the range check below then reports it.
    let data_offset = align_up(cur.offset(), alignment).unwrap_or(u64::MAX);
    let file_len = bytes.len() as u64;
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::MisalignedOffset { tensor: t.name.clone(), offset: t.offset, alignment });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|start| start.checked_add(t.n_bytes));
        if end.is_none_or(|end| end > file_len) {
            return Err(GgufError::TensorDataPastEnd {
                tensor: t.name.clone(),
                start: start.unwrap_or(u64::MAX),
                end: end.unwrap_or(u64::MAX),
                file_len,
            });
        }
    }

    Ok(Header { version, alignment, metadata, tensors, data_offset, key_index, tensor_index })
}

/// Fails unless the file starts with `GGUF`. A non-empty file shorter than the magic but
/// agreeing with its first bytes is reported as truncated rather than as a foreign file.
fn check_magic(bytes: &[u8]) -> Result<(), GgufError> {
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if head.is_empty() || !MAGIC.starts_with(head) {
        return Err(GgufError::BadMagic { found: head.to_vec() });
    }
    if head.len() < MAGIC.len() {
        return Err(GgufError::Truncated { what: "magic".to_owned(), offset: 0, needed: MAGIC.len() as u64, available: head.len() as u64 });
    }
    Ok(())
}

/// One value of type `value_type` for key `key`; `depth` counts enclosing arrays.
fn read_value(cur: &mut Cursor, value_type: ValueType, key: &str, depth: usize) -> Result<Value, GgufError> {
    let what = || format!("value of key '{key}'");
    let what: What = &what;
    Ok(match value_type {
        ValueType::U8 => Value::U8(u8::from_le_bytes(cur.array(what)?)),
        ValueType::I8 => Value::I8(i8::from_le_bytes(cur.array(what)?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(cur.array(what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(cur.array(what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(cur.array(what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(cur.array(what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(cur.array(what)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(cur.array(what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(cur.array(what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(cur.array(what)?)),
        ValueType::Bool => {
            let at = cur.offset();
            match cur.array::<1>(what)? {
                [0] => Value::Bool(false),
                [1] => Value::Bool(true),
                [byte] => return Err(GgufError::InvalidBool { key: key.to_owned(), byte, offset: at }),
            }
        }
        ValueType::String => Value::String(cur.string(what)?),
        ValueType::Array => {
            // Bounding depth bounds the recursion, so a forged file cannot overflow the stack.
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::NestingTooDeep { key: key.to_owned(), max_depth: MAX_ARRAY_DEPTH, offset: cur.offset() });
            }
            let type_at = cur.offset();
            let type_id = cur.u32(&|| format!("array element type of key '{key}'"))?;
            let element_type =
                ValueType::from_u32(type_id).ok_or_else(|| GgufError::UnknownValueType { key: key.to_owned(), id: type_id, offset: type_at })?;
            let count = cur.count(element_type.min_encoded_size(), &|| format!("array length of key '{key}'"))?;
            let mut items = Vec::with_capacity(count.min(MAX_PREALLOC));
            for _ in 0..count {
                items.push(read_value(cur, element_type, key, depth + 1)?);
            }
            Value::Array(element_type, items)
        }
    })
}

/// The tensor info at the cursor; `index` is its position, for error messages.
fn read_tensor_info(cur: &mut Cursor, index: usize) -> Result<TensorInfo, GgufError> {
    let name = cur.string(&|| format!("name of tensor #{index}"))?;
    let n_dims = cur.u32(&|| format!("dimension count of tensor '{name}'"))?;
    // Checked before reading the dims so a forged count never drives a long loop.
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(GgufError::BadDimCount { tensor: name, n_dims: n_dims.into() });
    }
    let mut dims = Vec::with_capacity(MAX_DIMS);
    for _ in 0..n_dims {
        dims.push(cur.u64(&|| format!("dimensions of tensor '{name}'"))?);
    }
    let type_id = cur.u32(&|| format!("ggml type of tensor '{name}'"))?;
    let ggml_type = GgmlType::from_u32(type_id).ok_or_else(|| GgufError::UnknownGgmlType { tensor: name.clone(), id: type_id })?;
    let offset = cur.u64(&|| format!("data offset of tensor '{name}'"))?;
    let (n_elements, n_bytes) = tensor_size(&name, &dims, ggml_type)?;
    Ok(TensorInfo { name, dims, ggml_type, offset, n_elements, n_bytes })
}

/// `value` rounded up to a multiple of `alignment` (a power of two), or `None` on overflow.
pub(crate) fn align_up(value: u64, alignment: u64) -> Option<u64> {
    let mask = alignment.checked_sub(1)?;
    Some(value.checked_add(mask)? & !mask)
}
