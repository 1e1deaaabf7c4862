//! Writer -> reader round trips: every value type, nested arrays, every tensor type.

mod common;

use common::{pattern, sample_bytes};
use gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value, ValueType, MAX_ARRAY_DEPTH};
use proptest::prelude::*;

#[test]
fn every_value_type_round_trips_in_order() {
    let writer = common::sample_writer();
    let file = GgufFile::from_bytes(writer.to_bytes().unwrap()).unwrap();
    let expected = [
        ("general.architecture", Value::from("llama")),
        ("u8", Value::U8(200)),
        ("i8", Value::I8(-100)),
        ("u16", Value::U16(60000)),
        ("i16", Value::I16(-30000)),
        ("u32", Value::U32(4_000_000_000)),
        ("i32", Value::I32(-2_000_000_000)),
        ("f32", Value::F32(1.5)),
        ("bool", Value::Bool(true)),
        ("u64", Value::U64(u64::MAX)),
        ("i64", Value::I64(i64::MIN)),
        ("f64", Value::F64(-2.25)),
    ];
    for (i, (key, value)) in expected.iter().enumerate() {
        assert_eq!(file.metadata[i].0, *key);
        assert_eq!(file.metadata[i].1, *value, "key {key}");
        assert_eq!(file.get(key), Some(value));
    }
    assert_eq!(file.metadata.len(), 14);
    assert_eq!(file.version, 3);
    assert_eq!(file.alignment, 32);
    assert_eq!(file.get_array("tokens").unwrap(), &[Value::from("a"), Value::from("héllo")]);
    let nested = file.get("nested").unwrap();
    assert_eq!(nested.value_type(), ValueType::Array);
    let inner = nested.as_array().unwrap();
    assert_eq!(inner[0], Value::Array(ValueType::U8, vec![Value::U8(1), Value::U8(2)]));
    assert_eq!(inner[1], Value::Array(ValueType::Bool, vec![Value::Bool(false)]));
}

#[test]
fn typed_getters_convert_and_report() {
    let file = GgufFile::from_bytes(sample_bytes()).unwrap();
    assert_eq!(file.architecture().unwrap(), "llama");
    assert_eq!(file.get_u32("u32").unwrap(), 4_000_000_000);
    assert_eq!(file.get_u32("u8").unwrap(), 200);
    assert_eq!(file.get_u64("u64").unwrap(), u64::MAX);
    assert_eq!(file.get_f32("f64").unwrap(), -2.25);
    assert_eq!(file.get_f32("u16").unwrap(), 60000.0);
    assert!(file.get_bool("bool").unwrap());
    assert_eq!(file.get_str("general.architecture").unwrap(), "llama");

    let err = file.get_u32("missing.key").unwrap_err();
    assert!(matches!(&err, GgufError::MissingKey { key } if key == "missing.key"), "{err}");
    // A value that does not fit is a type error, not a silent truncation.
    let err = file.get_u32("u64").unwrap_err();
    assert!(matches!(&err, GgufError::WrongType { key, .. } if key == "u64"), "{err}");
    assert!(err.to_string().contains("U64 18446744073709551615"), "{err}");
    let err = file.get_u64("i8").unwrap_err();
    assert!(matches!(err, GgufError::WrongType { .. }), "{err}");
    let err = file.get_str("tokens").unwrap_err();
    assert!(err.to_string().contains("Array of 2 String"), "{err}");
    assert!(matches!(file.get_bool("u8"), Err(GgufError::WrongType { .. })));
    assert!(matches!(file.get_array("f32"), Err(GgufError::WrongType { .. })));
}

#[test]
fn value_accessors_follow_their_contracts() {
    assert_eq!(Value::I32(-1).as_u64(), None);
    assert_eq!(Value::I32(-1).as_i64(), Some(-1));
    assert_eq!(Value::U64(u64::MAX).as_i64(), None);
    assert_eq!(Value::U64(7).as_u32(), Some(7));
    assert_eq!(Value::I64(1 << 40).as_u32(), None);
    assert_eq!(Value::F32(2.0).as_u64(), None);
    assert_eq!(Value::I16(-3).as_f32(), Some(-3.0));
    assert_eq!(Value::Bool(true).as_u64(), None);
    assert_eq!(Value::from("x").as_str(), Some("x"));
    assert_eq!(Value::U8(1).as_bool(), None);
}

#[test]
fn every_tensor_type_round_trips() {
    let mut writer = GgufWriter::new();
    let mut expected = Vec::new();
    for (i, ty) in GgmlType::ALL.into_iter().enumerate() {
        let dims = [ty.block_size() as u64 * 2, 3];
        let n_bytes = ty.row_bytes(dims[0] * dims[1]).unwrap() as usize;
        assert_eq!(n_bytes, ty.type_size() * 6);
        let data = pattern(n_bytes, i as u8);
        writer.add_tensor(&format!("t.{}", ty.name()), &dims, ty, data.clone());
        expected.push((ty, dims, data));
    }
    let file = GgufFile::from_bytes(writer.to_bytes().unwrap()).unwrap();
    assert_eq!(file.tensors.len(), GgmlType::ALL.len());
    assert_eq!(file.data_offset() % 32, 0);
    for (ty, dims, data) in &expected {
        let info = file.tensor(&format!("t.{}", ty.name())).unwrap();
        assert_eq!(info.ggml_type, *ty);
        assert_eq!(info.dims, dims);
        assert_eq!(info.n_elements, dims[0] * dims[1]);
        assert_eq!(info.n_bytes, data.len() as u64);
        assert_eq!(info.offset % 32, 0);
        assert_eq!(file.tensor_data(info), &data[..], "data of {ty}");
    }
    assert!(file.tensor("nope").is_none());
}

