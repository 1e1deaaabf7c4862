//! model: Llama-family models from GGUF files, their tokenizers and KV caches.
//!
//! Shape legend used in comments across ferrolm (outermost first, PyTorch order):
//! B batch, T new tokens, S cached+new positions, D model dim, H query heads, Hkv KV heads,
//! Dh head dim, F FFN hidden, V vocab, L layers, R LoRA rank.

mod blocks;
pub mod cache;
pub mod config;
pub mod error;
pub mod hf;
pub mod llama;
pub mod lora;
mod memory;
pub mod paths;
pub mod quantize;
pub mod testing;
pub mod tokenizer_gguf;

pub use cache::{KvCache, KvPool, KvType, SeqCache, KV_BLOCK};
pub use config::LlamaConfig;
pub use error::ModelError;
pub use llama::{Llama, Logits, Scratch, SeqTokens};
