//! Token-exact check of the SmolLM2 tokenizer against llama.cpp on a varied corpus.
//!
//! The fixture (tests/fixtures/tokenizer_golden.jsonl, made by tools/make_tokenizer_fixtures.py)
//! holds llama.cpp's ids for each document, with special-token parsing on or off. Where Hugging
//! Face `tokenizers` disagrees (only inside pieces that contain a byte missing from the vocabulary:
//! HF merges across the gap, llama.cpp does not) the line also holds "hf_ids"; we follow llama.cpp.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use proptest::prelude::*;
use serde::Deserialize;
use tokenizer::byte_level::byte_to_char;
use tokenizer::Tokenizer;

#[derive(Deserialize)]
struct Doc {
    text: String,
    special: bool,
    ids: Vec<u32>,
    #[serde(default)]
    hf_ids: Option<Vec<u32>>,
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizer_golden.jsonl")
}

fn load_docs() -> Vec<Doc> {
    let path = fixture_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines().enumerate().map(|(i, line)| serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", i + 1))).collect()
}

fn load_tokenizer() -> Option<Tokenizer> {
    let path = model::paths::model_for_tests()?;
    let file = gguf::GgufFile::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    Some(model::tokenizer_gguf::tokenizer_from_gguf(&file).expect("the model's tokenizer builds"))
}

/// Whether every byte of `text` has a byte token, so that decoding can give `text` back.
fn all_bytes_in_vocab(tok: &Tokenizer, text: &str) -> bool {
    text.bytes().all(|b| tok.token_to_id(&byte_to_char(b).to_string()).is_some())
}

fn show(tok: &Tokenizer, ids: &[u32]) -> String {
    let pieces: Vec<String> = ids.iter().map(|&id| format!("{id}:{:?}", tok.id_to_token(id).unwrap_or("?"))).collect();
    pieces.join(" ")
}

#[test]
fn encode_matches_llama_cpp_on_every_golden_doc() {
    let Some(tok) = load_tokenizer() else { return };
    let docs = load_docs();
    assert!(docs.len() >= 200, "fixture has only {} docs", docs.len());
    let mut mismatches = 0;
    let mut first_report = None;
    for (index, doc) in docs.iter().enumerate() {
        let ours = tok.encode(&doc.text, doc.special);
        if ours == doc.ids {
            continue;
        }
        mismatches += 1;
        if first_report.is_none() {
            let at = ours.iter().zip(&doc.ids).position(|(a, b)| a != b).unwrap_or(ours.len().min(doc.ids.len()));
            let from = at.saturating_sub(3);
            let text_at: usize = doc.ids[..at.min(doc.ids.len())].iter().map(|&id| tok.token_bytes(id).map_or(0, <[u8]>::len)).sum();
            first_report = Some(format!(
                "doc #{index} (special={}) first differs at token {at} (byte ~{text_at}):\n  ours:      {}\n  llama.cpp: {}\n  text near there: {:?}",
                doc.special,
                show(&tok, &ours[from..(at + 4).min(ours.len())]),
                show(&tok, &doc.ids[from..(at + 4).min(doc.ids.len())]),
                String::from_utf8_lossy(&doc.text.as_bytes()[text_at.saturating_sub(20).min(doc.text.len())..(text_at + 40).min(doc.text.len())]),
            ));
        }
    }
    assert_eq!(mismatches, 0, "{mismatches} of {} docs differ; first:\n{}", docs.len(), first_report.unwrap_or_default());
}

#[test]
fn decode_gives_back_every_golden_doc_whose_bytes_are_in_the_vocab() {
    let Some(tok) = load_tokenizer() else { return };
    let mut checked = 0;
    for (index, doc) in load_docs().iter().enumerate() {
        if !all_bytes_in_vocab(&tok, &doc.text) {
            continue;
        }
        // With special parsing on, control tokens came from the text, so render them back.
        assert_eq!(tok.decode(&doc.ids, doc.special), doc.text, "doc #{index} (special={})", doc.special);
        checked += 1;
    }
    assert!(checked >= 200, "only {checked} docs were checked");
}

#[test]
fn hugging_face_mode_gives_hugging_face_ids_on_every_golden_doc() {
    let Some(tok) = load_tokenizer() else { return };
    let hf = tok.clone().with_missing_bytes(tokenizer::MissingBytes::Drop);
    let mut compared = 0;
    for (index, doc) in load_docs().iter().enumerate() {
        // The fixture stores HF's ids only where they differ from llama.cpp's.
        let want = doc.hf_ids.as_ref().unwrap_or(&doc.ids);
        let got = hf.encode(&doc.text, doc.special);
        assert_eq!(&got, want, "doc #{index} {:?}", doc.text.chars().take(60).collect::<String>());
        compared += 1;
        // Trap: both modes in one thread share nothing through the per-thread word cache.
        assert_eq!(tok.encode(&doc.text, doc.special), doc.ids, "barrier mode after drop mode, doc #{index}");
    }
    assert!(compared > 300, "{compared}");
}

#[test]
fn peers_disagree_only_on_docs_with_missing_byte_tokens() {
    let Some(tok) = load_tokenizer() else { return };
    for (index, doc) in load_docs().iter().enumerate() {
        if doc.hf_ids.as_ref().is_some_and(|hf| *hf != doc.ids) {
            assert!(!all_bytes_in_vocab(&tok, &doc.text), "doc #{index}: peers disagree on a fully encodable text");
        }
    }
}

#[test]
fn missing_byte_is_dropped_without_merging_across_the_gap_on_the_real_vocab() {
    let Some(tok) = load_tokenizer() else { return };
    assert_eq!(tok.encode("a\x04b", true), [81, 82]);
    assert_eq!(tok.encode("ab", true), [369]);
    assert!(tok.encode("\x04\x04", true).is_empty());
}

#[test]
fn real_vocab_special_tokens_and_flags() {
    let Some(tok) = load_tokenizer() else { return };
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!((tok.bos_id(), tok.eos_id(), tok.add_bos()), (Some(1), Some(2), false));
    assert_eq!(tok.encode("<|im_start|>user", true)[0], 1);
    assert_ne!(tok.encode("<|im_start|>user", false)[0], 1);
    assert!(tok.is_end_of_generation(2));
}

/// The real tokenizer, loaded once for the property test (None when the model is absent).
fn shared_tokenizer() -> Option<&'static Tokenizer> {
    static TOKENIZER: OnceLock<Option<Tokenizer>> = OnceLock::new();
    TOKENIZER.get_or_init(load_tokenizer).as_ref()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn decode_inverts_encode_on_the_real_vocab(text in any::<String>()) {
        let Some(tok) = shared_tokenizer() else { return Ok(()) };
        prop_assume!(all_bytes_in_vocab(tok, &text));
        prop_assert_eq!(tok.decode(&tok.encode(&text, false), false), text.clone());
        prop_assert_eq!(tok.decode(&tok.encode(&text, true), true), text);
    }
}

