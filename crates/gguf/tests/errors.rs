//! One named test per way a GGUF file can be wrong: each checks the error variant and that
//! the message says what and where.

#[macro_use]
mod common;

use common::{one_tensor_file, pattern, Raw};
use gguf::{GgmlType, GgufError, GgufFile, ValueType, MAX_ARRAY_DEPTH};

fn parse_err(bytes: Vec<u8>) -> GgufError {
    match GgufFile::from_bytes(bytes) {
        Ok(file) => panic!("expected an error, parsed {file:?}"),
        Err(e) => e,
    }
}

/// Header + one kv with a raw type id and raw value bytes.
fn one_kv_file(key: &str, type_id: u32, value: &[u8]) -> Vec<u8> {
    Raw::header(3, 0, 1).string(key.as_bytes()).u32(type_id).bytes(value).finish()
}

#[test]
fn bad_magic_says_not_gguf_and_shows_first_bytes() {
    assert_err!(parse_err(b"PK\x03\x04rest of a zip".to_vec()), GgufError::BadMagic { .. }, "not a GGUF file", "50 4b 03 04", "\"PK..\"");
}

#[test]
fn empty_file_is_not_gguf() {
    assert_err!(parse_err(Vec::new()), GgufError::BadMagic { .. }, "not a GGUF file", "empty");
}

#[test]
fn prefix_of_magic_is_truncation_not_bad_magic() {
    assert_err!(parse_err(b"GG".to_vec()), GgufError::Truncated { offset: 0, .. }, "magic");
}

#[test]
fn version_1_is_unsupported() {
    let bytes = Raw::header(1, 0, 0).finish();
    assert_err!(parse_err(bytes), GgufError::UnsupportedVersion { version: 1 }, "version 1", "obsolete");
}

#[test]
fn version_above_3_is_unsupported() {
    let bytes = Raw::header(4, 0, 0).finish();
    assert_err!(parse_err(bytes), GgufError::UnsupportedVersion { version: 4 }, "version 4");
}

#[test]
fn big_endian_version_gets_a_hint() {
    let bytes = Raw::header(0x0300_0000, 0, 0).finish();
    assert_err!(parse_err(bytes), GgufError::UnsupportedVersion { .. }, "big-endian");
}

#[test]
fn absurd_tensor_count_fails_before_allocating() {
    let bytes = Raw::header(3, u64::MAX, 0).finish();
    assert_err!(parse_err(bytes), GgufError::CountTooLarge { offset: 8, count: u64::MAX, .. }, "tensor count", "byte 8");
}

#[test]
fn absurd_kv_count_fails_before_allocating() {
    let bytes = Raw::header(3, 0, 1 << 40).zeros(100).finish();
    assert_err!(parse_err(bytes), GgufError::CountTooLarge { offset: 16, available: 100, .. }, "metadata entry count");
}

#[test]
fn key_length_past_end() {
    let bytes = Raw::header(3, 0, 1).u64(1 << 50).bytes(&[b'a'; 13]).finish();
    assert_err!(parse_err(bytes), GgufError::StringPastEnd { offset: 24, available: 13, .. }, "key of metadata entry #0");
}

#[test]
fn string_value_length_past_end() {
    let mut value = (u64::MAX).to_le_bytes().to_vec();
    value.extend_from_slice(b"xy");
    assert_err!(parse_err(one_kv_file("general.name", ValueType::String.id(), &value)), GgufError::StringPastEnd { .. }, "general.name");
}

#[test]
fn array_count_past_end() {
    let mut value = ValueType::U8.id().to_le_bytes().to_vec();
    value.extend_from_slice(&1000u64.to_le_bytes());
    value.extend_from_slice(&[0; 10]);
    assert_err!(
        parse_err(one_kv_file("arr", ValueType::Array.id(), &value)),
        GgufError::CountTooLarge { count: 1000, available: 10, .. },
        "array length of key 'arr'"
    );
}

#[test]
fn array_count_times_element_size_overflow() {
    // count * 8 bytes wraps u64 to a small number; the check must not be fooled by it.
    let mut value = ValueType::U64.id().to_le_bytes().to_vec();
    value.extend_from_slice(&(1u64 << 61).to_le_bytes());
    value.extend_from_slice(&[0; 64]);
    assert_err!(parse_err(one_kv_file("arr", ValueType::Array.id(), &value)), GgufError::CountTooLarge { min_each: 8, .. }, "arr");
}

