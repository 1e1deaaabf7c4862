//! The writer refuses to build files the reader would reject.

#[macro_use]
mod common;

use gguf::{GgmlType, GgufError, GgufWriter, Value, ValueType, MAX_ARRAY_DEPTH};

#[test]
fn writer_refuses_arrays_nested_too_deep() {
    let mut value = Value::Array(ValueType::U8, vec![]);
    for _ in 0..MAX_ARRAY_DEPTH {
        value = Value::Array(ValueType::Array, vec![value]);
    }
    let mut writer = GgufWriter::new();
    writer.add_kv("deep", value);
    assert_err!(writer.to_bytes().unwrap_err(), GgufError::NestingTooDeep { .. }, "deep");
}

#[test]
fn writer_checks_data_length() {
    let mut writer = GgufWriter::new();
    writer.add_tensor("w", &[32], GgmlType::Q8_0, vec![0; 33]);
    assert_err!(writer.to_bytes().unwrap_err(), GgufError::TensorDataSize { expected: 34, got: 33, .. }, "'w'");
}

#[test]
fn writer_checks_array_element_types() {
    let mut writer = GgufWriter::new();
    writer.add_kv("arr", Value::Array(ValueType::U32, vec![Value::U32(1), Value::I32(2)]));
    assert_err!(writer.to_bytes().unwrap_err(), GgufError::ArrayTypeMismatch { expected: ValueType::U32, got: ValueType::I32, .. }, "arr");
}

#[test]
fn writer_refuses_duplicates_bad_alignment_and_versions() {
    let mut writer = GgufWriter::new();
    writer.add_kv("k", Value::U8(1)).add_kv("k", Value::U8(2));
    assert!(matches!(writer.to_bytes(), Err(GgufError::DuplicateKey { .. })));

    let mut writer = GgufWriter::new();
    writer.add_tensor("t", &[1], GgmlType::F32, vec![0; 4]).add_tensor("t", &[1], GgmlType::F32, vec![0; 4]);
    assert!(matches!(writer.to_bytes(), Err(GgufError::DuplicateTensor { .. })));

    let mut writer = GgufWriter::new();
    writer.add_kv("general.alignment", Value::U32(24));
    assert!(matches!(writer.to_bytes(), Err(GgufError::BadAlignment { alignment: 24 })));

    let mut writer = GgufWriter::new();
    writer.set_version(1);
    assert!(matches!(writer.to_bytes(), Err(GgufError::UnsupportedVersion { version: 1 })));
}
