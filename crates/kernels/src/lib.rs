//! kernels: slice-in, slice-out math for ferrolm.
//!
//! Quantized block formats and their products with activations ([`quant`], [`matmul`](mod@matmul)), norms,
//! RoPE and activations ([`ops`]), causal grouped-query attention ([`attention`]), and
//! the persistent thread pool they run on ([`pool`]). Kernels never allocate and know nothing of
//! models: the caller owns every buffer and passes sizes.
//!
//! Contracts are written `input shapes -> output shapes`, outermost dimension first.

pub mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod groups;
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
