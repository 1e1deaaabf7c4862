//! A user-facing error says its cause once, in one line, with what to do.

mod common;

use common::{rewrite_tiny, Fx};
use gguf::Value;

fn with(key: &'static str, value: &'static str) -> Vec<u8> {
    rewrite_tiny(move |k, v| Some(if k == key { Value::String(value.into()) } else { v.clone() }))
}

#[test]
fn an_unknown_pre_tokenizer_is_named_once() {
    let fx = Fx::new();
    let path = fx.write("odd.gguf", &with("tokenizer.ggml.pre", "mystery-pre"));
    let run = fx.run_with_stdin(&["tokenize", "--model", &path, "--text", "hi"], None);
    assert_ne!(run.code, Some(0));
    assert_eq!(run.stderr.matches("unsupported pre-tokenizer").count(), 1, "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "one line: {}", run.stderr);
    assert!(run.stderr.contains("mystery-pre") && run.stderr.contains("odd.gguf"), "{}", run.stderr);
}

#[test]
fn an_unsupported_tokenizer_model_says_what_is_supported() {
    let fx = Fx::new();
    let path = fx.write("rwkv.gguf", &with("tokenizer.ggml.model", "rwkv"));
    let run = fx.run_with_stdin(&["tokenize", "--model", &path, "--text", "hi"], None);
    assert_ne!(run.code, Some(0));
    let err = run.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("\"rwkv\"").count(), 1, "{err}");
    // Not the old claim that only byte-level BPE loads: SentencePiece GGUFs load too.
    assert!(err.contains("\"llama\" (SentencePiece)") && err.contains("--tokenizer"), "{err}");
}