#[test]
fn arrays_nested_too_deep() {
    let mut raw = Raw::header(3, 0, 1);
    raw.string(b"deep").u32(ValueType::Array.id());
    for _ in 0..MAX_ARRAY_DEPTH {
        raw.u32(ValueType::Array.id()).u64(1);
    }
    raw.u32(ValueType::U8.id()).u64(1).u8(0);
    assert_err!(parse_err(raw.finish()), GgufError::NestingTooDeep { max_depth: MAX_ARRAY_DEPTH, .. }, "deep", "nested deeper than 8");
}

#[test]
fn unknown_value_type_id() {
    assert_err!(parse_err(one_kv_file("weird", 13, &[0; 8])), GgufError::UnknownValueType { id: 13, offset: 37, .. }, "weird", "13");
}

#[test]
fn unknown_array_element_type_id() {
    let mut value = 99u32.to_le_bytes().to_vec();
    value.extend_from_slice(&0u64.to_le_bytes());
    assert_err!(parse_err(one_kv_file("arr", ValueType::Array.id(), &value)), GgufError::UnknownValueType { id: 99, .. }, "arr");
}

#[test]
fn bool_other_than_0_or_1() {
    assert_err!(parse_err(one_kv_file("flag", ValueType::Bool.id(), &[2])), GgufError::InvalidBool { byte: 2, .. }, "flag");
}

#[test]
fn invalid_utf8_in_key() {
    let bytes = Raw::header(3, 0, 1).string(b"bad\xff").u32(ValueType::U8.id()).u8(0).finish();
    assert_err!(parse_err(bytes), GgufError::InvalidUtf8 { offset: 32, .. }, "key of metadata entry #0", "byte 32");
}

#[test]
fn invalid_utf8_in_string_value_names_the_key() {
    let mut value = 2u64.to_le_bytes().to_vec();
    value.extend_from_slice(b"\xc3\x28");
    assert_err!(parse_err(one_kv_file("general.name", ValueType::String.id(), &value)), GgufError::InvalidUtf8 { .. }, "value of key 'general.name'");
}

#[test]
fn invalid_utf8_in_tensor_name() {
    let bytes = Raw::header(3, 1, 0).string(b"\x80").u32(1).u64(1).u32(0).u64(0).pad(32).zeros(4).finish();
    assert_err!(parse_err(bytes), GgufError::InvalidUtf8 { .. }, "name of tensor #0");
}

#[test]
fn duplicate_keys() {
    let bytes = Raw::header(3, 0, 2).kv_u32("a.b", 1).kv_u32("a.b", 2).finish();
    assert_err!(parse_err(bytes), GgufError::DuplicateKey { .. }, "a.b");
}

#[test]
fn duplicate_tensor_names() {
    let bytes = Raw::header(3, 2, 0).tensor_info("w", &[4], 0, 0).tensor_info("w", &[4], 0, 32).pad(32).zeros(64).finish();
    assert_err!(parse_err(bytes), GgufError::DuplicateTensor { .. }, "'w'");
}

#[test]
fn unknown_ggml_type_names_tensor_and_id() {
    for id in [4, 31] {
        let bytes = one_tensor_file("blk.0.w", &[32], id, 0, 64);
        assert_err!(
            parse_err(bytes),
            GgufError::UnknownGgmlType { id: got, .. } if got == id,
            "blk.0.w",
            &format!("id {id}")
        );
    }
}

#[test]
fn zero_dims_rejected() {
    let bytes = one_tensor_file("w", &[], 0, 0, 4);
    assert_err!(parse_err(bytes), GgufError::BadDimCount { n_dims: 0, .. }, "'w'", "0 dimensions");
}

#[test]
fn more_than_four_dims_rejected() {
    let bytes = one_tensor_file("w", &[1, 1, 1, 1, 1], 0, 0, 4);
    assert_err!(parse_err(bytes), GgufError::BadDimCount { n_dims: 5, .. }, "'w'");
    // A forged dim count must be caught before it drives the dims loop.
    let bytes = Raw::header(3, 1, 0).string(b"w").u32(u32::MAX).zeros(64).finish();
    assert_err!(parse_err(bytes), GgufError::BadDimCount { n_dims: 4294967295, .. }, "'w'");
}

#[test]
fn element_count_overflow() {
    let bytes = one_tensor_file("w", &[1 << 32, 1 << 32], 0, 0, 0);
    assert_err!(parse_err(bytes), GgufError::ElementCountOverflow { .. }, "'w'", "overflows");
    // Each dim is an int64_t in ggml.
    let bytes = one_tensor_file("w", &[0, u64::MAX], 0, 0, 0);
    assert_err!(parse_err(bytes), GgufError::ElementCountOverflow { .. }, "'w'");
}

