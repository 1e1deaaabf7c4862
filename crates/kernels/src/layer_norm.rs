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
//! which post-norm residual streams can be.

/// x (D), weight (D), bias (D) -> out (D): LayerNorm with the biased variance and eps inside the
/// square root. `out` may not alias `x`; see [`layer_norm_inplace`].
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert!(x.len() == weight.len() && x.len() == bias.len() && x.len() == out.len());
    let (mean, inv_std) = moments(x, eps);
    for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
        *o = (((v as f64 - mean) * inv_std) as f32).mul_add(w, b);
    }
}

/// x (D) in place: `x = layer_norm(x)`.
pub fn layer_norm_inplace(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    debug_assert!(x.len() == weight.len() && x.len() == bias.len());
    let (mean, inv_std) = moments(x, eps);
    for ((v, &w), &b) in x.iter_mut().zip(weight).zip(bias) {
        *v = (((*v as f64 - mean) * inv_std) as f32).mul_add(w, b);
    }
}

/// x (D) in place, residual (D): `x = layer_norm(x + residual)`, the post-norm step of a BERT
/// block (`LN(x + Sublayer(x))`).
pub fn add_layer_norm_inplace(x: &mut [f32], residual: &[f32], weight: &[f32], bias: &[f32], eps: f32) {
    debug_assert_eq!(x.len(), residual.len());
    for (v, &r) in x.iter_mut().zip(residual) {
        *v += r;
    }
    layer_norm_inplace(x, weight, bias, eps)
}

/// The mean of x and `1 / sqrt(biased variance + eps)`, in f64. An empty row gives (0, 1/sqrt(eps)).
fn moments(x: &[f32], eps: f32) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean) * (v as f64 - mean)).sum::<f64>() / n;
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
