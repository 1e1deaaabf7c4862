//! The float type of the training path: f32 to train, f64 to check gradients against finite
//! differences with the same code.
//!
//! Everything elementwise is generic over [`Real`]. The two operations where speed lives, products
//! with a frozen matrix and the cross-entropy over the vocabulary, are methods of the type: f32
//! runs them on the packed kernels (`kernels::f32mat`, `kernels::loss`), f64 on plain loops.
//!
//! The f32 path can also hold its frozen matrices in 8 bits ([`FrozenFormat::Q8_0`], QLoRA's
//! idea with inference's kernels): each matrix and its transpose quantized to Q8_0 blocks along
//! their inputs, and every product's input (activations forward, gradients backward) quantized to
//! 8-bit blocks of 32 as inference quantizes activations; the integer kernels of
//! `kernels::matmul` then do the work, in the block order. Or in bf16 on Intel AMX
//! ([`FrozenFormat::Bf16`]): weights and inputs rounded to bf16, products summed in f32.

use kernels::bf16mat::{matmul_bf16, Bf16Rows, PackedBf16};
use kernels::f32mat::{matmul_f32, PackedF32};
use kernels::quant::{quantize_row, quantize_rows_q8};
use kernels::{BlockQ8, Format, Level, MatRef, SumOrder, ThreadPool, QK};
use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// f32 or f64.
pub trait Real:
    Copy
    + Default
    + PartialOrd
    + Debug
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
{
    /// A frozen matrix w (N, K) made ready for [`Real::matmul_nt`].
    type Mat: Send + Sync;

    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;

    /// From f32 (exact for both types).
    fn from_f32(x: f32) -> Self;
    /// From f64 (rounded for f32).
    fn from_f64(x: f64) -> Self;
    /// To f64 (exact).
    fn to_f64(self) -> f64;
    /// e^x.
    fn exp(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// The larger of two.
    fn max(self, other: Self) -> Self {
        if other > self {
            other
        } else {
            self
        }
    }

    /// w (N, K) row-major -> the form [`Real::matmul_nt`] reads, in `format` where the type
    /// has a choice (f32; f64 keeps its own).
    fn prepare(w: &[f32], n: usize, k: usize, format: FrozenFormat, level: Level) -> Self::Mat;

    /// y (T, N) = x (T, K) . w^T, on the pool's threads.
    fn matmul_nt(pool: &ThreadPool, level: Level, w: &Self::Mat, x: &[Self], t: usize, y: &mut [Self]);

    /// `-log softmax(logits)[target]`; with `grad`, also `scale * (softmax - onehot)` there.
    fn cross_entropy(logits: &[Self], target: u32, scale: Self, grad: Option<&mut [Self]>) -> f64;
}

/// How the f32 path stores its frozen matrices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FrozenFormat {
    /// f32 panels: products as exact as f32 allows (the PEFT comparisons use these).
    #[default]
    F32,
    /// Q8_0 blocks, products on the 8-bit kernels (inputs quantized per 32): about a quarter of
    /// the memory and several times the speed. Matrices whose inputs are not a multiple of 32
    /// stay in f32.
    Q8_0,
    /// bf16, products on Intel AMX (inputs rounded to bf16, sums in f32): 8 significant bits
    /// like Q8_0's, at AMX's speed. Only where AMX runs (`kernels::bf16mat::amx_available`).
    Bf16,
}

impl FrozenFormat {
    /// The fastest format this machine runs: bf16 on AMX, Q8_0 elsewhere.
    pub fn fastest() -> FrozenFormat {
        if kernels::bf16mat::amx_available() {
            FrozenFormat::Bf16
        } else {
            FrozenFormat::Q8_0
        }
    }

    /// "f32", "q8_0" or "bf16".
    pub fn name(self) -> &'static str {
        match self {
            FrozenFormat::F32 => "f32",
            FrozenFormat::Q8_0 => "q8_0",
            FrozenFormat::Bf16 => "bf16",
        }
    }
}

/// A frozen matrix of the f32 path.
pub enum MatF32 {
    /// f32 panels.
    Packed(PackedF32),
    /// Q8_0 rows (and the kernel level's repacking of them).
    Q8 { data: Vec<u8>, packed: Option<Vec<u8>>, rows: usize, cols: usize },
    /// bf16 AMX tiles.
    Bf16(PackedBf16),
}

thread_local! {
    /// The 8-bit blocks of a product's input, kept from one product to the next.
    static INPUT_Q8: std::cell::RefCell<Vec<BlockQ8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The bf16 rows of a product's input, kept from one product to the next.
    static INPUT_BF16: std::cell::RefCell<Bf16Rows> = std::cell::RefCell::new(Bf16Rows::new());
}

impl Real for f32 {
    type Mat = MatF32;
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;

