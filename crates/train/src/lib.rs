//! Fine-tuning LoRA adapters on a frozen Llama-family model, in the manner of llm.c: a forward
//! pass that keeps what the backward pass needs, a hand-written backward function beside every op,
//! and the LoRA matrices as the only trainable parameters.
//!
//! Shapes use one legend: N rows (tokens of the flat batch), D model width, H query heads, Hkv KV
//! heads, Dh head width, F feed-forward width, V vocabulary, r LoRA rank, L layers.
//!
//! Files: `lora.rs` (adapter parameters, targets, initialisation, merging); `adapter/` (adapter
//! files: PEFT's directory and llama.cpp's LoRA GGUF, read and written).

pub mod adapter;
pub mod lora;

pub use lora::{Adapter, LoraConfig, LoraPair, Target};
