//! embed: sentence embeddings with BERT encoders, as sentence-transformers computes them.
//!
//! A sentence-transformers folder (all-MiniLM-L6-v2 by default, fetched on first use, see
//! [`fetch`]) is a pipeline of three modules:
//!
//! ```text
//! text --tokenizer.json--> [CLS] pieces [SEP]   cut to max_seq_length (256 for MiniLM)
//!      --BERT encoder----> token states (n, D)  (bert.rs has the math)
//!      --Pooling---------> one vector (D)       mean over the text's tokens, or [CLS]
//!      --Normalize-------> unit length          when modules.json lists it
//! ```
//!
//! [`SentenceEmbedder`] runs it on many texts at once as flat batches: the texts' tokens are
//! concatenated, so no work goes to padding, and each text gets exactly the bits it gets alone.
//! The math runs in f32 on the `kernels` crate (dense products, LayerNorm, exact GELU,
//! bidirectional attention), or with the linear layers in bf16 on Intel AMX ([`Precision`],
//! chosen by [`Precision::auto`] where AMX runs); weights are read with `safetensors-file` and text is tokenized by
//! `tokenizer::hf` (WordPiece, token-exact with Hugging Face).
//!
//! Not here: a command line, a server, nearest-neighbour search over the vectors.
//!
//! ```no_run
//! use embed::SentenceEmbedder;
//! let dir = embed::fetch::ensure_default_model()?;
//! let model = SentenceEmbedder::load(&dir)?;
//! let pool = kernels::ThreadPool::new(2);
//! let vectors = model.embed(&pool, &["A man is eating food.", "A man is eating bread."])?;
//! let cosine: f32 = vectors[0].iter().zip(&vectors[1]).map(|(a, b)| a * b).sum(); // unit vectors
//! # Ok::<(), embed::EmbedError>(())
//! ```

mod bert;
mod config;
mod embedder;
mod error;
pub mod fetch;
mod pooling;
pub mod testing;

pub use bert::{Bert, Precision};
pub use config::{BertConfig, Pipeline};
pub use embedder::{SentenceEmbedder, TOKEN_BUDGET};
pub use error::EmbedError;
pub use pooling::{l2_normalize, Pooling, NORMALIZE_EPS};
