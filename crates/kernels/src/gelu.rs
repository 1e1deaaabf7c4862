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
//! Two implementations, the fast one checked against the exact one:
//! - [`gelu_erf_exact`], the reference: erf in f64 from two textbook expansions (Abramowitz and
//!   Stegun 7.1.6, and the continued fraction of erfc, 7.1.14), accurate to about 1e-16, rounded
//!   once to f32. The standard library has no `erf`. Its series takes ~20 dependent steps per
//!   value at |z| = 1, too slow for the 1536 values per token of MiniLM's FFN.
//! - [`gelu_erf`] / [`gelu_erf_inplace`], the kernel: branch-free f32 that the compiler
//!   vectorizes (8 values per instruction with AVX2, dispatched at run time), from erfc by the
//!   Chebyshev fit of Numerical Recipes (`erfcc`: relative error under 1.2e-7 for every z >= 0):
//!
//!   ```text
//!   t = 1 / (1 + |z|/2),   erfc(|z|) = t * exp(-z^2 + P(t)),   P a degree-9 polynomial
//!   1 + erf(z) = 2 - erfc(|z|) for z >= 0, erfc(|z|) for z < 0    no cancellation in either
//!   ```
//!
//!   e^(-z^2) is steep (its relative error is the argument's absolute error), so -z^2 = -x^2/2 is
//!   carried exactly as a rounded square and its rounding error. Tested within a few ulps of the
//!   exact GELU (the bound is in the test), and bit-identical at every level.
//!
//! GELU(-inf) is its limit, 0, where the formula would give -inf * 0 = NaN.
//!
//! The tanh approximation has its own functions, [`gelu_tanh`] and the GeGLU of Gemma's
//! feed-forward, [`geglu_tanh_inplace`], which evaluates it as the peers do: through a table of
//! f16 results indexed by the f16-rounded input.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

use crate::matmul::Level;
use crate::ops::exp_poly_parts_int;

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

/// GELU of one value, the reference: `0.5 * x * (1 + erf(x / sqrt 2))` in f64, rounded once.
pub fn gelu_erf_exact(x: f32) -> f32 {
    if x == f32::NEG_INFINITY {
        return 0.0;
    }
    let x = x as f64;
    (0.5 * x * one_plus_erf(x * FRAC_1_SQRT_2)) as f32
}

/// The coefficients of P(t) in erfc(z) = t exp(-z^2 + P(t)), constant term first (Numerical
/// Recipes, `erfcc`).
// As Numerical Recipes prints them; each rounds to the nearest f32 at compile time.
#[allow(clippy::excessive_precision)]
const ERFC_P: [f32; 10] =
    [-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277];

/// From this |z| on, erfc(z) (< 4.2e-37) is taken as 0: GELU is then x, or 0 for negative x,
/// to within 3e-36. Below it the exponentials' arguments stay above -87, in range.
const ERFC_ZERO_FROM: f32 = 9.0;

/// e^a for a in [-87, 0] (lower arguments are raised to -87): [`exp_poly`](crate::ops::exp_poly)'s
/// polynomial scaled by 2^n through the exponent bits, with no branch (n >= -126 keeps 2^n a
/// normal float).
#[inline(always)]
fn exp_in_range(a: f32) -> f32 {
    let (n, j) = exp_poly_parts_int(a.max(-87.0));
    j * f32::from_bits(((n + 127) as u32) << 23)
}

