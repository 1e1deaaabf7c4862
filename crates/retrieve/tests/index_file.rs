//! The vector index file: round trips, and every malformed file is a clear error naming the
//! problem (never a panic): truncated, wrong magic, wrong version, bad dimension, overflowing
//! sizes, id offsets out of order or out of range, text that is not UTF-8.

use kernels::{Level, ThreadPool};
use retrieve::index_file::{HEADER_LEN, MAGIC, MAX_DIM, MAX_MODEL_NAME};
use retrieve::{index_bytes, normalize_rows, top_k_reference, IndexWriter, RetrieveError, VectorIndex};

const DIM: usize = 3;

/// Four vectors (one zero, one not of unit length), ids with an empty one and non-ASCII text.
fn entries() -> Vec<(&'static str, Vec<f32>)> {
    vec![("a", vec![1.0, 0.0, 0.0]), ("", vec![0.0, 0.0, 0.0]), ("δέκα", vec![3.0, 4.0, 0.0]), ("last id", vec![-1.0, 1.0, 1.0])]
}

fn sample() -> Vec<u8> {
    let entries = entries();
    index_bytes(DIM, "all-MiniLM-L6-v2", entries.iter().map(|(id, v)| (*id, v.as_slice()))).unwrap()
}

/// Where the sections of `sample()` start.
fn sections() -> (usize, usize, usize) {
    let vectors_at = (HEADER_LEN + "all-MiniLM-L6-v2".len()).next_multiple_of(64);
    let offsets_at = vectors_at + 4 * DIM * 4;
    (vectors_at, offsets_at, offsets_at + 5 * 8)
}

fn error_of(bytes: &[u8]) -> String {
    match VectorIndex::from_bytes(bytes) {
        Ok(_) => panic!("a malformed index parsed"),
        Err(e) => e.to_string(),
    }
}

fn with_u64(at: usize, value: u64) -> Vec<u8> {
    let mut bytes = sample();
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    bytes
}

fn with_u32(at: usize, value: u32) -> Vec<u8> {
    let mut bytes = sample();
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    bytes
}

#[test]
fn round_trip_keeps_ids_model_and_unit_vectors() {
    let index = VectorIndex::from_bytes(&sample()).unwrap();
    assert_eq!((index.model(), index.dim(), index.len()), ("all-MiniLM-L6-v2", DIM, 4));
    let entries = entries();
    let flat: Vec<f32> = entries.iter().flat_map(|(_, v)| v.clone()).collect();
    assert_eq!(index.vectors(), normalize_rows(&flat, DIM).unwrap());
    for (i, (id, _)) in entries.iter().enumerate() {
        assert_eq!(index.id(i), *id);
    }
    assert_eq!(index.vector(1), [0.0, 0.0, 0.0], "a zero vector stays zero");
    assert_eq!(index.vector(2), [0.6, 0.8, 0.0]);
}

#[test]
fn an_empty_index_round_trips() {
    let bytes = index_bytes(5, "external", []).unwrap();
    let index = VectorIndex::from_bytes(&bytes).unwrap();
    assert!(index.is_empty() && index.vectors().is_empty() && index.model() == "external");
    assert_eq!(index.search(&ThreadPool::new(1), Level::current(), &[1.0; 5], 3).unwrap(), vec![vec![]]);
}

#[test]
fn search_normalizes_the_queries_and_ranks_by_cosine() {
    let index = VectorIndex::from_bytes(&sample()).unwrap();
    let pool = ThreadPool::new(2);
    let queries = [10.0f32, 0.0, 0.0, 0.0, 0.0, 0.0];
    let hits = index.search(&pool, Level::current(), &queries, 4).unwrap();
    assert_eq!(hits[0].iter().map(|h| index.id(h.index)).collect::<Vec<_>>(), ["a", "δέκα", "", "last id"]);
    assert_eq!(hits[0][0].score, 1.0);
    assert_eq!(hits, top_k_reference(index.vectors(), DIM, &normalize_rows(&queries, DIM).unwrap(), 4).unwrap());
    // The zero query scores 0 everywhere: the first rows.
    assert!(hits[1].iter().all(|h| h.score == 0.0));
    assert_eq!(hits[1].iter().map(|h| h.index).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert!(index.search(&pool, Level::current(), &[1.0, 2.0], 1).is_err(), "wrong dimension");
}

#[test]
fn a_file_on_disk_is_mapped_and_errors_name_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docs.idx");
    std::fs::write(&path, sample()).unwrap();
    let index = VectorIndex::open(&path).unwrap();
    assert_eq!(index.id(2), "δέκα");
    std::fs::write(&path, &sample()[..70]).unwrap();
    let err = VectorIndex::open(&path).unwrap_err();
    assert!(err.to_string().starts_with(&path.display().to_string()) && err.to_string().contains("truncated"), "{err}");
    assert!(matches!(err.innermost(), RetrieveError::Length { .. }));
    std::fs::write(&path, b"").unwrap();
    assert!(VectorIndex::open(&path).unwrap_err().to_string().contains("shorter than the 64-byte header"));
    let missing = VectorIndex::open(dir.path().join("nope.idx")).unwrap_err();
    assert!(missing.to_string().contains("nope.idx"), "{missing}");
}