#[test]
fn zero_sized_dim_gives_an_empty_tensor() {
    let file = GgufFile::from_bytes(one_tensor_file("empty", &[0, 7], 0, 0, 0)).unwrap();
    let info = file.tensor("empty").unwrap();
    assert_eq!((info.n_elements, info.n_bytes), (0, 0));
    assert!(file.tensor_data(info).is_empty());
}

#[test]
fn quantized_rows_must_be_whole_blocks() {
    let bytes = one_tensor_file("w", &[48, 2], GgmlType::Q4_0.id(), 0, 1000);
    assert_err!(parse_err(bytes), GgufError::NotBlockMultiple { inner_dim: 48, block_size: 32, .. }, "'w'", "Q4_0");
    // Only the innermost dimension must be whole blocks: 3 rows of one block each is fine.
    let file = GgufFile::from_bytes(one_tensor_file("w", &[32, 3], GgmlType::Q4_0.id(), 0, 54)).unwrap();
    assert_eq!(file.tensor("w").unwrap().n_bytes, 54);
}

#[test]
fn misaligned_tensor_offset() {
    let bytes = one_tensor_file("w", &[4], 0, 16, 64);
    assert_err!(parse_err(bytes), GgufError::MisalignedOffset { offset: 16, alignment: 32, .. }, "'w'");
}

#[test]
fn tensor_data_past_end_of_file() {
    let bytes = one_tensor_file("w", &[4], 0, 0, 15);
    assert_err!(parse_err(bytes), GgufError::TensorDataPastEnd { .. }, "'w'", "past the end");
}

#[test]
fn tensor_offset_overflowing_u64() {
    let bytes = one_tensor_file("w", &[4], 0, u64::MAX - 31, 16);
    assert_err!(parse_err(bytes), GgufError::TensorDataPastEnd { end: u64::MAX, .. }, "'w'");
}

#[test]
fn overlapping_tensors_are_allowed() {
    let bytes = Raw::header(3, 2, 0).tensor_info("a", &[4], 0, 0).tensor_info("b", &[2], 0, 0).pad(32).bytes(&pattern(16, 5)).finish();
    let file = GgufFile::from_bytes(bytes).unwrap();
    let a = file.tensor_data(file.tensor("a").unwrap());
    let b = file.tensor_data(file.tensor("b").unwrap());
    assert_eq!(&a[..8], b);
}

#[test]
fn alignment_zero_or_not_power_of_two() {
    for alignment in [0u32, 3, 48, 1 << 31] {
        let bytes = Raw::header(3, 0, 1).kv_u32("general.alignment", alignment).finish();
        assert_err!(
            parse_err(bytes),
            GgufError::BadAlignment { alignment: got } if got == alignment as u64,
            "general.alignment"
        );
    }
}

#[test]
fn alignment_of_wrong_type() {
    let mut value = 1u64.to_le_bytes().to_vec();
    value.push(b'x');
    assert_err!(parse_err(one_kv_file("general.alignment", ValueType::String.id(), &value)), GgufError::WrongType { .. }, "general.alignment");
}

#[test]
fn truncation_error_names_field_and_offset() {
    let bytes = Raw::header(3, 0, 1).string(b"k").u32(ValueType::U32.id()).bytes(&[1, 2]).finish();
    assert_err!(parse_err(bytes), GgufError::Truncated { offset: 37, needed: 4, available: 2, .. }, "value of key 'k'", "byte 37");
}

#[test]
fn open_missing_file_names_the_path() {
    let path = std::env::temp_dir().join("gguf-this-file-does-not-exist.gguf");
    let err = GgufFile::open(&path).unwrap_err();
    assert_err!(err, GgufError::Io { .. }, "gguf-this-file-does-not-exist.gguf");
}

#[test]
fn open_invalid_file_names_the_path_and_keeps_the_cause() {
    let path = std::env::temp_dir().join(format!("gguf-bad-{}.gguf", std::process::id()));
    std::fs::write(&path, b"not gguf at all").unwrap();
    let err = GgufFile::open(&path).unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert!(matches!(err.innermost(), GgufError::BadMagic { .. }), "{err:?}");
    assert_err!(err, GgufError::InFile { .. }, "gguf-bad-", "not a GGUF file");
}

#[test]
fn tensor_data_of_a_foreign_info_does_not_panic() {
    let file = GgufFile::from_bytes(common::sample_bytes()).unwrap();
    let mut info = file.tensor("c").unwrap().clone();
    info.offset = u64::MAX;
    assert!(file.tensor_data(&info).is_empty());
    info.offset = 0;
    info.n_bytes = 1 << 40;
    assert!(file.tensor_data(&info).is_empty());
}
