//! model: Llama-family models from GGUF files, their tokenizers and KV caches.
pub mod paths;
pub mod tokenizer_gguf;
