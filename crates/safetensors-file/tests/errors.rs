//! One named test per way a safetensors file can be wrong: each checks the error variant and that
//! the one-line message says what and where.

use safetensors_file::{serialize, Dtype, SafeTensors, SafetensorsError, MAX_HEADER_LEN};

/// A file from a header written as JSON text and the data after it.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn parse_err(bytes: Vec<u8>) -> SafetensorsError {
    match SafeTensors::from_bytes(bytes) {
        Ok(file) => panic!("expected an error, parsed {file:?}"),
        Err(e) => e,
    }
}

/// Asserts the variant and that the message is one line holding every fragment.
macro_rules! assert_err {
    ($err:expr, $pattern:pat, $($fragment:expr),+) => {{
        let err = $err;
        assert!(matches!(err.innermost(), $pattern), "unexpected variant: {err:?}");
        let message = err.to_string();
        assert!(!message.contains('\n'), "message is not one line: {message}");
        $(assert!(message.contains($fragment), "message {message:?} lacks {:?}", $fragment);)+
    }};
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn a_valid_file_reads_back_in_data_order_with_metadata() {
    let a = f32_bytes(&[1.0, -2.5]);
    let b: Vec<u8> = [1.5f32, -0.25].iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
    let c: Vec<u8> = [3.0f32, -1.0e-3].iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect();
    let ids = 7i64.to_le_bytes();
    let bytes = serialize(
        &[("b", Dtype::F16, &[2], &b), ("a", Dtype::F32, &[1, 2], &a), ("c", Dtype::BF16, &[2], &c), ("ids", Dtype::I64, &[], &ids)],
        &[("format", "pt"), ("author", "us")],
    )
    .unwrap();
    let file = SafeTensors::from_bytes(bytes).unwrap();
    assert_eq!(file.names().collect::<Vec<_>>(), ["b", "a", "c", "ids"], "tensors are listed in data order");
    assert_eq!(file.to_f32_vec("a").unwrap(), [1.0, -2.5]);
    assert_eq!(file.to_f32_vec("b").unwrap(), [1.5, -0.25]);
    assert_eq!(file.to_f32_vec("c").unwrap(), [3.0, f32::from_bits((-1.0e-3f32).to_bits() & 0xffff_0000)]);
    assert_eq!(file.shape("ids").unwrap(), &[] as &[u64], "a scalar has shape []");
    assert_eq!(file.tensor("ids").unwrap().elements(), 1);
    assert_eq!(file.bytes("ids").unwrap(), ids);
    assert_eq!(file.dtype("c").unwrap(), Dtype::BF16);
    assert_eq!(file.metadata(), [("author".to_owned(), "us".to_owned()), ("format".to_owned(), "pt".to_owned())]);
    assert_eq!(file.metadata_value("format"), Some("pt"));
    assert_eq!(file.metadata_value("nothing"), None);
}

#[test]
fn empty_tensors_and_an_empty_file_of_tensors_are_valid() {
    let file = SafeTensors::from_bytes(raw("{}", &[])).unwrap();
    assert_eq!(file.tensors().len(), 0);
    let header = r#"{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"z":{"dtype":"F32","shape":[3,0],"data_offsets":[2,2]}}"#;
    let file = SafeTensors::from_bytes(raw(header, &[1, 2])).unwrap();
    assert_eq!(file.to_f32_vec("e").unwrap(), Vec::<f32>::new());
    assert_eq!(file.bytes("w").unwrap(), [1, 2]);
}

#[test]
fn trailing_spaces_after_the_header_object_are_allowed() {
    let file = SafeTensors::from_bytes(raw(r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}    "#, &[9])).unwrap();
    assert_eq!(file.bytes("w").unwrap(), [9]);
}

#[test]
fn unknown_fields_in_an_entry_are_ignored_as_the_reference_reader_does() {
    let file = SafeTensors::from_bytes(raw(r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"note":1}}"#, &[9])).unwrap();
    assert_eq!(file.bytes("w").unwrap(), [9]);
}

#[test]
fn too_short_for_the_length() {
    assert_err!(parse_err(vec![1, 2, 3]), SafetensorsError::TooShort { len: 3 }, "3 bytes", "not a safetensors file");
    assert_err!(parse_err(vec![]), SafetensorsError::TooShort { len: 0 }, "0 bytes");
}

#[test]
fn header_length_over_the_cap() {
    let mut bytes = (MAX_HEADER_LEN + 1).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert_err!(parse_err(bytes), SafetensorsError::HeaderTooLarge { .. }, "100000001", "limit of 100000000");
    assert_err!(parse_err(u64::MAX.to_le_bytes().to_vec()), SafetensorsError::HeaderTooLarge { .. }, "18446744073709551615");
}

#[test]
fn header_length_past_the_end_of_the_file() {
    let mut bytes = raw("{}", &[]);
    bytes[0] = 3;
    assert_err!(parse_err(bytes), SafetensorsError::HeaderPastEnd { len: 3, available: 2 }, "header length 3", "truncated");
}

#[test]
fn header_not_utf8() {
    assert_err!(
        parse_err(raw("{\"\u{e9}\":1}", &[]).into_iter().map(|b| if b == 0xc3 { 0xff } else { b }).collect()),
        SafetensorsError::HeaderNotUtf8 { offset: 2 },
        "UTF-8"
    );
}

#[test]
fn header_that_does_not_start_with_a_brace() {
    assert_err!(parse_err(raw(" {}", &[])), SafetensorsError::HeaderStart { .. }, "expected '{'");
    assert_err!(parse_err(raw("[1, 2]", &[])), SafetensorsError::HeaderStart { .. }, "\"[1, 2]\"");
}

#[test]
fn header_that_is_not_json_or_has_more_after_the_object() {
    assert_err!(parse_err(raw("{\"w\": ", &[])), SafetensorsError::HeaderJson { .. }, "not a JSON object");
    assert_err!(parse_err(raw("{}{}", &[])), SafetensorsError::HeaderJson { .. }, "trailing characters");
    assert_err!(parse_err(raw("{}\0\0", &[])), SafetensorsError::HeaderJson { .. }, "not a JSON object");
}

#[test]
fn duplicate_names_are_refused_not_silently_merged() {
    let header = r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
    assert_err!(parse_err(raw(header, &[1, 2])), SafetensorsError::DuplicateName { .. }, "'w' twice");
    let header = r#"{"__metadata__":{},"__metadata__":{}}"#;
    assert_err!(parse_err(raw(header, &[])), SafetensorsError::DuplicateName { .. }, "__metadata__");
}

#[test]
fn entry_that_is_not_an_object() {
    assert_err!(parse_err(raw(r#"{"w":[1,2]}"#, &[])), SafetensorsError::Field { field: "entry", .. }, "tensor 'w'", "the array [1,2]");
}

#[test]
fn missing_fields_are_named() {
    for (field, header) in [
        ("dtype", r#"{"w":{"shape":[1],"data_offsets":[0,1]}}"#),
        ("shape", r#"{"w":{"dtype":"U8","data_offsets":[0,1]}}"#),
        ("data_offsets", r#"{"w":{"dtype":"U8","shape":[1]}}"#),
    ] {
        assert_err!(parse_err(raw(header, &[0])), SafetensorsError::Field { .. }, "tensor 'w'", &format!("{field} is missing"));
    }
}

#[test]
fn fields_of_the_wrong_form() {
    let cases = [
        (r#"{"w":{"dtype":32,"shape":[1],"data_offsets":[0,1]}}"#, "dtype is the number 32"),
        (r#"{"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#, "shape is the array [-1]"),
        (r#"{"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}"#, "shape is the array [1.5]"),
        (r#"{"w":{"dtype":"U8","shape":"1","data_offsets":[0,1]}}"#, "shape is the string \"1\""),
        (r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}}"#, "data_offsets is the array [0]"),
        (r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}"#, "data_offsets is the array [0,1,2]"),
        (r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":null}}"#, "data_offsets is null"),
        (r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551616]}}"#, "data_offsets is the array"),
    ];
    for (header, fragment) in cases {
        assert_err!(parse_err(raw(header, &[0])), SafetensorsError::Field { .. }, "tensor 'w'", fragment);
    }
}

#[test]
fn unknown_dtype_lists_the_known_ones() {
    let header = r#"{"w":{"dtype":"Q4_0","shape":[1],"data_offsets":[0,1]}}"#;
    assert_err!(parse_err(raw(header, &[0])), SafetensorsError::UnknownDtype { .. }, "tensor 'w'", "\"Q4_0\"", "BF16", "F8_E4M3");
}

#[test]
fn element_count_overflow() {
    let header = r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#;
    assert_err!(parse_err(raw(header, &[0; 4])), SafetensorsError::SizeOverflow { .. }, "tensor 'w'", "overflows");
    // The element count fits but the byte count does not.
    let header = r#"{"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}}"#;
    assert_err!(parse_err(raw(header, &[0; 8])), SafetensorsError::SizeOverflow { .. }, "tensor 'w'");
}

#[test]
fn packed_small_floats_must_fill_whole_bytes() {
    let header = r#"{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#;
    assert_err!(parse_err(raw(header, &[0; 2])), SafetensorsError::PartialBytes { .. }, "tensor 'w'", "3 elements of F4");
    let header = r#"{"w":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[0,3]}}"#;
    assert_eq!(SafeTensors::from_bytes(raw(header, &[0; 3])).unwrap().bytes("w").unwrap().len(), 3);
}

#[test]
fn reversed_offsets() {
    let header = r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[2,1]}}"#;
    assert_err!(parse_err(raw(header, &[0; 2])), SafetensorsError::ReversedOffsets { begin: 2, end: 1, .. }, "tensor 'w'", "[2, 1]");
}

#[test]
fn byte_length_must_match_shape_and_dtype() {
    let header = r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#;
    assert_err!(parse_err(raw(header, &[0; 20])), SafetensorsError::SizeMismatch { expected: 24, .. }, "tensor 'w'", "needs 24 bytes", "span 20");
}

#[test]
fn a_gap_between_tensors() {
    let header = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}"#;
    assert_err!(
        parse_err(raw(header, &[0; 3])),
        SafetensorsError::NotContiguous { begin: 2, expected: 1, .. },
        "tensor 'b'",
        "'a'",
        "no gap or overlap"
    );
}

#[test]
fn a_first_tensor_that_does_not_start_at_zero() {
    let header = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
    assert_err!(
        parse_err(raw(header, &[0; 2])),
        SafetensorsError::NotContiguous { begin: 1, expected: 0, previous: None, .. },
        "tensor 'a'",
        "begins at 0"
    );
}

#[test]
fn overlapping_tensors() {
    let header = r#"{"a":{"dtype":"U16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"U16","shape":[1],"data_offsets":[2,4]}}"#;
    assert_err!(parse_err(raw(header, &[0; 4])), SafetensorsError::NotContiguous { .. }, "no gap or overlap");
    let header = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
    assert_err!(parse_err(raw(header, &[0; 2])), SafetensorsError::NotContiguous { .. }, "no gap or overlap");
}

#[test]
fn data_past_the_end_of_the_file_is_truncation() {
    let header = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    assert_err!(parse_err(raw(header, &[0; 12])), SafetensorsError::DataLength { covered: 16, data_len: 12 }, "truncated");
}

#[test]
fn bytes_after_the_last_tensor_are_refused() {
    let header = r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
    assert_err!(parse_err(raw(header, &[0; 5])), SafetensorsError::DataLength { covered: 1, data_len: 5 }, "extra bytes");
}

#[test]
fn metadata_must_be_an_object_of_strings() {
    assert_err!(parse_err(raw(r#"{"__metadata__":{"format":1}}"#, &[])), SafetensorsError::Metadata { .. }, "key 'format' holds the number 1");
    assert_err!(
        parse_err(raw(r#"{"__metadata__":"pt"}"#, &[])),
        SafetensorsError::Metadata { .. },
        "is the string \"pt\"",
        "object of string values"
    );
}

#[test]
fn unknown_tensor_names_the_nearest_and_the_file() {
    let dir = std::env::temp_dir().join(format!("safetensors-file-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, serialize(&[("encoder.w", Dtype::I32, &[1], &[0; 4])], &[]).unwrap()).unwrap();
    let file = SafeTensors::open(&path).unwrap();
    assert_err!(
        file.tensor("w").unwrap_err(),
        SafetensorsError::NotFound { .. },
        "model.safetensors",
        "no tensor named 'w'",
        "did you mean 'encoder.w'"
    );
    assert_err!(
        file.to_f32_vec("encoder.w").unwrap_err(),
        SafetensorsError::NotF32 { dtype: Dtype::I32, .. },
        "model.safetensors",
        "'encoder.w'",
        "I32",
        "only F32, F16 and BF16"
    );
    std::fs::write(&path, b"{}").unwrap();
    assert_err!(SafeTensors::open(&path).unwrap_err(), SafetensorsError::TooShort { .. }, "model.safetensors:");
    std::fs::remove_dir_all(&dir).unwrap();
    assert_err!(SafeTensors::open(&path).unwrap_err(), SafetensorsError::Io { .. }, "model.safetensors");
}

#[test]
fn the_writer_refuses_bytes_that_do_not_match_the_shape() {
    assert_err!(
        serialize(&[("w", Dtype::F32, &[3], &[0; 8])], &[]).unwrap_err(),
        SafetensorsError::WriteSize { expected: 12, got: 8, .. },
        "tensor 'w'"
    );
}
