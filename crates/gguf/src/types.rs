//! Element types of tensors ([`GgmlType`]) and of metadata values ([`ValueType`], [`Value`]).

use std::fmt;

use crate::error::GgufError;

/// Elements per block of the "legacy" quantizations (Q4_0 .. Q8_1).
pub const QK: usize = 32;
/// Elements per super-block of the K quantizations (Q2_K .. Q8_K).
pub const QK_K: usize = 256;
/// Most dimensions a ggml tensor can have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// Storage type of a tensor's elements, as the ggml type id in the file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    BF16,
}

impl GgmlType {
    /// Every type this crate knows, in id order.
    pub const ALL: [GgmlType; 15] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::BF16,
    ];

    /// The type with ggml id `id`, or `None` for ids this crate does not support
    /// (including the removed Q4_2/Q4_3 ids 4 and 5).
    pub fn from_u32(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// The ggml type id written in the file.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::BF16 => 30,
        }
    }

    /// Elements per block: 1 for the float types, [`QK`] or [`QK_K`] for quantized ones.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 | GgmlType::Q8_1 => QK,
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K | GgmlType::Q8_K => QK_K,
        }
    }

    /// Bytes per block (see REFERENCE.md section 3 for the block layouts).
    pub fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q8_1 => 36,
            GgmlType::Q2_K => 84,
            GgmlType::Q3_K => 110,
            GgmlType::Q4_K => 144,
            GgmlType::Q5_K => 176,
            GgmlType::Q6_K => 210,
            GgmlType::Q8_K => 292,
        }
    }

    /// The name ggml and llama.cpp print: "F32", "Q4_1", "Q6_K", ...
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::Q8_K => "Q8_K",
            GgmlType::BF16 => "BF16",
        }
    }

    /// True for the block-quantized types (everything but F32, F16 and BF16).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by `n_elements` consecutive elements, or `None` if `n_elements` is not
    /// a whole number of blocks or the size overflows `u64`.
    pub fn row_bytes(self, n_elements: u64) -> Option<u64> {
        let block_size = self.block_size() as u64;
        if !n_elements.is_multiple_of(block_size) {
            return None;
        }
        (n_elements / block_size).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Element count and byte size of a tensor with `dims` (innermost first) of type `ggml_type`,
/// after checking what both the reader and the writer require: 1 to [`MAX_DIMS`] dimensions,
/// an element count that fits ggml's `int64_t`, and whole blocks along the innermost
/// dimension (quantized rows cannot share a block). A dimension of 0 is accepted: the tensor
/// is then empty and takes no bytes.
pub(crate) fn tensor_size(name: &str, dims: &[u64], ggml_type: GgmlType) -> Result<(u64, u64), GgufError> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(GgufError::BadDimCount { tensor: name.to_owned(), n_dims: dims.len() as u64 });
    }
    let overflow = || GgufError::ElementCountOverflow { tensor: name.to_owned(), dims: dims.to_vec() };
    // ggml stores dimensions as int64_t, so each one and their product must fit in it.
    let max = i64::MAX as u64;
    if dims.iter().any(|&d| d > max) {
        return Err(overflow());
    }
    let n_elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= max).ok_or_else(overflow)?;
    let block_size = ggml_type.block_size() as u64;
    if !dims[0].is_multiple_of(block_size) {
        return Err(GgufError::NotBlockMultiple { tensor: name.to_owned(), ggml_type, inner_dim: dims[0], block_size: ggml_type.block_size() });
    }
    let n_bytes = ggml_type.row_bytes(n_elements).ok_or_else(overflow)?;
    Ok((n_elements, n_bytes))
}

/// Type tag of a metadata value (ids 0..=12 in the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    /// Every value type, in id order (the id is the index).
    pub const ALL: [ValueType; 13] = [
        ValueType::U8,
        ValueType::I8,
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::F32,
        ValueType::Bool,
        ValueType::String,
        ValueType::Array,
        ValueType::U64,
        ValueType::I64,
        ValueType::F64,
    ];

    /// The type with id `id`, or `None` for an unknown id.
    pub fn from_u32(id: u32) -> Option<ValueType> {
        usize::try_from(id).ok().and_then(|i| ValueType::ALL.get(i)).copied()
    }

    /// The id written in the file.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Fewest bytes one encoded value of this type can take. Bounding a claimed element
    /// count by `bytes left / this` before allocating stops a forged count from asking for
    /// terabytes.
    pub(crate) fn min_encoded_size(self) -> u64 {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 8,
            // u64 length of an empty string
            ValueType::String => 8,
            // u32 element type + u64 count of an empty array
            ValueType::Array => 12,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Element type and elements. Every element has the element type; nested arrays are
    /// allowed and each inner array carries its own element type.
    Array(ValueType, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The type tag this value is written with.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any integer value, widened to i128 so every integer type converts losslessly.
    fn as_i128(&self) -> Option<i128> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::I8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::U64(v) => Some(v.into()),
            Value::I64(v) => Some(v.into()),
            _ => None,
        }
    }

    /// Any integer type holding a non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// Any integer type whose value fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// Any integer type whose value fits in u32.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_i128().and_then(|v| u32::try_from(v).ok())
    }

    /// F32, F64 (rounded to f32) or any integer (converted, rounding if large).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => self.as_i128().map(|v| v as f32),
        }
    }

    /// A Bool value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// A String value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements of an Array value.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(_, items) => Some(items),
            _ => None,
        }
    }

    /// Short description for error messages: the type, plus the value of a number or bool
    /// (never a whole string or array, which can be huge).
    pub(crate) fn describe(&self) -> String {
        match self {
            Value::String(s) => format!("String of {} bytes", s.len()),
            Value::Array(ty, items) => format!("Array of {} {ty}", items.len()),
            Value::U8(v) => format!("U8 {v}"),
            Value::I8(v) => format!("I8 {v}"),
            Value::U16(v) => format!("U16 {v}"),
            Value::I16(v) => format!("I16 {v}"),
            Value::U32(v) => format!("U32 {v}"),
            Value::I32(v) => format!("I32 {v}"),
            Value::F32(v) => format!("F32 {v}"),
            Value::Bool(v) => format!("Bool {v}"),
            Value::U64(v) => format!("U64 {v}"),
            Value::I64(v) => format!("I64 {v}"),
            Value::F64(v) => format!("F64 {v}"),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant(v)
            }
        }
    )*};
}
value_from!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
            bool => Bool, String => String, u64 => U64, i64 => I64, f64 => F64);

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_owned())
    }
}
