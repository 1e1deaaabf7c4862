//! GELU in its exact (erf) form, the `"gelu"` activation of BERT and PyTorch's
//! `nn.GELU(approximate="none")`:
//!
//! ```text
//! gelu(x) = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))
//! ```
//!
//! Not the tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`), which differs by up to
//! ~5e-4 and is a different activation as far as a checkpoint is concerned.
//!
//! The standard library has no `erf`, so it is here, in f64 from two textbook expansions (Abramowitz
//! and Stegun 7.1.6 and the continued fraction of erfc, 7.1.14) that are accurate to about 1e-16,
//! with one rounding to f32 at the end: `gelu_erf` is the correctly rounded GELU in all but rare
//! near-ties. `1 + erf(z)` is taken as `erfc(-z)` below z = -4, where `1 + erf` would cancel.
//! Cost: tens of flops per value (the series needs ~20 terms at |z| = 1), small against the
//! matrix product that makes each FFN input value (2 x 384 flops for MiniLM). GELU(-inf) is its
//! limit, 0, where the formula would give -inf * 0 = NaN.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// Below |z| = 4 the power series; from 4 on the continued fraction (converged to f64 there with
/// [`CF_TERMS`] terms, and the series would need 70+ terms).
const SERIES_LIMIT: f64 = 4.0;
/// Depth of the erfc continued fraction, evaluated backwards.
const CF_TERMS: u32 = 60;

/// erf(z) in f64.
///
/// `erf(z) = 2/sqrt(pi) * exp(-z^2) * sum_n 2^n z^(2n+1) / (1*3*...*(2n+1))` for |z| < 4: every
/// term is positive, so nothing cancels. Beyond, `1 - erfc(|z|)` with the sign of z.
pub fn erf(z: f64) -> f64 {
    if z.is_nan() {
        return z;
    }
    if z.abs() >= SERIES_LIMIT {
        return (1.0 - erfc_tail(z.abs())).copysign(z);
    }
    erf_series(z)
}

/// `1 + erf(z)` without cancellation for very negative z.
fn one_plus_erf(z: f64) -> f64 {
    if z <= -SERIES_LIMIT {
        erfc_tail(-z)
    } else {
        1.0 + erf(z)
    }
}

/// The series of erf for |z| < [`SERIES_LIMIT`].
fn erf_series(z: f64) -> f64 {
    let z2 = z * z;
    let (mut term, mut sum) = (z, z);
    let mut n = 0.0;
    // Terms grow while 2z^2 > 2n + 3, then fall faster than geometrically; stop when they no
    // longer change the sum.
    loop {
        term *= 2.0 * z2 / (2.0 * n + 3.0);
        let next = sum + term;
        if next == sum {
            break;
        }
        sum = next;
        n += 1.0;
    }
    2.0 / PI.sqrt() * (-z2).exp() * sum
}

/// erfc(z) for z >= [`SERIES_LIMIT`]: `exp(-z^2)/sqrt(pi) / (z + (1/2)/(z + 1/(z + (3/2)/(z + ...))))`.
fn erfc_tail(z: f64) -> f64 {
    debug_assert!(z >= SERIES_LIMIT);
    let mut f = z;
    for k in (1..=CF_TERMS).rev() {
        f = z + (k as f64 / 2.0) / f;
    }
    (-z * z).exp() / PI.sqrt() / f
}

/// GELU of one value: `0.5 * x * (1 + erf(x / sqrt 2))`, computed in f64 and rounded once.
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    if x == f32::NEG_INFINITY {
        return 0.0;
    }
    let x = x as f64;
    (0.5 * x * one_plus_erf(x * FRAC_1_SQRT_2)) as f32
}

