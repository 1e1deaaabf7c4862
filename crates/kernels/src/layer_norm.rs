//! LayerNorm (Ba et al. 2016) as BERT and PyTorch's `nn.LayerNorm` define it, one row at a time:
//!
//! ```text
//! mean = sum(x) / D
//! var  = sum((x - mean)^2) / D          biased: divided by D, not D - 1
//! y    = (x - mean) / sqrt(var + eps) * weight + bias     eps inside the square root
//! ```
//!
//! Both choices matter and each has a named test below: the unbiased variance would scale every
//! output by sqrt((D-1)/D), and eps outside the root (`sqrt(var) + eps`) would change every row
//! whose variance is not far above eps.
//!
//! The sums run in f64 over two passes (mean first, then the squared deviations): one-pass
//! `E[x^2] - E[x]^2` in f32 cancels catastrophically when the mean is large against the spread,
//! which post-norm residual streams can be. Each sum is 8 lanes in a fixed order, so the AVX2 and
//! AVX-512 compilations give the scalar code's bits (tested).

use crate::matmul::Level;

/// x (D), weight (D), bias (D) -> out (D): LayerNorm with the biased variance and eps inside the
/// square root. `out` may not alias `x`; see [`layer_norm_inplace`].
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert!(x.len() == weight.len() && x.len() == bias.len() && x.len() == out.len());
    out.copy_from_slice(x);
    layer_norm_inplace(out, weight, bias, eps)
}

/// x (D) in place: `x = layer_norm(x)`.
pub fn layer_norm_inplace(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    add_layer_norm_at(Level::current(), x, None, weight, bias, eps)
}

/// x (D) in place, residual (D): `x = layer_norm(x + residual)`, the post-norm step of a BERT
/// block (`LN(x + Sublayer(x))`).
pub fn add_layer_norm_inplace(x: &mut [f32], residual: &[f32], weight: &[f32], bias: &[f32], eps: f32) {
    debug_assert_eq!(x.len(), residual.len());
    add_layer_norm_at(Level::current(), x, Some(residual), weight, bias, eps)
}

