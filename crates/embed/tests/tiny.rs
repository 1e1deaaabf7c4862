//! The encoder, pooling and batching on a tiny random BERT (tests/common): no download needed.
//! Checked against a plain f64 BERT, and for the equivalences a batch must keep.

mod common;

use common::*;
use embed::{EmbedError, Precision, SentenceEmbedder};
use kernels::{Level, ThreadPool};

/// The f32 model: these tests check the math against an f64 definition to 1e-4.
fn load(dir: &std::path::Path) -> SentenceEmbedder {
    SentenceEmbedder::load_with(dir, Precision::F32).unwrap_or_else(|e| panic!("{e}"))
}

const TEXTS: [&str; 6] = [
    "Hello, world!",
    "",
    "a much longer text that runs past the twelve tokens of the tiny model's max_seq_length for sure",
    "東京",
    "x",
    "The girl is carrying a baby.",
];

#[test]
fn hidden_states_match_the_definition_in_f64() {
    // Post-norm order, biased variance, eps inside the root, erf GELU, bidirectional attention,
    // (word + type) + position: any slip moves these by far more than 1e-4.
    let dir = tiny_model();
    let model = load(dir.path());
    let weights = tiny_weights();
    let pool = ThreadPool::new(2);
    for text in TEXTS {
        let ids = model.tokenize(text);
        let mut hidden = vec![0f32; ids.len() * D];
        model.bert().forward(&pool, Level::best_available(), &ids, &[0, ids.len()], &mut hidden).unwrap();
        let want = reference_bert(&weights, &ids);
        for (t, row) in want.iter().enumerate() {
            for (i, w) in row.iter().enumerate() {
                let got = hidden[t * D + i] as f64;
                assert!((got - w).abs() < 1e-4, "{text:?} token {t} dim {i}: {got} vs {w}");
            }
        }
    }
}

#[test]
fn embedding_is_the_normalized_mean_of_the_texts_own_tokens() {
    // Mean pooling over real tokens only: a short text batched with a long one is averaged over
    // its own rows, not over the longest text's length.
    let dir = tiny_model();
    let model = load(dir.path());
    let weights = tiny_weights();
    let pool = ThreadPool::new(2);
    let got = model.embed(&pool, &["x", TEXTS[2]]).unwrap();
    for (text, got) in ["x", TEXTS[2]].iter().zip(&got) {
        let hidden = reference_bert(&weights, &model.tokenize(text));
        let mean: Vec<f64> = (0..D).map(|i| hidden.iter().map(|r| r[i]).sum::<f64>() / hidden.len() as f64).collect();
        let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (g, m) in got.iter().zip(&mean) {
            assert!((*g as f64 - m / norm).abs() < 1e-4, "{text:?}: {g} vs {}", m / norm);
        }
    }
}

#[test]
fn batch_equals_singles_bit_for_bit() {
    let dir = tiny_model();
    let model = load(dir.path());
    let sequences: Vec<Vec<u32>> = TEXTS.iter().map(|t| model.tokenize(t)).collect();
    let singles: Vec<Vec<f32>> =
        sequences.iter().map(|s| model.embed_ids(&ThreadPool::new(1), Level::Scalar, std::slice::from_ref(s), 1).unwrap().remove(0)).collect();
    for level in Level::all_available() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            // Budgets: one text per batch, a few, all at once.
            for budget in [1, 20, 10_000] {
                let batch = model.embed_ids(&pool, level, &sequences, budget).unwrap();
                for (i, (b, s)) in batch.iter().zip(&singles).enumerate() {
                    let same = b.iter().zip(s).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "text {i} at {level:?}, {threads} threads, budget {budget}");
                }
            }
        }
    }
    // The text API agrees with the id API.
    assert_eq!(model.embed(&ThreadPool::new(2), &TEXTS).unwrap(), singles);
}