/// Throughput on the whole golden corpus; run with
/// `cargo test --release -p model --test golden_tokenizer -- --ignored --nocapture`.
#[test]
#[ignore = "timing, not a check"]
fn encode_throughput() {
    let Some(tok) = load_tokenizer() else { return };
    let docs = load_docs();
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    let tokens: usize = docs.iter().map(|d| d.ids.len()).sum();
    let rounds = 20;
    let start = Instant::now();
    let mut produced = 0;
    for _ in 0..rounds {
        for doc in &docs {
            produced += tok.encode(&doc.text, doc.special).len();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(produced, tokens * rounds);
    let start = Instant::now();
    let mut pieces = 0;
    for _ in 0..rounds {
        for doc in &docs {
            pieces += tok.pre_tokenizer().expect("byte-level BPE").pieces(&doc.text).count();
        }
    }
    let scan_secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{} docs, {tokens} tokens, {bytes} bytes: encode {:.1} MB/s ({:.2} M tokens/s); pre-tokenizer alone {:.1} MB/s ({} pieces)",
        docs.len(),
        (bytes * rounds) as f64 / secs / 1e6,
        (tokens * rounds) as f64 / secs / 1e6,
        (bytes * rounds) as f64 / scan_secs / 1e6,
        pieces / rounds,
    );
}

#[test]
fn offsets_cover_every_golden_doc_except_missing_bytes() {
    let Some(tok) = shared_tokenizer() else { return };
    let mut checked = 0;
    for doc in load_docs() {
        let (ids, offsets) = tok.encode_with_offsets(&doc.text, doc.special);
        assert_eq!(ids, tok.encode(&doc.text, doc.special));
        assert_eq!(offsets.len(), ids.len());
        let bytes = doc.text.as_bytes();
        let mut covered = vec![false; bytes.len()];
        let mut last = 0;
        for (&id, &(start, end)) in ids.iter().zip(&offsets) {
            assert!(last <= start && start <= end && end <= bytes.len(), "spans in order and inside the text");
            // Each span holds exactly its token's bytes.
            assert_eq!(&bytes[start..end], tok.token_bytes(id).unwrap(), "{:?}", doc.text);
            covered[start..end].iter_mut().for_each(|c| *c = true);
            last = end;
        }
        // What no span covers are bytes without a byte token (barriers that encode to nothing).
        for (i, c) in covered.iter().enumerate() {
            if !c {
                assert!(tok.token_to_id(&byte_to_char(bytes[i]).to_string()).is_none(), "byte {i} of {:?} uncovered", doc.text);
            }
        }
        checked += 1;
    }
    assert!(checked > 300);
}

#[test]
fn batch_encoding_on_threads_equals_one_by_one() {
    let Some(tok) = shared_tokenizer() else { return };
    let texts: Vec<String> = load_docs().into_iter().map(|d| d.text).collect();
    let want: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t, true)).collect();
    for threads in [1, 2, 3, 7] {
        assert_eq!(tok.encode_batch(&texts, true, threads), want, "{threads} threads");
    }
    assert!(tok.encode_batch::<&str>(&[], true, 4).is_empty());
    assert_eq!(tok.encode_batch(&["a"], true, 4), vec![tok.encode("a", true)]);
}

#[test]
fn offsets_skip_any_run_of_bytes_without_a_token() {
    let Some(tok) = shared_tokenizer() else { return };
    // \x04 has no token in SmolLM2's vocabulary: 70 of them encode to nothing.
    let text = format!("a{} b c", "\x04".repeat(70));
    let (ids, offsets) = tok.encode_with_offsets(&text, false);
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(offsets, vec![(0, 1), (71, 73), (73, 75)]);
}
