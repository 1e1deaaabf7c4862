//! The parser must reject, never panic on, damaged input: every truncation of a valid file,
//! random byte overwrites, and random garbage.

mod common;

use common::sample_bytes;
use gguf::GgufFile;
use proptest::prelude::*;

/// What a caller does with a file that parsed: every key and tensor must be reachable and
/// every tensor's bytes must be exactly `n_bytes` long.
fn exercise(file: &GgufFile) {
    for (key, value) in &file.metadata {
        // Identity, not equality: a planted NaN is a valid value but not equal to itself.
        assert!(file.get(key).is_some_and(|got| std::ptr::eq(got, value)), "key {key}");
    }
    for info in &file.tensors {
        assert_eq!(file.tensor(&info.name).map(|t| t.offset), Some(info.offset));
        assert_eq!(file.tensor_data(info).len() as u64, info.n_bytes);
    }
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    let bytes = sample_bytes();
    let full = GgufFile::from_bytes(bytes.clone()).expect("the whole file parses");
    exercise(&full);
    for len in 0..bytes.len() {
        let result = GgufFile::from_bytes(bytes[..len].to_vec());
        assert!(result.is_err(), "a file cut to {len} of {} bytes parsed", bytes.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

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
        if let Ok(file) = GgufFile::from_bytes(bytes) {
            exercise(&file);
        }
    }

    #[test]
    fn overwritten_u64_fields_never_panic(at in any::<prop::sample::Index>(), value in any::<u64>()) {
        // Counts, lengths, dims and offsets are u64s: plant extreme values anywhere.
        let mut bytes = sample_bytes();
        let i = at.index(bytes.len() - 8);
        bytes[i..i + 8].copy_from_slice(&value.to_le_bytes());
        if let Ok(file) = GgufFile::from_bytes(bytes) {
            exercise(&file);
        }
    }

    #[test]
    fn random_garbage_never_panics(garbage in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(GgufFile::from_bytes(garbage.clone()).is_err() || garbage.starts_with(b"GGUF"));
        // The same garbage behind a valid magic and version reaches the deeper parser.
        let mut bytes = b"GGUF\x03\0\0\0".to_vec();
        bytes.extend_from_slice(&garbage);
        if let Ok(file) = GgufFile::from_bytes(bytes) {
            exercise(&file);
        }
    }
}