/// GELU of one value, the fast form (see the module doc); within a few ulps of [`gelu_erf_exact`].
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / 0.5f32.mul_add(z, 1.0);
    let mut p = ERFC_P[9];
    for &c in ERFC_P[..9].iter().rev() {
        p = p.mul_add(t, c);
    }
    // -z^2 = -(x2 + x2_err)/2 exactly; e^(-z^2) = e^(-x2/2) * e^(-x2_err/2), the last factor
    // 1 - x2_err/2 to first order (|x2_err| <= ulp(x2)/2).
    let x2 = x * x;
    let x2_err = x.mul_add(x, -x2);
    let erfc = t * exp_in_range(-0.5 * x2) * exp_in_range(p) * (-0.5f32).mul_add(x2_err, 1.0);
    let erfc = if z < ERFC_ZERO_FROM { erfc } else { 0.0 };
    let one_plus_erf = if x >= 0.0 { 2.0 - erfc } else { erfc };
    let gelu = 0.5 * x * one_plus_erf;
    if x == f32::NEG_INFINITY {
        0.0
    } else {
        gelu
    }
}

/// x (n) in place: `x = gelu_erf(x)`, at [`Level::current`].
pub fn gelu_erf_inplace(x: &mut [f32]) {
    gelu_erf_inplace_at(Level::current(), x)
}

/// [`gelu_erf_inplace`] at `level` (at most the machine's best); every level gives the same bits.
pub fn gelu_erf_inplace_at(level: Level, x: &mut [f32]) {
    debug_assert!(level <= Level::best_available());
    #[cfg(target_arch = "x86_64")]
    {
        if level >= Level::Avx512Vnni {
            // SAFETY: the level implies AVX-512 F and FMA.
            return unsafe { gelu_avx512(x) };
        }
        if level >= Level::Avx2 {
            // SAFETY: the level implies AVX2 and FMA.
            return unsafe { gelu_avx2(x) };
        }
    }
    let _ = level;
    gelu_generic(x)
}

/// [`gelu_generic`] compiled for AVX-512: 16 values per instruction, the same operations.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
unsafe fn gelu_avx512(x: &mut [f32]) {
    gelu_generic(x)
}

/// [`gelu_generic`] compiled for AVX2 and FMA: the loop becomes 8-lane vector code with the same
/// operations per value (`mul_add` is one fused instruction on both paths).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(x: &mut [f32]) {
    gelu_generic(x)
}

#[inline(always)]
fn gelu_generic(x: &mut [f32]) {
    for v in x {
        *v = gelu_erf(*v);
    }
}

/// sqrt(2/pi) in f32, as the peers write it.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
const GELU_COEF_A: f32 = 0.044715;

/// GELU, tanh approximation, in f32: `0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2)))`.
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// [`gelu_tanh`] of every f16 value, rounded to f16, indexed by the input's bits (built once).
fn gelu_tanh_f16_table() -> &'static [u16] {
    static TABLE: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(|bits| half::f16::from_f32(gelu_tanh(half::f16::from_bits(bits).to_f32())).to_bits()).collect())
}