/// [`add_layer_norm_inplace`] (or [`layer_norm_inplace`] without a residual) at `level`, at most
/// the machine's best: every level runs the same operations in the same order (the vector
/// compilations of one function), so gives the same bits.
pub fn add_layer_norm_at(level: Level, x: &mut [f32], residual: Option<&[f32]>, weight: &[f32], bias: &[f32], eps: f32) {
    debug_assert!(x.len() == weight.len() && x.len() == bias.len());
    debug_assert!(level <= Level::best_available());
    #[cfg(target_arch = "x86_64")]
    {
        if level >= Level::Avx512Vnni {
            // SAFETY: the level implies AVX-512 F and FMA.
            return unsafe { norm_avx512(x, residual, weight, bias, eps) };
        }
        if level >= Level::Avx2 {
            // SAFETY: the level implies AVX2 and FMA.
            return unsafe { norm_avx2(x, residual, weight, bias, eps) };
        }
    }
    let _ = level;
    norm_generic(x, residual, weight, bias, eps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn norm_avx2(x: &mut [f32], residual: Option<&[f32]>, weight: &[f32], bias: &[f32], eps: f32) {
    norm_generic(x, residual, weight, bias, eps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
unsafe fn norm_avx512(x: &mut [f32], residual: Option<&[f32]>, weight: &[f32], bias: &[f32], eps: f32) {
    norm_generic(x, residual, weight, bias, eps)
}

#[inline(always)]
fn norm_generic(x: &mut [f32], residual: Option<&[f32]>, weight: &[f32], bias: &[f32], eps: f32) {
    if let Some(r) = residual {
        for (v, &r) in x.iter_mut().zip(r) {
            *v += r;
        }
    }
    let (mean, inv_std) = moments(x, eps);
    for ((v, &w), &b) in x.iter_mut().zip(weight).zip(bias) {
        *v = (((*v as f64 - mean) * inv_std) as f32).mul_add(w, b);
    }
}

/// f64 partial sums of [`moments`]: lane l takes the elements l, l + 8, ...
const SUM_LANES: usize = 8;

/// The sum of `f(v)` over x in f64: 8 lanes, then ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
#[inline(always)]
fn sum_lanes(x: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; SUM_LANES];
    let chunks = x.chunks_exact(SUM_LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (acc, &v) in lanes.iter_mut().zip(chunk) {
            *acc += f(v as f64);
        }
    }
    for (acc, &v) in lanes.iter_mut().zip(tail) {
        *acc += f(v as f64);
    }
    ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
}

/// The mean of x and `1 / sqrt(biased variance + eps)`, in f64. An empty row gives (0, 1/sqrt(eps)).
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mean = sum_lanes(x, |v| v) / n;
    let var = sum_lanes(x, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ones(n: usize) -> Vec<f32> {
        vec![1.0; n]
    }

    fn zeros(n: usize) -> Vec<f32> {
        vec![0.0; n]
    }

    #[test]
    fn variance_is_biased_not_unbiased() {
        // x = [1, 2, 3, 4]: mean 2.5, biased variance 1.25 (the unbiased one would be 5/3).
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut y = [0f32; 4];
        layer_norm(&x, &ones(4), &zeros(4), 0.0, &mut y);
        for (&v, &got) in x.iter().zip(&y) {
            let biased = (v - 2.5) / 1.25f32.sqrt();
            let unbiased = (v - 2.5) / (5.0f32 / 3.0).sqrt();
            assert!((got - biased).abs() < 1e-6, "{got} vs {biased}");
            assert!((got - unbiased).abs() > 0.05, "{got} looks like the unbiased variance");
        }
    }

    #[test]
    fn eps_is_inside_the_square_root() {
        // x = [a, -a] with a = 1e-3: var = 1e-6. With eps = 1e-5 inside the root the output is
        // a / sqrt(1.1e-5) = 0.3015; outside, a / (1e-3 + 1e-5) = 0.990.
        let x = [1e-3f32, -1e-3];
        let mut y = [0f32; 2];
        layer_norm(&x, &ones(2), &zeros(2), 1e-5, &mut y);
        let inside = 1e-3 / (1e-6f64 + 1e-5).sqrt();
        assert!((y[0] as f64 - inside).abs() < 1e-6, "{} vs {inside}", y[0]);
        assert!((y[1] as f64 + inside).abs() < 1e-6, "{} vs {}", y[1], -inside);
    }

    #[test]
    fn constant_row_gives_the_bias_not_nan() {
        // Zero variance: only eps keeps the division finite, and (x - mean) is exactly 0.
        let x = [7.5f32; 5];
        let bias = [0.1f32, -0.2, 0.3, 0.0, 1e6];
        let mut y = [f32::NAN; 5];
        layer_norm(&x, &[2.0; 5], &bias, 1e-12, &mut y);
        assert_eq!(y, bias);
    }

    #[test]
    fn weight_and_bias_apply_per_column() {
        let x = [-1.0f32, 1.0];
        let mut y = [0f32; 2];
        layer_norm(&x, &[2.0, 3.0], &[10.0, 20.0], 0.0, &mut y);
        assert_eq!(y, [8.0, 23.0]);
    }

    #[test]
    fn large_mean_small_spread_keeps_its_digits() {
        // 1e4 + [-1, 0, 1]: a one-pass f32 variance (E[x^2] - E[x]^2) loses it all here.
        let x = [9999.0f32, 10000.0, 10001.0];
        let mut y = [0f32; 3];
        layer_norm(&x, &ones(3), &zeros(3), 1e-12, &mut y);
        let s = (1.5f32).sqrt();
        for (got, want) in y.iter().zip([-s, 0.0, s]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn every_level_gives_the_same_bits() {
        for d in [1, 7, 384, 1001] {
            let x: Vec<f32> = (0..d).map(|i| ((i * 7919) % 101) as f32 * 0.37 - 11.0 + 1e3).collect();
            let r: Vec<f32> = (0..d).map(|i| ((i * 104729) % 53) as f32 * -0.11 + 2.0).collect();
            let w: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 * 0.01).collect();
            let b: Vec<f32> = (0..d).map(|i| i as f32 * -0.02).collect();
            let mut want = x.clone();
            add_layer_norm_at(Level::Scalar, &mut want, Some(&r), &w, &b, 1e-12);
            for level in Level::all_available() {
                let mut got = x.clone();
                add_layer_norm_at(level, &mut got, Some(&r), &w, &b, 1e-12);
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "D={d} {level:?}");
            }
        }
    }

    #[test]
    fn in_place_and_residual_forms_equal_the_plain_one() {
        let x: Vec<f32> = (0..37).map(|i| ((i * 7919) % 101) as f32 * 0.37 - 11.0).collect();
        let r: Vec<f32> = (0..37).map(|i| ((i * 104729) % 53) as f32 * -0.11 + 2.0).collect();
        let w: Vec<f32> = (0..37).map(|i| 0.5 + i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..37).map(|i| i as f32 * -0.02).collect();
        let sum: Vec<f32> = x.iter().zip(&r).map(|(a, b)| a + b).collect();
        let mut want = vec![0f32; 37];
        layer_norm(&sum, &w, &b, 1e-12, &mut want);
        let mut got = x.clone();
        add_layer_norm_inplace(&mut got, &r, &w, &b, 1e-12);
        assert_eq!(got, want);
        let mut got = sum.clone();
        layer_norm_inplace(&mut got, &w, &b, 1e-12);
        assert_eq!(got, want);
    }
}
