//! llama.cpp's tokenizer test vocabularies (`models/ggml-vocab-*.gguf` with `.inp`/`.out`), each
//! checked against llama.cpp's own vectors as its test-tokenizer-0 runs them. The folder is
//! `$FERROLM_LLAMA_CPP_MODELS`, else the llama-cpp-python sdist's copy; without it the test
//! prints a note and passes. `cargo run -p model --example vocab_vectors` prints the table.

use model::tokenizer_gguf::vectors::{check_vocab, default_models_dir, vocab_files};

/// Vocabularies whose tokenizer model is not read from GGUF yet: they must fail to load with a
/// one-line error, not mis-tokenize.
const NOT_YET: &[&str] = &[];

#[test]
fn every_llama_cpp_test_vocabulary_matches_its_vectors() {
    let dir = default_models_dir();
    let files = vocab_files(&dir);
    if files.is_empty() {
        eprintln!("note: no ggml-vocab-*.gguf with .inp/.out in {}; set FERROLM_LLAMA_CPP_MODELS to check them", dir.display());
        return;
    }
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let report = check_vocab(path);
        if NOT_YET.contains(&name.as_str()) {
            match &report.error {
                Some(error) if !error.contains('\n') => {}
                _ => failures.push(format!("{name}: expected a one-line load error, got {}", report.summary())),
            }
            continue;
        }
        if !report.passed() {
            failures.push(format!("{name}: {} (first mismatch: {:?})", report.summary(), report.first_mismatch));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
