//! Building a tokenizer from GGUF metadata (tokenizer.ggml.*).