#[test]
fn ggml_type_ids_and_sizes_match_the_reference() {
    let table = [
        (GgmlType::F32, 0, 1, 4),
        (GgmlType::F16, 1, 1, 2),
        (GgmlType::Q4_0, 2, 32, 18),
        (GgmlType::Q4_1, 3, 32, 20),
        (GgmlType::Q5_0, 6, 32, 22),
        (GgmlType::Q5_1, 7, 32, 24),
        (GgmlType::Q8_0, 8, 32, 34),
        (GgmlType::Q8_1, 9, 32, 36),
        (GgmlType::Q2_K, 10, 256, 84),
        (GgmlType::Q3_K, 11, 256, 110),
        (GgmlType::Q4_K, 12, 256, 144),
        (GgmlType::Q5_K, 13, 256, 176),
        (GgmlType::Q6_K, 14, 256, 210),
        (GgmlType::Q8_K, 15, 256, 292),
        (GgmlType::BF16, 30, 1, 2),
    ];
    for (ty, id, block, size) in table {
        assert_eq!(ty.id(), id);
        assert_eq!(GgmlType::from_u32(id), Some(ty));
        assert_eq!((ty.block_size(), ty.type_size()), (block, size), "{ty}");
    }
    // Q4_2 and Q4_3 (4, 5) were removed from ggml; 16.. are types we do not support.
    for id in [4, 5, 16, 29, 31, u32::MAX] {
        assert_eq!(GgmlType::from_u32(id), None);
    }
    assert_eq!(GgmlType::Q4_1.name(), "Q4_1");
    assert_eq!(GgmlType::Q4_0.row_bytes(64), Some(36));
    assert_eq!(GgmlType::Q4_0.row_bytes(48), None);
    assert_eq!(GgmlType::F32.row_bytes(u64::MAX), None);
    assert_eq!(ValueType::from_u32(12), Some(ValueType::F64));
    assert_eq!(ValueType::from_u32(13), None);
}

#[test]
fn version_2_and_custom_alignment_round_trip() {
    for (version, alignment) in [(2u32, 64u32), (3, 1), (3, 4096)] {
        let mut writer = GgufWriter::new();
        writer
            .set_version(version)
            .add_kv("general.alignment", Value::U32(alignment))
            .add_tensor("x", &[3], GgmlType::F32, pattern(12, 7))
            .add_tensor("y", &[5], GgmlType::F16, pattern(10, 8));
        let file = GgufFile::from_bytes(writer.to_bytes().unwrap()).unwrap();
        assert_eq!(file.version, version);
        assert_eq!(file.alignment, alignment as u64);
        assert_eq!(file.data_offset() % alignment as u64, 0);
        let y = file.tensor("y").unwrap();
        assert_eq!(y.offset % alignment as u64, 0);
        assert_eq!(file.tensor_data(y), &pattern(10, 8)[..]);
    }
}

#[test]
fn open_memory_maps_a_written_file() {
    let path = std::env::temp_dir().join(format!("gguf-open-{}.gguf", std::process::id()));
    common::sample_writer().write(&path).unwrap();
    let file = GgufFile::open(&path);
    let _ = std::fs::remove_file(&path);
    let file = file.unwrap();
    let c = file.tensor("c").unwrap();
    assert_eq!(file.tensor_data(c), &pattern(128, 3)[..]);
    assert_eq!(file.bytes(), &sample_bytes()[..]);
}

#[test]
fn arrays_nested_to_the_depth_limit_round_trip() {
    let mut value = Value::Array(ValueType::I8, vec![Value::I8(-1)]);
    for _ in 1..MAX_ARRAY_DEPTH {
        value = Value::Array(ValueType::Array, vec![value]);
    }
    let mut writer = GgufWriter::new();
    writer.add_kv("deep", value.clone());
    let file = GgufFile::from_bytes(writer.to_bytes().unwrap()).unwrap();
    assert_eq!(file.get("deep"), Some(&value));
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        // NaN != NaN would fail equality for reasons unrelated to the format.
        (-1e30f32..1e30).prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        ".{0,12}".prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        (-1e300f64..1e300).prop_map(Value::F64),
    ]
}

/// Arrays whose elements all share one type, nested a few levels.
fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 32, 6, |inner| {
        (inner, 0usize..6).prop_map(|(first, n)| {
            let ty = first.value_type();
            Value::Array(ty, vec![first; n])
        })
    })
}

proptest! {
    #[test]
    fn random_metadata_round_trips(values in prop::collection::vec(value(), 0..8)) {
        let mut writer = GgufWriter::new();
        for (i, v) in values.iter().enumerate() {
            writer.add_kv(&format!("k{i}"), v.clone());
        }
        let file = GgufFile::from_bytes(writer.to_bytes().unwrap()).unwrap();
        prop_assert_eq!(file.metadata.len(), values.len());
        for (i, v) in values.iter().enumerate() {
            prop_assert_eq!(file.get(&format!("k{i}")), Some(v));
        }
    }
}

#[test]
fn file_and_error_can_cross_threads() {
    // The model shares one mapped file across worker threads; the CLI wraps errors in anyhow.
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<GgufFile>();
    assert_send_sync::<GgufError>();
}
