//! kernels: slice-in, slice-out math for ferrolm.
//!
//! Quantized block formats and their products with activations ([`quant`], [`matmul`](mod@matmul)), norms,
//! RoPE and activations ([`ops`]), causal grouped-query attention ([`attention`]), and
//! the persistent thread pool they run on ([`pool`]). For float encoders (BERT): dense f32
//! products ([`f32mat`]), [`layer_norm`], [`gelu`] and bidirectional attention over a flat batch
//! ([`encoder_attention`]). Kernels never allocate and know nothing of
//! models: the caller owns every buffer and passes sizes.
//!
//! Contracts are written `input shapes -> output shapes`, outermost dimension first.
//!
//! Inside `#[target_feature]` kernels, arrays of SIMD vectors are filled by loops, never by
//! `std::array::from_fn`: rustc 1.95 kept that closure out of line in the AVX-512 products (the
//! vectors went through memory on every block) and halved prefill on an Intel Xeon.

pub mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod bf16mat;
pub mod encoder_attention;
pub mod f32mat;
pub mod gelu;
pub mod groups;
pub mod kquants;
#[cfg(target_arch = "x86_64")]
mod kquants_avx2;
pub mod layer_norm;
pub mod loss;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod quant;
#[cfg(target_arch = "x86_64")]
mod vnni;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use matmul::{matmul, Level, MatRef, SumOrder};
pub use pool::ThreadPool;
pub use quant::{BlockQ8, Format, QK};
