//! retrieve: exact nearest-neighbour retrieval over embedding vectors.
//!
//! - [`cosine_matrix`]: a (N, D), b (M, D) -> cos (N, M), by normalizing copies of the rows and
//!   running the kernels' f32 product; a zero vector's cosine with anything is 0, not NaN.
//! - [`top_k`]: for each query, the K best rows by inner product, without the N x M matrix: a
//!   blocked product (the f32 micro-kernel of `kernels::f32mat`, AVX2/FMA or its scalar twin,
//!   chosen at run time) feeding one bounded heap per query, threaded on the kernels' pool; on
//!   Intel AMX a bf16 screen instead, whose few survivors are rescored exactly (`screen.rs` has
//!   the bound that makes it lose nothing). Exact, and deterministic: equal scores rank the lower
//!   row first, so the hits are the same at every level and thread count, and the same as the
//!   plain [`top_k_reference`].
//! - [`VectorIndex`]: a memory-mapped index file (unit vectors, ids, the model's name; see
//!   [`index_file`] for the layout), validated up front as hostile input; [`IndexWriter`] writes
//!   one vector at a time.
//! - [`npy`]: matrices of vectors in NumPy's .npy format, read row by row and written.
//!
//! Not here: making embeddings (the `embed` crate), the user's JSON lines (the command line),
//! approximate search (every row is scored: exact answers, O(N D) work per query).
//!
//! ```
//! use retrieve::{index_bytes, VectorIndex};
//! let bytes = index_bytes(2, "external", [("east", &[1.0f32, 0.0][..]), ("north", &[0.0, 3.0][..])])?;
//! let index = VectorIndex::from_bytes(&bytes)?;
//! let pool = kernels::ThreadPool::new(1);
//! let hits = index.search(&pool, kernels::Level::current(), &[0.1, 1.0], 1)?;
//! assert_eq!(index.id(hits[0][0].index), "north");
//! # Ok::<(), retrieve::RetrieveError>(())
//! ```

mod cosine;
mod error;
pub mod index_file;
pub mod npy;
mod screen;
mod topk;

pub use cosine::{cosine_matrix, normalize_into, normalize_rows};
pub use error::RetrieveError;
pub use index_file::{index_bytes, IndexWriter, VectorIndex};
pub use screen::top_k_screened;
pub use topk::{rank_order, score, top_k, top_k_blocked, top_k_reference, Hit, BLOCK_BYTES, QUERY_BATCH};
