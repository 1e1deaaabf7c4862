//! Golden test against the reference writer: `fixtures/gguf_py_small.gguf` was made by
//! gguf-py 0.19 with `fixtures/make_gguf_py_small.py` (see that script for the command).

use gguf::{GgmlType, GgufFile, GgufWriter, Value, ValueType};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gguf_py_small.gguf");

#[test]
fn reads_every_value_gguf_py_wrote() {
    let file = GgufFile::open(FIXTURE).unwrap();
    let expected = [
        ("general.architecture", Value::from("llama")),
        ("general.alignment", Value::U32(64)),
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60000)),
        ("t.i16", Value::I16(-30000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(1.5)),
        ("t.bool", Value::Bool(true)),
        ("t.str", Value::from("héllo")),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(-2.25)),
        ("t.strs", Value::Array(ValueType::String, vec![Value::from("a"), Value::from("bc"), Value::from("")])),
        ("t.ints", Value::Array(ValueType::I32, vec![Value::I32(1), Value::I32(-2), Value::I32(3)])),
        (
            "t.nested",
            Value::Array(
                ValueType::Array,
                vec![Value::Array(ValueType::I32, vec![Value::I32(1), Value::I32(2)]), Value::Array(ValueType::I32, vec![Value::I32(3)])],
            ),
        ),
    ];
    let got: Vec<(&str, &Value)> = file.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let want: Vec<(&str, &Value)> = expected.iter().map(|(k, v)| (*k, v)).collect();
    assert_eq!(got, want);
    assert_eq!((file.version, file.alignment, file.data_offset()), (3, 64, 704));
}

#[test]
fn reads_tensors_gguf_py_wrote() {
    let file = GgufFile::open(FIXTURE).unwrap();
    let names: Vec<&str> = file.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["w", "h", "q"]);

    // numpy shape (2, 4) is written innermost first: dims [4, 2].
    let w = file.tensor("w").unwrap();
    assert_eq!((w.ggml_type, w.dims.as_slice(), w.offset), (GgmlType::F32, &[4, 2][..], 0));
    let values: Vec<f32> = file.tensor_data(w).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(values, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);

    let h = file.tensor("h").unwrap();
    assert_eq!((h.ggml_type, h.dims.as_slice(), h.offset), (GgmlType::F16, &[3][..], 64));
    // f16 0.0, 1.0, 2.0
    assert_eq!(file.tensor_data(h), [0x00, 0x00, 0x00, 0x3c, 0x00, 0x40]);

    let q = file.tensor("q").unwrap();
    assert_eq!((q.ggml_type, q.dims.as_slice(), q.offset), (GgmlType::Q8_0, &[32, 1][..], 128));
    let block = file.tensor_data(q);
    assert_eq!(block[..2], [0x00, 0x3c]);
    assert!(block[2..].iter().copied().eq(0u8..32));
}

/// Our writer lays files out exactly as gguf-py does.
#[test]
fn rewriting_gguf_py_output_is_byte_identical() {
    let file = GgufFile::open(FIXTURE).unwrap();
    let mut writer = GgufWriter::new();
    for (key, value) in &file.metadata {
        writer.add_kv(key, value.clone());
    }
    for t in &file.tensors {
        writer.add_tensor(&t.name, &t.dims, t.ggml_type, file.tensor_data(t).to_vec());
    }
    assert_eq!(writer.to_bytes().unwrap(), file.bytes());
}
