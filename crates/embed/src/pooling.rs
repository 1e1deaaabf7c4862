//! From token states to one sentence vector: pooling, then (optionally) L2 normalization, as
//! sentence-transformers' `Pooling` and `Normalize` modules compute them.
//!
//! ```text
//! mean:  e = sum_t(h[t] * mask[t]) / max(sum_t mask[t], 1e-9)     over the real tokens only
//! cls:   e = h[0]
//! norm:  e = e / max(||e||_2, 1e-12)
//! ```
//!
//! A padded batch must leave its padding out of the mean (the mask); here sequences are never
//! padded, so a sequence's states are exactly its real tokens, [CLS] and [SEP] included, as the
//! peer's attention mask includes them. The eps floors keep a zero vector (or a sequence of no
//! tokens) at zero instead of 0/0 = NaN.

/// How a sequence's token states become one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of all the sequence's token states.
    Mean,
    /// The state of the first token ([CLS]).
    Cls,
}

/// The floor of the norm in [`l2_normalize`] (`torch.nn.functional.normalize`'s eps).
pub const NORMALIZE_EPS: f64 = 1e-12;

impl Pooling {
    /// hidden (n, D) of one sequence -> out (D). A sequence of no tokens gives zeros.
    pub fn pool(self, hidden: &[f32], dim: usize, out: &mut [f32]) {
        debug_assert!(dim > 0 && hidden.len().is_multiple_of(dim) && out.len() == dim);
        match self {
            Pooling::Mean => mean_pool(hidden, dim, out),
            Pooling::Cls => match hidden.get(..dim) {
                Some(first) => out.copy_from_slice(first),
                None => out.fill(0.0),
            },
        }
    }
}

/// hidden (n, D) -> out (D): the mean over the n rows, summed in f64.
fn mean_pool(hidden: &[f32], dim: usize, out: &mut [f32]) {
    let n = hidden.len() / dim;
    let mut sum = vec![0f64; dim];
    for row in hidden.chunks_exact(dim) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += v as f64;
        }
    }
    // n = 0 leaves the sum at 0: the peer's max(count, 1e-9) floor gives 0 as well.
    let count = (n as f64).max(1e-9);
    for (o, s) in out.iter_mut().zip(sum) {
        *o = (s / count) as f32;
    }
}

/// x (D) -> out (D) = x / max(||x||, 1e-12). `x` is left as it is; a zero vector gives zeros.
pub fn l2_normalize(x: &[f32], out: &mut [f32]) {
    debug_assert_eq!(x.len(), out.len());
    let norm = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
    let inv = 1.0 / norm.max(NORMALIZE_EPS);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v as f64 * inv) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_is_over_the_given_tokens() {
        let hidden = [1.0f32, 2.0, 3.0, 4.0, 5.0, 9.0];
        let mut out = [0f32; 2];
        Pooling::Mean.pool(&hidden, 2, &mut out);
        assert_eq!(out, [3.0, 5.0]);
        Pooling::Cls.pool(&hidden, 2, &mut out);
        assert_eq!(out, [1.0, 2.0]);
    }

    #[test]
    fn no_tokens_pool_to_zeros_not_nan() {
        let mut out = [f32::NAN; 3];
        Pooling::Mean.pool(&[], 3, &mut out);
        assert_eq!(out, [0.0; 3]);
        let mut out = [f32::NAN; 3];
        Pooling::Cls.pool(&[], 3, &mut out);
        assert_eq!(out, [0.0; 3]);
    }

    #[test]
    fn zero_vector_normalizes_to_zero_not_nan() {
        let mut out = [f32::NAN; 4];
        l2_normalize(&[0.0; 4], &mut out);
        assert_eq!(out, [0.0; 4]);
        // A tiny vector is below the floor: divided by 1e-12, not blown up to unit length.
        l2_normalize(&[1e-20, 0.0, 0.0, 0.0], &mut out);
        assert!(out.iter().all(|v| v.is_finite()) && out[0] < 1e-7, "{out:?}");
    }

    #[test]
    fn normalization_gives_unit_length_and_leaves_the_input_alone() {
        let x = [3.0f32, -4.0, 0.0];
        let copy = x;
        let mut out = [0f32; 3];
        l2_normalize(&x, &mut out);
        assert_eq!(out, [0.6, -0.8, 0.0]);
        assert_eq!(x, copy);
    }
}