/// x (n) in place: `x = gelu_erf(x)`.
pub fn gelu_erf_inplace(x: &mut [f32]) {
    for v in x {
        *v = gelu_erf(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (z, erf z, erfc z) from Python's `math.erf` / `math.erfc` (C libm, under 1 ulp).
    const ERF: [(f64, f64, f64); 10] = [
        (1e-3, 0.0011283787909692365, 0.9988716212090307),
        (0.1, 0.1124629160182849, 0.8875370839817152),
        (0.5, 0.5204998778130465, 0.4795001221869535),
        (1.0, 0.8427007929497149, 0.15729920705028513),
        (2.0, 0.9953222650189527, 0.004677734981047265),
        (3.0, 0.9999779095030014, 2.2090496998585438e-05),
        (3.99, 0.9999999832607886, 1.6739211364520814e-08),
        (4.0, 0.9999999845827421, 1.541725790028002e-08),
        (5.0, 0.9999999999984626, 1.5374597944280351e-12),
        (6.0, 1.0, 2.1519736712498916e-17),
    ];

    #[test]
    fn erf_matches_libm() {
        for (z, want, want_c) in ERF {
            assert!((erf(z) - want).abs() < 4e-16, "erf({z}) = {} vs {want}", erf(z));
            assert!((erf(-z) + want).abs() < 4e-16, "erf is odd at {z}");
            let c = one_plus_erf(-z); // = erfc(z)
            assert!(((c - want_c) / want_c).abs() < 1e-8, "erfc({z}) = {c} vs {want_c}");
        }
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert!(erf(f64::NAN).is_nan());
    }

    #[test]
    fn erfc_tail_is_accurate_where_one_minus_erf_cancels() {
        // Below z = -4, 1 + erf(z) is erfc(|z|): relative accuracy, not 1e-16 absolute.
        for (z, _, want_c) in ERF.iter().filter(|e| e.0 >= SERIES_LIMIT) {
            let got = erfc_tail(*z);
            assert!(((got - want_c) / want_c).abs() < 1e-14, "erfc({z}) = {got} vs {want_c}");
        }
    }

    #[test]
    fn gelu_is_the_erf_form_not_the_tanh_one() {
        // (x, 0.5 x erfc(-x/sqrt 2)) from Python's math.erfc.
        let cases = [
            (-10.0f32, -7.619853024160593e-23f64),
            (-6.0, -5.919525870226207e-09),
            (-3.0, -0.004049694094890287),
            (-1.0, -0.15865525393145707),
            (-0.5, -0.15426876936299344),
            (0.0, 0.0),
            (0.5, 0.34573123063700656),
            (1.0, 0.8413447460685429),
            (3.0, 2.99595030590511),
            (6.0, 5.999999994080474),
            (10.0, 10.0),
        ];
        for (x, want) in cases {
            assert_eq!(gelu_erf(x), want as f32, "gelu({x})");
        }
        // The tanh approximation at x = 1 is 0.841192: 1.5e-4 away, thousands of ulps.
        let tanh_form = |x: f32| 0.5 * x * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh());
        assert!((gelu_erf(1.0) - tanh_form(1.0)).abs() > 1e-4);
    }

    #[test]
    fn gelu_is_finite_and_monotone_where_it_should_be() {
        assert_eq!(gelu_erf(f32::INFINITY), f32::INFINITY);
        assert_eq!(gelu_erf(f32::NEG_INFINITY), 0.0); // the limit, not -inf * 0 = NaN
        assert_eq!(gelu_erf(-1e30), 0.0);
        let mut x = -0.75f32;
        let mut last = gelu_erf(x);
        while x < 20.0 {
            x += 0.01;
            let y = gelu_erf(x);
            assert!(y >= last, "gelu decreases at {x}");
            last = y;
        }
    }

    #[test]
    fn slice_form_equals_the_scalar_one() {
        let mut x: Vec<f32> = (0..41).map(|i| i as f32 * 0.37 - 7.0).collect();
        let want: Vec<f32> = x.iter().map(|&v| gelu_erf(v)).collect();
        gelu_erf_inplace(&mut x);
        assert_eq!(x, want);
    }
}