/// gate (n), up (n) -> gate = gelu_tanh(gate) * up, in place, as the peers' GeGLU computes it:
/// at or below -10 the product is 0, at or above 10 it is `gate * up`, and between them GELU
/// is looked up for the f16-rounded gate in a table of f16 results, then multiplied by `up` in
/// f32. (A GELU off by up to an f16 rounding, ~5e-4 relative, but the peers' exact values.)
pub fn geglu_tanh_inplace(gate: &mut [f32], up: &[f32]) {
    debug_assert_eq!(gate.len(), up.len());
    let table = gelu_tanh_f16_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            half::f16::from_bits(table[half::f16::from_f32(x).to_bits() as usize]).to_f32() * u
        };
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
            assert_eq!(gelu_erf_exact(x), want as f32, "gelu({x})");
            let fast = gelu_erf(x);
            assert!((fast as f64 - want).abs() <= 4e-7 * want.abs() + 1e-35, "fast gelu({x}) = {fast}, want {want}");
        }
        // The tanh approximation at x = 1 is 0.841192: 1.5e-4 away, thousands of ulps.
        let tanh_form = |x: f32| 0.5 * x * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh());
        assert!((gelu_erf(1.0) - tanh_form(1.0)).abs() > 1e-4);
    }

    #[test]
    fn gelu_is_finite_and_monotone_where_it_should_be() {
        for gelu in [gelu_erf, gelu_erf_exact] {
            assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
            assert_eq!(gelu(f32::NEG_INFINITY), 0.0); // the limit, not -inf * 0 = NaN
            assert_eq!(gelu(-1e30), 0.0);
            assert_eq!(gelu(1e30), 1e30);
            assert!(gelu(f32::NAN).is_nan());
        }
        let mut x = -0.75f32;
        let mut last = gelu_erf(x);
        while x < 20.0 {
            x += 0.01;
            let y = gelu_erf(x);
            assert!(y >= last, "gelu decreases at {x}");
            last = y;
        }
    }

    /// Every f32 in steps of about 2^-10 relative (all exponents, both signs) from 1e-30 to 40.
    fn sweep() -> Vec<f32> {
        let mut x = Vec::new();
        let mut v = 1e-30f32;
        while v < 40.0 {
            x.extend([v, -v]);
            v = f32::from_bits(v.to_bits() + (1 << 13));
        }
        x
    }

    #[test]
    fn fast_gelu_is_within_a_few_ulps_of_the_exact_one() {
        // The worst error relative to the value, in units of f32 epsilon, with an absolute floor:
        // below |GELU| = 1e-28 (x < -11.3) an error up to 1e-35 counts as none, since erfc is
        // taken as 0 from x = -12.73 on, where GELU is -2.4e-36.
        let mut worst = (0f64, 0f32);
        for x in sweep() {
            let (fast, exact) = (gelu_erf(x) as f64, gelu_erf_exact(x) as f64);
            let err = (fast - exact).abs() / (exact.abs().max(1e-28) * f32::EPSILON as f64);
            if err > worst.0 {
                worst = (err, x);
            }
        }
        eprintln!("fast GELU: worst error {:.2} eps at x = {}", worst.0, worst.1);
        assert!(worst.0 <= 6.0, "worst error {:.2} eps at x = {}", worst.0, worst.1);
    }

    #[test]
    fn every_level_gives_the_same_bits_as_the_scalar_function() {
        // Tails past the last 8-lane register, and the special values.
        let mut x = sweep();
        x.truncate(4099);
        x.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 12.7, -12.7, 9.0 * std::f32::consts::SQRT_2]);
        let want: Vec<u32> = x.iter().map(|&v| gelu_erf(v).to_bits()).collect();
        for level in Level::all_available() {
            let mut got = x.clone();
            gelu_erf_inplace_at(level, &mut got);
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert!(got == want, "{level:?}");
        }
    }

    #[test]
    fn geglu_uses_the_f16_table_between_the_clamps() {
        let gate = [-11.0f32, -10.0, -3.0, -0.1, 0.0, 0.3337, 1.0, 2.5, 9.99, 10.0, 12.0, f32::NAN];
        let up = [2.0f32; 12];
        let mut g = gate;
        geglu_tanh_inplace(&mut g, &up);
        for (i, (&x, &y)) in gate.iter().zip(&g).enumerate() {
            let want = if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                x * 2.0
            } else {
                half::f16::from_f32(gelu_tanh(half::f16::from_f32(x).to_f32())).to_f32() * 2.0
            };
            assert!(want.to_bits() == y.to_bits() || (want.is_nan() && y.is_nan()), "value {i}: {y} vs {want}");
        }
        // Against the f64 formula: within the f16 roundings of the input and the result.
        for x in [-5.0f32, -1.0, -0.25, 0.5, 1.5, 4.0] {
            let xf = x as f64;
            let exact = 0.5 * xf * (1.0 + ((2.0 / PI).sqrt() * xf * (1.0 + 0.044715 * xf * xf)).tanh());
            let mut g = [x];
            geglu_tanh_inplace(&mut g, &[1.0]);
            assert!((g[0] as f64 - exact).abs() <= 2e-3 * exact.abs().max(1e-2), "{x}: {} vs {exact}", g[0]);
        }
    }
}
