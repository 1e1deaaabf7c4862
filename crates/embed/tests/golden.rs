//! all-MiniLM-L6-v2 against sentence-transformers: tests/fixtures/embed/minilm_embeddings.json,
//! made by tools/make_embedding_fixture.py (its docstring has the command and the format).
//!
//! The model is fetched on first use (see `embed::fetch`); without network the tests are
//! skipped with a message, except under CI or with FERROLM_REQUIRE_MODEL set, where they fail.

use std::path::PathBuf;

use embed::{Pooling, Precision, SentenceEmbedder};
use kernels::{Level, ThreadPool};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    model_sha256: String,
    max_seq_length: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn fixture() -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/embed/minilm_embeddings.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The model in the precision this machine picks by default (bf16 where AMX runs it).
fn model() -> Option<SentenceEmbedder> {
    let dir = embed::fetch::model_for_tests()?;
    Some(SentenceEmbedder::load(&dir).unwrap_or_else(|e| panic!("{e}")))
}

/// The model in every precision this machine runs: f32, and bf16 where AMX runs it.
fn models() -> Vec<SentenceEmbedder> {
    let Some(dir) = embed::fetch::model_for_tests() else { return vec![] };
    let mut precisions = vec![Precision::F32];
    if kernels::bf16mat::amx_available() {
        precisions.push(Precision::Bf16);
    } else {
        eprintln!("no AMX here: the bf16 precision is not checked against sentence-transformers");
    }
    precisions.into_iter().map(|p| SentenceEmbedder::load_with(&dir, p).unwrap_or_else(|e| panic!("{e}"))).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| *x as f64 * *x as f64).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| *x as f64 * *x as f64).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_matches_sentence_transformers() {
    let fixture = fixture();
    for model in models() {
        let precision = model.bert().precision();
        assert_eq!((model.max_seq_length(), model.pooling(), model.normalizes(), model.dim()), (fixture.max_seq_length, Pooling::Mean, true, 384));
        let texts: Vec<&str> = fixture.cases.iter().map(|c| c.text.as_str()).collect();
        let pool = ThreadPool::new(2);
        let got = model.embed(&pool, &texts).unwrap();
        let mut worst = (f64::INFINITY, "");
        for (case, emb) in fixture.cases.iter().zip(&got) {
            // The ids first: a tokenizer or truncation difference would show up as a low cosine.
            assert_eq!(model.tokenize(&case.text), case.ids, "ids of {:?}", case.text);
            let c = cosine(emb, &case.embedding);
            let norm: f64 = emb.iter().map(|x| *x as f64 * *x as f64).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{:?}: norm {norm}", case.text);
            if c < worst.0 {
                worst = (c, &case.text);
            }
        }
        let short: String = worst.1.chars().take(40).collect();
        eprintln!("{}: minimum cosine over {} texts: 1 - {:.3e} ({short:?})", precision.name(), fixture.cases.len(), 1.0 - worst.0);
        assert!(worst.0 >= 0.9999, "{}: cosine {} for {short:?}", precision.name(), worst.0);
    }
}

#[test]
fn the_fetched_weights_are_the_fixtures() {
    // The fixture was made from these exact bytes; a different file would make the golden test
    // meaningless (or fail for the wrong reason).
    let Some(dir) = embed::fetch::model_for_tests() else { return };
    if std::env::var_os("FERROLM_EMBED_MODEL").is_some() {
        return; // another model on purpose
    }
    use sha2::Digest;
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let digest: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, fixture().model_sha256);
}

#[test]
fn minilm_batch_equals_singles_bit_for_bit() {
    let Some(model) = model() else { return };
    let fixture = fixture();
    // Long (truncated) texts next to one-word and empty ones, across batch splits and threads.
    let sequences: Vec<Vec<u32>> = fixture.cases.iter().map(|c| c.ids.clone()).collect();
    let level = Level::best_available();
    let singles: Vec<Vec<f32>> =
        sequences.iter().map(|s| model.embed_ids(&ThreadPool::new(1), level, std::slice::from_ref(s), 1).unwrap().remove(0)).collect();
    for (threads, budget) in [(2, embed::TOKEN_BUDGET), (3, 300)] {
        let batch = model.embed_ids(&ThreadPool::new(threads), level, &sequences, budget).unwrap();
        for (i, (b, s)) in batch.iter().zip(&singles).enumerate() {
            assert!(b.iter().zip(s).all(|(x, y)| x.to_bits() == y.to_bits()), "text {i}, {threads} threads, budget {budget}");
        }
    }
}

#[test]
fn minilm_scalar_kernels_agree_with_simd() {
    // The AVX2 path is bit-identical to the scalar one in every kernel but none of them is
    // allowed to drift: check end to end on a few texts.
    let Some(model) = model() else { return };
    let fixture = fixture();
    let sequences: Vec<Vec<u32>> = fixture.cases.iter().take(6).map(|c| c.ids.clone()).collect();
    let pool = ThreadPool::new(2);
    let scalar = model.embed_ids(&pool, Level::Scalar, &sequences, embed::TOKEN_BUDGET).unwrap();
    for level in Level::all_available() {
        assert_eq!(model.embed_ids(&pool, level, &sequences, embed::TOKEN_BUDGET).unwrap(), scalar, "{level:?}");
    }
}

#[test]
fn similar_sentences_are_closer_than_unrelated_ones() {
    let Some(model) = model() else { return };
    let e =
        model.embed(&ThreadPool::new(2), &["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]).unwrap();
    assert!(cosine(&e[0], &e[1]) > cosine(&e[0], &e[2]) + 0.3, "{} vs {}", cosine(&e[0], &e[1]), cosine(&e[0], &e[2]));
}
