//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong loading an embedding model or embedding text. Each message is one
/// line saying what is wrong and where (the file, the tensor, the field).
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A file of the model folder could not be read.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },
    /// A JSON file of the model folder does not parse, or lacks a field this crate needs.
    #[error("{}: {message}", path.display())]
    Json { path: PathBuf, message: String },
    /// A value of a configuration file that cannot be used.
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// A part of the model that this crate does not implement (another activation, a Dense
    /// module, max pooling...).
    #[error("{}: unsupported {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
    /// The weights file is not a valid safetensors file, or a tensor is missing or of a dtype
    /// that does not convert to f32.
    #[error(transparent)]
    Weights(#[from] safetensors_file::SafetensorsError),
    /// A tensor whose shape is not the one the config implies.
    #[error("{}: tensor '{name}' has shape {got:?}, expected {expected:?} from config.json", path.display())]
    TensorShape { path: PathBuf, name: String, expected: Vec<u64>, got: Vec<u64> },
    /// tokenizer.json could not be loaded.
    #[error("{}: {cause}", path.display())]
    Tokenizer { path: PathBuf, cause: tokenizer::hf::HfError },
    /// A token id past the end of the vocabulary (from a caller of the id-level API).
    #[error("token id {id} of sequence {sequence} is outside the vocabulary of {vocab} tokens")]
    TokenId { sequence: usize, id: u32, vocab: usize },
    /// A sequence longer than the model's position table (from a caller of the id-level API).
    #[error("sequence {sequence} has {len} tokens, more than the model's {max} positions")]
    TooLong { sequence: usize, len: usize, max: usize },
    /// A flat batch whose sequence bounds or output buffer do not fit its tokens.
    #[error("bad batch: {0}")]
    Batch(String),
    /// A precision this machine cannot run.
    #[error("{0}")]
    Precision(String),
    /// The default model could not be fetched.
    #[error("could not fetch the embedding model: {0}")]
    Fetch(String),
}