#[test]
fn the_writer_streams_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.idx");
    let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut writer = IndexWriter::new(file, 2, "m").unwrap();
    for i in 0..1000 {
        writer.push(&format!("doc-{i}"), &[i as f32, 1.0]).unwrap();
    }
    writer.finish().unwrap();
    let index = VectorIndex::open(&path).unwrap();
    assert_eq!((index.len(), index.id(999)), (1000, "doc-999"));
}

#[test]
fn the_writer_refuses_what_it_cannot_store() {
    let mut w = IndexWriter::new(std::io::Cursor::new(Vec::new()), 2, "m").unwrap();
    assert!(w.push("x", &[1.0]).unwrap_err().to_string().contains("vector 0: has 1 values, the index has dimension 2"));
    assert!(w.push("x", &[1.0, f32::NAN]).unwrap_err().to_string().contains("value 1 is NaN"));
    assert!(w.push("x", &[f32::INFINITY, 0.0]).unwrap_err().to_string().contains("not a finite number"));
    assert!(IndexWriter::new(std::io::Cursor::new(Vec::new()), 0, "m").is_err());
    assert!(IndexWriter::new(std::io::Cursor::new(Vec::new()), MAX_DIM + 1, "m").is_err());
    assert!(IndexWriter::new(std::io::Cursor::new(Vec::new()), 2, &"m".repeat(MAX_MODEL_NAME + 1)).is_err());
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    let bytes = sample();
    for len in 0..bytes.len() {
        let err = error_of(&bytes[..len]);
        assert!(err.contains("truncated") || err.contains("shorter than"), "cut to {len}: {err}");
    }
}

#[test]
fn extra_bytes_at_the_end_are_an_error() {
    assert!(error_of(&[sample(), vec![0]].concat()).contains("extra bytes at the end"));
}

#[test]
fn wrong_magic_says_what_it_is_not() {
    let mut bytes = sample();
    bytes[..4].copy_from_slice(b"GGUF");
    assert!(error_of(&bytes).contains("not a ferrolm vector index"));
    assert!(error_of(b"{\"id\": 1}").contains("not a ferrolm vector index"), "a short foreign file is named as foreign");
    assert_eq!(&sample()[..8], &MAGIC);
}

#[test]
fn wrong_version_says_to_rebuild() {
    let err = error_of(&with_u32(8, 2));
    assert!(err.contains("version 2") && err.contains("index build"), "{err}");
}

#[test]
fn bad_dimensions_and_name_lengths_are_refused() {
    assert!(error_of(&with_u32(12, 0)).contains("dimension 0"));
    assert!(error_of(&with_u32(12, MAX_DIM as u32 + 1)).contains("outside 1..="));
    assert!(error_of(&with_u32(24, MAX_MODEL_NAME as u32 + 1)).contains("model name of"));
    // A name length that still fits the limit but not the file: the sizes disagree.
    let err = error_of(&with_u32(24, 100));
    assert!(err.contains("but it is 232 bytes: the file is truncated"), "{err}");
}

#[test]
fn sizes_that_overflow_are_refused() {
    let err = error_of(&with_u64(16, u64::MAX / 2));
    assert!(err.contains("do not fit"), "{err}");
    let err = error_of(&with_u64(32, u64::MAX - 10));
    assert!(err.contains("do not fit"), "{err}");
    // Large but representable: a plain length mismatch, with the numbers.
    let err = error_of(&with_u64(16, 1 << 40));
    assert!(err.contains("1099511627776 vectors") && err.contains("truncated"), "{err}");
}

#[test]
fn reserved_bytes_and_padding_must_be_zero() {
    for at in [28, 40, 63, HEADER_LEN + "all-MiniLM-L6-v2".len()] {
        let mut bytes = sample();
        bytes[at] = 1;
        assert!(error_of(&bytes).contains(&format!("reserved header bytes are not zero (byte {at})")), "byte {at}");
    }
}

#[test]
fn text_that_is_not_utf8_is_refused() {
    let mut bytes = sample();
    bytes[HEADER_LEN] = 0xFF;
    assert!(error_of(&bytes).contains("model name is not valid UTF-8"));
    let (_, _, ids_at) = sections();
    let mut bytes = sample();
    bytes[ids_at + 2] = 0xFF; // inside "δέκα", the third id (the second is empty)
    assert!(error_of(&bytes).contains("id 2 is not valid UTF-8"));
}

#[test]
fn id_offsets_out_of_order_or_range_are_refused() {
    let (_, offsets_at, _) = sections();
    // Offsets of the sample: 0, 1, 1, 9, 16.
    assert!(error_of(&with_u64(offsets_at, 1)).contains("id offset 0 is 1, expected 0"));
    let err = error_of(&with_u64(offsets_at + 16, 0));
    assert!(err.contains("id offset 2 is 0, before offset 1 (1): offsets must not decrease"), "{err}");
    assert!(error_of(&with_u64(offsets_at + 24, 99)).contains("id offset 3 is 99, but the ids are 16 bytes"));
    assert!(error_of(&with_u64(offsets_at + 32, 15)).contains("id offset 4 is 15, but the ids are 16 bytes and the last offset must be their end"));
    assert!(error_of(&with_u64(offsets_at + 32, u64::MAX)).contains("id offset 4"));
    // An offset inside a character splits it: the id is not UTF-8.
    let err = error_of(&with_u64(offsets_at + 16, 2));
    assert!(err.contains("id 1 is not valid UTF-8") || err.contains("id 2 is not valid UTF-8"), "{err}");
}
