//! The parser must reject, never panic on, damaged input: every truncation of a valid file,
//! random byte overwrites, forged lengths and offsets, and random garbage.

use proptest::prelude::*;
use safetensors_file::{serialize, Dtype, SafeTensors};

/// A small valid file: several dtypes, a scalar, an empty tensor and metadata.
fn sample_bytes() -> Vec<u8> {
    let f32s: Vec<u8> = (0..12).flat_map(|i| (i as f32 * 0.5 - 2.0).to_le_bytes()).collect();
    let f16s: Vec<u8> = (0..6).flat_map(|i| half::f16::from_f32(i as f32).to_le_bytes()).collect();
    let bf16s: Vec<u8> = (0..4).flat_map(|i| ((i as f32).to_bits() >> 16).to_le_bytes()[..2].to_vec()).collect();
    let ids: Vec<u8> = (0..3i64).flat_map(|i| i.to_le_bytes()).collect();
    serialize(
        &[
            ("w", Dtype::F32, &[3, 4], &f32s),
            ("h", Dtype::F16, &[2, 3], &f16s),
            ("b", Dtype::BF16, &[4], &bf16s),
            ("ids", Dtype::I64, &[1, 3], &ids),
            ("empty", Dtype::F32, &[0], &[]),
            ("s", Dtype::U8, &[], &[7]),
        ],
        &[("format", "pt")],
    )
    .unwrap()
}

/// What a caller does with a file that parsed: every tensor must be reachable, its bytes exactly
/// its size, and its conversion to f32 either right-sized or an error.
fn exercise(file: &SafeTensors) {
    for info in file.tensors() {
        let bytes = file.bytes(&info.name).unwrap();
        assert_eq!((bytes.len() as u64) * 8, info.elements() * info.dtype.bits());
        match file.to_f32_vec(&info.name) {
            Ok(values) => assert_eq!(values.len() as u64, info.elements()),
            Err(_) => assert!(!info.dtype.reads_as_f32()),
        }
    }
    let _ = file.metadata();
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    let bytes = sample_bytes();
    exercise(&SafeTensors::from_bytes(bytes.clone()).expect("the whole file parses"));
    for len in 0..bytes.len() {
        assert!(SafeTensors::from_bytes(bytes[..len].to_vec()).is_err(), "a file cut to {len} of {} bytes parsed", bytes.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn overwritten_bytes_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
        tail in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut bytes = sample_bytes();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        bytes.extend_from_slice(&tail);
        if let Ok(file) = SafeTensors::from_bytes(bytes) {
            exercise(&file);
        }
    }

    #[test]
    fn edited_header_text_never_panics(at in any::<prop::sample::Index>(), text in "[0-9\\[\\]{},:\"A-Z_ -]{0,12}", remove in 0usize..6) {
        // Edits that keep the header JSON-like reach the validation of entries and offsets; the
        // length prefix is rewritten to match the new header.
        let bytes = sample_bytes();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
        let i = at.index(header.len());
        let end = (i + remove).min(header.len());
        header.replace_range(i..end, &text);
        let mut edited = (header.len() as u64).to_le_bytes().to_vec();
        edited.extend_from_slice(header.as_bytes());
        edited.extend_from_slice(&bytes[8 + header_len..]);
        if let Ok(file) = SafeTensors::from_bytes(edited) {
            exercise(&file);
        }
    }

    #[test]
    fn forged_numbers_in_the_header_never_panic(which in any::<prop::sample::Index>(), value in prop_oneof![any::<u64>(), 0u64..300]) {
        // Replace one number of the header (a shape or an offset) with another.
        let bytes = sample_bytes();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
        let numbers: Vec<(usize, usize)> = {
            let b = header.as_bytes();
            let mut spans = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric() && b[i - 1] != b'_') {
                    let start = i;
                    while i < b.len() && b[i].is_ascii_digit() { i += 1; }
                    spans.push((start, i));
                } else {
                    i += 1;
                }
            }
            spans
        };
        let (start, end) = numbers[which.index(numbers.len())];
        let mut header = header;
        header.replace_range(start..end, &value.to_string());
        let mut edited = (header.len() as u64).to_le_bytes().to_vec();
        edited.extend_from_slice(header.as_bytes());
        edited.extend_from_slice(&bytes[8 + header_len..]);
        if let Ok(file) = SafeTensors::from_bytes(edited) {
            exercise(&file);
        }
    }

    #[test]
    fn random_garbage_never_panics(garbage in prop::collection::vec(any::<u8>(), 0..512), len in 0u64..600) {
        let _ = SafeTensors::from_bytes(garbage.clone());
        // The same garbage behind a plausible header length reaches the JSON parser.
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.push(b'{');
        bytes.extend_from_slice(&garbage);
        if let Ok(file) = SafeTensors::from_bytes(bytes) {
            exercise(&file);
        }
    }
}
