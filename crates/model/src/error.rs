//! Errors of the model crate.

use thiserror::Error;

/// What can go wrong loading or running a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The GGUF file itself is malformed or lacks a key.
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    /// The file's architecture is not one this crate runs.
    #[error("unsupported architecture {0:?} (supported: llama, gemma3)")]
    UnsupportedArchitecture(String),
    /// The file uses a feature of the architecture that is not implemented.
    #[error("unsupported model feature: {0}")]
    Unsupported(String),
    /// A hyper-parameter is out of range.
    #[error("invalid model configuration: {0}")]
    BadConfig(String),
    /// A tensor the architecture needs is absent.
    #[error("tensor {0:?} is missing from the model file")]
    MissingTensor(String),
    /// A tensor has the wrong shape.
    #[error("tensor {tensor:?} has shape {got:?}, expected {expected:?} (innermost first)")]
    TensorShape { tensor: String, expected: Vec<u64>, got: Vec<u64> },
    /// A tensor is stored in a type the kernels do not support yet.
    #[error("tensor {tensor:?} has type {ggml_type}, which is not supported yet (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K)")]
    UnsupportedTensorType { tensor: String, ggml_type: String },
    /// A forward call with no tokens.
    #[error("a forward call needs at least one token")]
    EmptyBatch,
    /// A token id outside the vocabulary.
    #[error("token id {token} is outside the vocabulary of {n_vocab} tokens")]
    InvalidToken { token: u32, n_vocab: usize },
    /// The KV cache cannot hold more positions.
    #[error("the context is full: {needed} positions needed, the cache holds {capacity} (use a larger context size)")]
    ContextFull { capacity: usize, needed: usize },
    /// Every block of a shared KV pool is in use.
    #[error("the KV cache is out of blocks: all {blocks} blocks of {block_size} positions are in use and {wanted} more are needed (use a larger context size or fewer sequences)")]
    OutOfKvBlocks { blocks: usize, wanted: usize, block_size: usize },
    /// More tokens than the scratch holds, with logits for all of them.
    #[error("{tokens} tokens with all logits exceed the batch size {max}")]
    BatchTooLarge { tokens: usize, max: usize },
    /// A buffer does not fit in memory.
    #[error("the {what} needs {bytes} bytes, more than this machine can allocate: {hint}")]
    OutOfMemory { what: &'static str, bytes: u128, hint: &'static str },
    /// A cache made for another model or a larger context than the scratch.
    #[error("the KV cache does not match this model and scratch")]
    CacheMismatch,
    /// The system refused one of the kernel threads the model was to run on.
    #[error(transparent)]
    Threads(#[from] kernels::pool::SpawnError),
    /// A sequence used with a pool other than the one that made it.
    #[error("this sequence belongs to another KV pool: make sequences with the pool they are used with")]
    ForeignSequence,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_kernel_thread_is_a_one_line_load_error() {
        let refused = kernels::pool::SpawnError { wanted: 8, started: 3, error: std::io::Error::other("Resource temporarily unavailable") };
        let err = ModelError::from(refused);
        assert_eq!(
            err.to_string(),
            "cannot start 8 kernel threads: Resource temporarily unavailable; 3 started, so ask for 3 or fewer, or raise the system's limit on threads"
        );
        // The cause is in the message once, not repeated by a source.
        assert!(std::error::Error::source(&err).is_none());
    }
}
