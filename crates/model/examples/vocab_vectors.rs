//! Check GGUF tokenizers against llama.cpp's own test vectors.
//!
//! llama.cpp ships tokenizer test vocabularies as `models/ggml-vocab-NAME.gguf`, with
//! `ggml-vocab-NAME.gguf.inp` (texts separated by lines `__ggml_vocab_test__`) and
//! `ggml-vocab-NAME.gguf.out` (one line of space-separated ids per text). Its
//! `tests/test-tokenizer-0.cpp` tokenizes each text without adding BOS/EOS and without parsing
//! special tokens written in the text; this does the same, through the path
//! `ferrolm tokenize --tokenizer FILE.gguf` takes (llama.cpp compatibility).
//!
//! ```text
//! cargo run -p model --example vocab_vectors [-- DIR [NAME...]]
//! ```
//!
//! DIR defaults to `$FERROLM_LLAMA_CPP_MODELS`, else the llama.cpp tree in the llama-cpp-python
//! sdist under /work/peers. Prints one line per vocabulary (`matched/total`, or why it did not
//! load) and the first mismatch; exits 1 when any vocabulary fails.

use std::path::{Path, PathBuf};

use model::tokenizer_gguf::vectors::{check_vocab, default_models_dir, vocab_files};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(default_models_dir);
    let only: Vec<String> = args.collect();
    if !dir.is_dir() {
        println!("{}: not a directory; nothing checked (set FERROLM_LLAMA_CPP_MODELS)", dir.display());
        return;
    }
    let files = vocab_files(&dir);
    let mut failed = 0usize;
    for path in files {
        let name = vocab_name(&path);
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let report = check_vocab(&path);
        if !report.passed() {
            failed += 1;
        }
        println!("{name:<20} {}", report.summary());
        if let Some(first) = &report.first_mismatch {
            println!("    first mismatch: text {:?}\n      expected {:?}\n      got      {:?}", first.text, first.expected, first.got);
            println!("    from id {} on (decoded):\n      expected {:?}\n      got      {:?}", first.at, first.context.0, first.context.1);
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
}

fn vocab_name(path: &Path) -> String {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    file.trim_start_matches("ggml-vocab-").trim_end_matches(".gguf").to_string()
}
