//! The index reader must reject, never panic on, damaged input, and whatever it accepts must be
//! readable in full (every id, every vector, a search).

use kernels::{Level, ThreadPool};
use proptest::prelude::*;
use retrieve::npy::NpyReader;
use retrieve::{index_bytes, VectorIndex};

fn sample_bytes() -> Vec<u8> {
    let vectors: Vec<Vec<f32>> = (0..5).map(|i| vec![i as f32, 1.0 - i as f32, 0.5]).collect();
    let ids = ["zero", "one", "", "three", "vier"];
    index_bytes(3, "model", ids.iter().zip(&vectors).map(|(id, v)| (*id, v.as_slice()))).unwrap()
}

fn exercise(index: &VectorIndex) {
    for i in 0..index.len() {
        let _ = index.id(i);
        assert_eq!(index.vector(i).len(), index.dim());
    }
    let hits = index.search(&ThreadPool::new(1), Level::current(), &vec![1.0; index.dim()], 3).unwrap();
    assert_eq!(hits[0].len(), 3.min(index.len()));
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
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        bytes.extend_from_slice(&tail);
        if let Ok(index) = VectorIndex::from_bytes(&bytes) {
            exercise(&index);
        }
    }

    #[test]
    fn random_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), magic in any::<bool>()) {
        let mut bytes = bytes;
        if magic && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(b"FERROVEC");
        }
        if let Ok(index) = VectorIndex::from_bytes(&bytes) {
            exercise(&index);
        }
    }

    #[test]
    fn npy_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), header in any::<bool>()) {
        let mut bytes = bytes;
        if header {
            let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
            b.extend_from_slice(dict.as_bytes());
            b.extend_from_slice(&bytes);
            bytes = b;
        }
        for len in [Some(bytes.len() as u64), None] {
            if let Ok(mut reader) = NpyReader::new(&bytes[..], len) {
                let _ = reader.read_all();
            }
        }
    }
}

#[test]
fn the_sample_parses() {
    exercise(&VectorIndex::from_bytes(&sample_bytes()).unwrap());
}