#[test]
fn bf16_layers_stay_near_the_definition_and_keep_batches_exact() {
    let dir = tiny_model();
    if !kernels::bf16mat::amx_available() {
        // Asked for where it cannot run, bf16 is a clear error, not a silent f32.
        let err = SentenceEmbedder::load_with(dir.path(), Precision::Bf16).unwrap_err().to_string();
        assert!(err.contains("AMX") && err.contains("f32"), "{err}");
        return;
    }
    let model = SentenceEmbedder::load_with(dir.path(), Precision::Bf16).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model.bert().precision(), Precision::Bf16);
    let (weights, pool) = (tiny_weights(), ThreadPool::new(2));
    let mut worst = 0f64;
    for text in TEXTS {
        let ids = model.tokenize(text);
        let mut hidden = vec![0f32; ids.len() * D];
        model.bert().forward(&pool, Level::best_available(), &ids, &[0, ids.len()], &mut hidden).unwrap();
        for (t, row) in reference_bert(&weights, &ids).iter().enumerate() {
            for (i, w) in row.iter().enumerate() {
                worst = worst.max((hidden[t * D + i] as f64 - w).abs());
            }
        }
    }
    // bf16 keeps 8 significant bits (relative steps of 2^-8) of weights and activations; the
    // LayerNorm outputs are O(1). Far below what a wrong formula moves (> 0.1), far above f32's 1e-4.
    assert!(worst < 0.03, "bf16 hidden states {worst} from the definition");
    eprintln!("bf16 hidden states within {worst:.2e} of the f64 definition");
    let sequences: Vec<Vec<u32>> = TEXTS.iter().map(|t| model.tokenize(t)).collect();
    let singles: Vec<Vec<f32>> = sequences
        .iter()
        .map(|s| model.embed_ids(&ThreadPool::new(1), Level::best_available(), std::slice::from_ref(s), 1).unwrap().remove(0))
        .collect();
    for (threads, budget) in [(1, 10_000), (2, 20), (3, 10_000)] {
        let batch = model.embed_ids(&ThreadPool::new(threads), Level::best_available(), &sequences, budget).unwrap();
        assert!(batch.iter().flatten().zip(singles.iter().flatten()).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads, budget {budget}");
    }
}

#[test]
fn long_texts_are_cut_at_max_seq_length_keeping_cls_and_sep() {
    let dir = tiny_model();
    let model = load(dir.path());
    assert_eq!(model.max_seq_length(), MAX_SEQ);
    let ids = model.tokenize(TEXTS[2]);
    assert_eq!(ids.len(), MAX_SEQ);
    assert_eq!((ids[0], ids[MAX_SEQ - 1]), (101, 102), "{ids:?}");
    let pieces = model.tokenizer().encode(TEXTS[2], false);
    assert_eq!(ids[1..MAX_SEQ - 1], pieces[..MAX_SEQ - 2]);
    // Exactly full is not cut; one piece more is.
    let ten = "a b c d e f g h i j";
    assert_eq!(model.tokenize(ten).len(), MAX_SEQ);
    assert_eq!(model.tokenize(&format!("{ten} k")), model.tokenize(ten));
    assert_eq!(model.tokenize(""), [101, 102]);
}

#[test]
fn empty_and_whitespace_texts_embed_to_finite_unit_vectors() {
    let dir = tiny_model();
    let model = load(dir.path());
    let out = model.embed(&ThreadPool::new(1), &["", "   ", "\n"]).unwrap();
    for v in &out {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(v.iter().all(|x| x.is_finite()) && (norm - 1.0).abs() < 1e-5, "{v:?}");
    }
    assert_eq!(out[0], out[1]); // both are [CLS] [SEP]
    assert!(model.embed(&ThreadPool::new(1), &[]).unwrap().is_empty());
}