    fn from_f32(x: f32) -> f32 {
        x
    }
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn exp(self) -> f32 {
        exp_f32(self)
    }
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }

    fn prepare(w: &[f32], n: usize, k: usize, format: FrozenFormat, level: Level) -> MatF32 {
        if format == FrozenFormat::Bf16 {
            assert!(kernels::bf16mat::amx_available(), "bf16 frozen weights need AMX (check FrozenFormat::fastest or amx_available first)");
            return MatF32::Bf16(PackedBf16::pack(w, n, k));
        }
        if format == FrozenFormat::F32 || !k.is_multiple_of(QK) {
            return MatF32::Packed(PackedF32::pack(w, n, k));
        }
        let row_bytes = Format::Q8_0.row_bytes(k).expect("k is a multiple of 32");
        let mut data = vec![0u8; n * row_bytes];
        for (row, dst) in w.chunks_exact(k).zip(data.chunks_exact_mut(row_bytes)) {
            quantize_row(Format::Q8_0, row, dst);
        }
        let packed = kernels::matmul::pack_for(level, Format::Q8_0, &data, n, k);
        MatF32::Q8 { data, packed, rows: n, cols: k }
    }

    fn matmul_nt(pool: &ThreadPool, level: Level, w: &MatF32, x: &[f32], t: usize, y: &mut [f32]) {
        match w {
            MatF32::Packed(w) => matmul_f32(pool, level, w, None, x, t, y),
            MatF32::Q8 { data, packed, rows, cols } => {
                let w = MatRef { format: Format::Q8_0, data, rows: *rows, cols: *cols, packed: packed.as_deref(), order: SumOrder::Blocks };
                INPUT_Q8.with_borrow_mut(|xq| {
                    xq.resize(t * cols / QK, BlockQ8::default());
                    quantize_rows_q8(pool, x, xq, t);
                    kernels::matmul(pool, level, &w, x, xq, t, y);
                });
            }
            MatF32::Bf16(w) => INPUT_BF16.with_borrow_mut(|xb| {
                xb.ensure(t, w.cols());
                matmul_bf16(pool, w, None, x, t, y, xb);
            }),
        }
    }

    fn cross_entropy(logits: &[f32], target: u32, scale: f32, grad: Option<&mut [f32]>) -> f64 {
        kernels::loss::cross_entropy_row(logits, target, scale, grad)
    }
}

/// e^x in f32 without a branch or a fused multiply-add, so that the softmax and SiLU loops
/// vectorize in every compilation of them (libm's `expf` is a call per value, and `mul_add`
/// without FMA is a call too): the range reduction and degree-5 polynomial of the kernels'
/// `exp_poly` with plain multiplies and adds (within 2 ulps of e^x), the argument clamped to
/// [-87, 88] so that 2^n is a normal float built from its bits. Past the clamp it gives e^-87
/// (1.6e-38) or e^88, which move no sigmoid and no normalized softmax; NaN stays NaN.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const SHIFT: f32 = 12582912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let z = x * f32::from_bits(0x3fb8_aa3b) + SHIFT; // x log2(e) + SHIFT
    let n = z - SHIFT;
    // x - n ln2 in two parts (n ln2_hi is exact: ln2_hi has 16 significant bits, |n| < 128).
    let b = (x - n * f32::from_bits(0x3f31_7200)) - n * f32::from_bits(0x35bf_be8e);
    let u = b * b;
    let c = [
        f32::from_bits(0x3f7f_fff6),
        f32::from_bits(0x3eff_fedb),
        f32::from_bits(0x3e2a_af33),
        f32::from_bits(0x3d2b_9f17),
        f32::from_bits(0x3c07_2010),
    ];
    let j = ((c[4] * b + c[3]) * u + (c[2] * b + c[1])) * u + (c[0] * b + 1.0);
    let n_bits = (z.to_bits() as i32) - (SHIFT.to_bits() as i32); // n, from the rounding step
    j * f32::from_bits(((n_bits + 127) as u32) << 23)
}

/// An f64 matrix for the gradient checks: (N, K) row-major.
pub struct MatF64 {
    w: Vec<f64>,
    n: usize,
    k: usize,
}

impl Real for f64 {
    type Mat = MatF64;
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;

    fn from_f32(x: f32) -> f64 {
        x as f64
    }
    fn from_f64(x: f64) -> f64 {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn exp(self) -> f64 {
        f64::exp(self)
    }
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }

    fn prepare(w: &[f32], n: usize, k: usize, _format: FrozenFormat, _level: Level) -> MatF64 {
        assert_eq!(w.len(), n * k);
        MatF64 { w: w.iter().map(|&x| x as f64).collect(), n, k }
    }

    fn matmul_nt(_pool: &ThreadPool, _level: Level, w: &MatF64, x: &[f64], t: usize, y: &mut [f64]) {
        assert_eq!((x.len(), y.len()), (t * w.k, t * w.n));
        for (xr, yr) in x.chunks_exact(w.k).zip(y.chunks_exact_mut(w.n)) {
            for (yv, wr) in yr.iter_mut().zip(w.w.chunks_exact(w.k)) {
                *yv = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
            }
        }
    }

    fn cross_entropy(logits: &[f64], target: u32, scale: f64, grad: Option<&mut [f64]>) -> f64 {
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logits.iter().map(|&x| (x - max).exp()).sum();
        if let Some(g) = grad {
            for (gi, &x) in g.iter_mut().zip(logits) {
                *gi = scale * (x - max).exp() / sum;
            }
            g[target as usize] -= scale;
        }
        sum.ln() - (logits[target as usize] - max)
    }
}

#[cfg(test)]
mod exp_tests {
    use super::exp_f32;

    #[test]
    fn exp_f32_is_within_two_ulps_and_clamps_instead_of_overflowing() {
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            let ulp = f32::EPSILON as f64 * want;
            assert!((got - want).abs() <= 2.0 * ulp, "e^{x}: {got} vs {want}");
            x += 0.0173;
        }
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1000.0), exp_f32(-87.0));
        assert!(exp_f32(1000.0).is_finite() && exp_f32(f32::INFINITY) == exp_f32(88.0));
        assert!(exp_f32(f32::NAN).is_nan());
        // The sigmoid of the SiLU stays exact at the extremes: 1 and (almost) 0, never NaN.
        assert_eq!(1.0 / (1.0 + exp_f32(-200.0)), 1.0);
        assert!(1.0 / (1.0 + exp_f32(200.0)) < 1e-38);
    }
}
