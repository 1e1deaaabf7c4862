//! Helpers shared by the integration tests: a raw byte builder for forging files the writer
//! refuses to produce, and a small valid sample file.
#![allow(dead_code, unused_macros)]

use gguf::{GgmlType, GgufWriter, Value, ValueType};

/// Little-endian byte builder for hand-made (often broken) GGUF files.
#[derive(Default)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    /// Magic, version, tensor count and kv count.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut raw = Raw::default();
        raw.bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        raw
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Raw {
        self.0.extend_from_slice(b);
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Raw {
        self.bytes(&[v])
    }
    pub fn u32(&mut self, v: u32) -> &mut Raw {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Raw {
        self.bytes(&v.to_le_bytes())
    }
    pub fn string(&mut self, s: &[u8]) -> &mut Raw {
        self.u64(s.len() as u64).bytes(s)
    }
    /// A kv entry with a u32 value.
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Raw {
        self.string(key.as_bytes()).u32(ValueType::U32.id()).u32(v)
    }
    /// A tensor info with a raw type id.
    pub fn tensor_info(&mut self, name: &str, dims: &[u64], type_id: u32, offset: u64) -> &mut Raw {
        self.string(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(type_id).u64(offset)
    }
    /// Zero bytes up to the next multiple of `alignment`.
    pub fn pad(&mut self, alignment: usize) -> &mut Raw {
        while !self.0.len().is_multiple_of(alignment) {
            self.0.push(0);
        }
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Raw {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// A file with one tensor info (raw fields), no metadata, padding to 32 and `data_len` bytes
/// of data.
pub fn one_tensor_file(name: &str, dims: &[u64], type_id: u32, offset: u64, data_len: usize) -> Vec<u8> {
    Raw::header(3, 1, 0).tensor_info(name, dims, type_id, offset).pad(32).zeros(data_len).finish()
}

/// Deterministic non-trivial bytes.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// A small valid file touching every value type, nested arrays and three tensors. Its last
/// tensor is 128 bytes, a multiple of the alignment, so the file ends without padding and
/// removing any byte at all must make it invalid.
pub fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::from("llama"))
        .add_kv("u8", Value::U8(200))
        .add_kv("i8", Value::I8(-100))
        .add_kv("u16", Value::U16(60000))
        .add_kv("i16", Value::I16(-30000))
        .add_kv("u32", Value::U32(4_000_000_000))
        .add_kv("i32", Value::I32(-2_000_000_000))
        .add_kv("f32", Value::F32(1.5))
        .add_kv("bool", Value::Bool(true))
        .add_kv("u64", Value::U64(u64::MAX))
        .add_kv("i64", Value::I64(i64::MIN))
        .add_kv("f64", Value::F64(-2.25))
        .add_kv("tokens", Value::Array(ValueType::String, vec![Value::from("a"), Value::from("héllo")]))
        .add_kv(
            "nested",
            Value::Array(
                ValueType::Array,
                vec![Value::Array(ValueType::U8, vec![Value::U8(1), Value::U8(2)]), Value::Array(ValueType::Bool, vec![Value::Bool(false)])],
            ),
        )
        .add_tensor("a", &[32, 2], GgmlType::Q4_0, pattern(36, 1))
        .add_tensor("b", &[3], GgmlType::F16, pattern(6, 2))
        .add_tensor("c", &[8, 4], GgmlType::F32, pattern(128, 3));
    w
}

pub fn sample_bytes() -> Vec<u8> {
    sample_writer().to_bytes().expect("sample file must build")
}

/// Asserts `err` is the variant `pat` and its message contains every piece of `needles`.
macro_rules! assert_err {
    ($err:expr, $pat:pat $(if $guard:expr)?, $($needle:expr),*) => {{
        let err = $err;
        let msg = err.to_string();
        assert!(matches!(err, $pat $(if $guard)?), "wrong variant: {err:?}");
        $(assert!(msg.contains($needle), "message {msg:?} lacks {:?}", $needle);)*
    }};
}
