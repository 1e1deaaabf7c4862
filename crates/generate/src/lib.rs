//! generate: turning a model's logits into text.
//!
//! Samplers ([`sampler`], with its own seeded [`rng`]), stop strings matched across token
//! boundaries ([`stop`]), chat templates rendered with a Jinja engine ([`chat`]), the generation
//! loop over a KV-cached session ([`generate`]) and perplexity ([`perplexity`](mod@perplexity)). It knows nothing
//! of terminals or files: the CLI and the server sit on top.

pub mod batch;
pub mod beam;
pub mod chat;
pub mod draft;
pub mod draft_policy;
pub mod generate;
pub mod perplexity;
pub mod rng;
pub mod sampler;
pub mod search;
pub mod speculative;
pub mod stop;

pub use batch::{choice_sampler, generate_batch, generate_n, BatchSizes};
pub use draft::{PromptLookup, Speculation, MIN_NGRAM};
pub use draft_policy::DraftPolicy;
pub use generate::{Emitter, GenerateOptions, Generation, Session, StopReason};
pub use perplexity::{perplexity, Perplexity};
pub use search::{beam_search, BeamResult};

/// What can go wrong while generating.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The model failed (context full, invalid token...).
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// Sampler settings out of range.
    #[error(transparent)]
    Sampler(#[from] sampler::SamplerError),
    /// Beam-search settings out of range.
    #[error(transparent)]
    Beam(#[from] beam::BeamError),
    /// A prompt with no tokens.
    #[error("the prompt is empty: give at least one token of text")]
    EmptyPrompt,
    /// An argument out of range.
    #[error("{0}")]
    InvalidArgument(String),
}
