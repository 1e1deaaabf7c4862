//! Cosine similarity as "normalize, then matmul":
//!
//! ```text
//! u = a / ||a||,  v = b / ||b||          (a zero vector stays zero)
//! cos (N, M) = u (N, D) . v (M, D)^T     (kernels' f32 product, bit-identical at every level)
//! ```
//!
//! The norm is summed and divided in f64, so a tiny vector (1e-30 in every component) still gets
//! unit length, and only an exactly zero vector has no direction: its cosine with anything is
//! defined as 0 (never NaN), which is what the zero row of u gives. The inputs are read, never
//! written: normalized copies are made.

use kernels::f32mat::{matmul_f32, PackedF32};
use kernels::{Level, ThreadPool};

use crate::RetrieveError;

/// x (D) -> out (D) = x / ||x||_2, the norm in f64; a zero vector gives zeros.
pub fn normalize_into(x: &[f32], out: &mut [f32]) {
    debug_assert_eq!(x.len(), out.len());
    let norm = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
    if norm == 0.0 {
        out.fill(0.0);
        return;
    }
    let inv = 1.0 / norm;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v as f64 * inv) as f32;
    }
}

/// x (N, D) -> the rows normalized, (N, D), as [`normalize_into`] does each; `x` is left as it is.
///
/// # Errors
/// If `dim` is 0 or `x.len()` is not a multiple of it.
pub fn normalize_rows(x: &[f32], dim: usize) -> Result<Vec<f32>, RetrieveError> {
    rows_of(x, dim, "vectors")?;
    let mut out = vec![0f32; x.len()];
    for (row, o) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        normalize_into(row, o);
    }
    Ok(out)
}

/// a (N, D), b (M, D) -> cos (N, M): cosine similarity of every row of `a` with every row of `b`,
/// row-major; 0 where either row is zero. Neither input is written.
///
/// # Errors
/// If `dim` is 0 or a length is not a multiple of it.
pub fn cosine_matrix(pool: &ThreadPool, level: Level, a: &[f32], b: &[f32], dim: usize) -> Result<Vec<f32>, RetrieveError> {
    let n = rows_of(a, dim, "the first set of vectors")?;
    let m = rows_of(b, dim, "the second set of vectors")?;
    let (u, v) = (normalize_rows(a, dim)?, normalize_rows(b, dim)?);
    // v (M, D) is the "weight" of the product: packed once, then every row of u runs against it.
    let packed = PackedF32::pack(&v, m, dim);
    let mut cos = vec![0f32; n * m];
    matmul_f32(pool, level, &packed, None, &u, n, &mut cos);
    Ok(cos)
}

/// The number of rows of `x` (N, D), or an error naming `what`.
pub(crate) fn rows_of(x: &[f32], dim: usize, what: &str) -> Result<usize, RetrieveError> {
    if dim == 0 {
        return Err(RetrieveError::Shape(format!("{what}: the dimension must be at least 1")));
    }
    if !x.len().is_multiple_of(dim) {
        return Err(RetrieveError::Shape(format!("{what}: {} values are not a whole number of vectors of dimension {dim}", x.len())));
    }
    Ok(x.len() / dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_with_a_zero_vector_is_zero_not_nan() {
        let pool = ThreadPool::new(1);
        let a = [0.0f32, 0.0, 0.0, 1.0, 2.0, 2.0];
        let b = [0.0f32, 0.0, 0.0, 3.0, 0.0, 4.0];
        let cos = cosine_matrix(&pool, Level::current(), &a, &b, 3).unwrap();
        assert_eq!(cos[..3], [0.0, 0.0, 0.0]);
        assert!((cos[3] - (3.0 + 8.0) / 15.0).abs() < 1e-6, "{cos:?}");
    }

    #[test]
    fn tiny_vectors_still_have_a_direction() {
        let mut out = [0f32; 2];
        normalize_into(&[1e-30, 1e-30], &mut out);
        assert!((out[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7, "{out:?}");
    }

    #[test]
    fn cosine_matrix_leaves_its_inputs_alone_and_matches_f64() {
        let pool = ThreadPool::new(2);
        let (d, n, m) = (7, 5, 9);
        let a: Vec<f32> = (0..n * d).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3).collect();
        let b: Vec<f32> = (0..m * d).map(|i| ((i * 53 % 13) as f32 - 6.0) * 1.7).collect();
        let (a_copy, b_copy) = (a.clone(), b.clone());
        for level in Level::all_available() {
            let cos = cosine_matrix(&pool, level, &a, &b, d).unwrap();
            assert_eq!((a.as_slice(), b.as_slice()), (a_copy.as_slice(), b_copy.as_slice()), "inputs changed");
            for i in 0..n {
                for j in 0..m {
                    let (x, y) = (&a[i * d..(i + 1) * d], &b[j * d..(j + 1) * d]);
                    let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
                    let norms = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt() * y.iter().map(|q| (*q as f64).powi(2)).sum::<f64>().sqrt();
                    let want = if norms == 0.0 { 0.0 } else { dot / norms };
                    assert!((cos[i * m + j] as f64 - want).abs() < 1e-6, "({i}, {j}) at {level:?}: {} vs {want}", cos[i * m + j]);
                }
            }
        }
    }

    #[test]
    fn shapes_are_checked() {
        let pool = ThreadPool::new(1);
        assert!(cosine_matrix(&pool, Level::Scalar, &[1.0; 4], &[1.0; 3], 2).is_err());
        assert!(cosine_matrix(&pool, Level::Scalar, &[], &[], 0).is_err());
        assert_eq!(cosine_matrix(&pool, Level::Scalar, &[], &[1.0; 4], 2).unwrap(), Vec::<f32>::new());
    }
}