#[test]
fn bad_ids_and_lengths_are_errors_not_panics() {
    let dir = tiny_model();
    let model = load(dir.path());
    let pool = ThreadPool::new(1);
    let err = model.embed_ids(&pool, Level::Scalar, &[vec![101, 102], vec![101, 30522, 102]], 100).unwrap_err();
    assert!(matches!(err, EmbedError::TokenId { sequence: 1, id: 30522, .. }), "{err}");
    // Renumbered to the caller's index when the bad sequence is in a later batch.
    let err = model.embed_ids(&pool, Level::Scalar, &[vec![101, 102], vec![101, 102], vec![7; POSITIONS + 1]], 2).unwrap_err();
    assert!(matches!(err, EmbedError::TooLong { sequence: 2, len: 17, max: 16 }), "{err}");
    let mut hidden = vec![0f32; 3 * D];
    let err = model.bert().forward(&pool, Level::Scalar, &[101, 7, 102], &[0, 2], &mut hidden).unwrap_err();
    assert!(matches!(err, EmbedError::Batch(_)), "{err}");
    let err = model.bert().forward(&pool, Level::Scalar, &[101, 7, 102], &[0, 3], &mut hidden[..D]).unwrap_err();
    assert!(matches!(err, EmbedError::Batch(_)), "{err}");
    // An empty sequence is fine: no tokens, a zero vector, no NaN.
    let out = model.embed_ids(&pool, Level::Scalar, &[vec![]], 100).unwrap();
    assert_eq!(out, [vec![0f32; D]]);
}

#[test]
fn damaged_folders_are_errors_that_name_the_file_and_tensor() {
    let dir = tiny_model();
    // A tensor of the wrong shape.
    let mut weights = tiny_weights();
    weights.get_mut("encoder.layer.1.intermediate.dense.bias").unwrap().0 = vec![F as u64 - 1];
    weights.get_mut("encoder.layer.1.intermediate.dense.bias").unwrap().1.pop();
    write_safetensors(&dir.path().join("model.safetensors"), &weights);
    let err = SentenceEmbedder::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("encoder.layer.1.intermediate.dense.bias") && err.contains("[15]") && err.contains("[16]"), "{err}");
    // A missing tensor.
    let mut weights = tiny_weights();
    weights.remove("encoder.layer.0.attention.self.key.weight");
    write_safetensors(&dir.path().join("model.safetensors"), &weights);
    let err = SentenceEmbedder::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("encoder.layer.0.attention.self.key.weight"), "{err}");
    // A truncated weights file.
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = SentenceEmbedder::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    // No tokenizer.
    write_tiny_model(dir.path());
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = SentenceEmbedder::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    // Not JSON.
    write_tiny_model(dir.path());
    std::fs::write(dir.path().join("config.json"), "{").unwrap();
    let err = SentenceEmbedder::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    // Sizes from a hostile config.json: errors about the tensors, not a huge allocation.
    for (key, value, needle) in [("num_hidden_layers", 1u64 << 60, "encoder.layer.2"), ("intermediate_size", 1 << 40, "intermediate.dense.weight")] {
        write_tiny_model(dir.path());
        let mut config = config_json();
        config[key] = value.into();
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let err = SentenceEmbedder::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(needle), "{key}: {err}");
    }
    // A max_seq_length with no room for text.
    write_tiny_model(dir.path());
    std::fs::write(dir.path().join("sentence_bert_config.json"), r#"{"max_seq_length": 2}"#).unwrap();
    let err = SentenceEmbedder::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("max_seq_length 2"), "{err}");
}

#[test]
fn weights_with_a_bert_prefix_load_too() {
    let dir = tiny_model();
    let weights: std::collections::BTreeMap<_, _> = tiny_weights().into_iter().map(|(k, v)| (format!("bert.{k}"), v)).collect();
    write_safetensors(&dir.path().join("model.safetensors"), &weights);
    let prefixed = load(dir.path()).embed(&ThreadPool::new(1), &TEXTS).unwrap();
    write_tiny_model(dir.path());
    assert_eq!(prefixed, load(dir.path()).embed(&ThreadPool::new(1), &TEXTS).unwrap());
}

#[test]
fn max_seq_length_is_capped_at_the_position_table() {
    let dir = tiny_model();
    std::fs::write(dir.path().join("sentence_bert_config.json"), r#"{"max_seq_length": 1000}"#).unwrap();
    assert_eq!(load(dir.path()).max_seq_length(), POSITIONS);
    std::fs::remove_file(dir.path().join("sentence_bert_config.json")).unwrap();
    assert_eq!(load(dir.path()).max_seq_length(), POSITIONS);
}
