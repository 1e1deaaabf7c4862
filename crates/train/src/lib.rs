//! Fine-tuning LoRA adapters on a frozen Llama-family model, in the manner of llm.c: a forward
//! pass that keeps what the backward pass needs, a hand-written backward function beside every op,
//! and the LoRA matrices as the only trainable parameters.
//!
//! Shapes use one legend: N rows (tokens of the flat batch), D model width, H query heads, Hkv KV
//! heads, Dh head width, F feed-forward width, V vocabulary, r LoRA rank, L layers.
//!
//! Files: `lora.rs` (adapter parameters, targets), `real.rs` (f32 to train, f64 to check),
//! `ops.rs` (each op's forward and backward), `model.rs` (the model's forward and backward),
//! `optim.rs` (AdamW, schedule, clipping), `trainer.rs` (steps, evaluation, checkpoints), `data.rs`
//! (JSON lines to labelled token sequences, splits, epochs), `adapter/` (adapter files: PEFT's
//! directory and llama.cpp's LoRA GGUF, read and written), `rng.rs` (the seeded generator).

pub mod adapter;
pub mod data;
pub mod lora;
pub mod merge;
pub mod model;
pub mod ops;
pub mod optim;
pub mod real;
pub mod rng;
pub mod trainer;

#[cfg(test)]
mod tests;

pub use lora::{Adapter, LoraConfig, LoraPair, Target};
pub use model::{Activations, Batch, LoraParams, LossSum, TrainModel};
pub use real::{FrozenFormat, Real};
