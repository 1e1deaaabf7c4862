//! Plain math over a row of logits: argmax, softmax, one log-probability.

/// The index of the largest logit; ties go to the lowest index, NaN is ignored. Returns 0 when
/// every value is NaN or the slice is empty (a caller bug, debug assertion).
pub fn argmax(logits: &[f32]) -> u32 {
    debug_assert!(!logits.is_empty(), "argmax of empty logits");
    kernels::ops::argmax(logits) as u32
}

/// Numerically stable softmax in place: x_i <- exp(x_i - max) / sum_j exp(x_j - max).
///
/// Subtracting the max keeps exp() <= 1, so logits around 1e4 neither overflow nor lose their
/// ratios. NaN counts as -inf. The max itself gets exp(0) = 1 written directly, which also makes
/// +inf logits share the mass and an all -inf row uniform instead of NaN (inf - inf).
pub fn softmax_inplace(x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = if v.is_nan() {
            0.0
        } else if *v == max {
            1.0
        } else {
            (*v - max).exp()
        };
        sum += *v;
    }
    if sum == 0.0 {
        // Only when every entry was NaN: no information, so uniform.
        let uniform = 1.0 / x.len() as f32;
        x.iter_mut().for_each(|v| *v = uniform);
        return;
    }
    let inv_sum = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv_sum);
}

/// `log softmax(logits)[id]`, in f64: logit_id - (max + ln sum_j exp(logit_j - max)), the
/// negated cross-entropy of the row ([`kernels::loss::cross_entropy_row`], the one
/// implementation training and perplexity share).
///
/// Used for perplexity, where summing thousands of log-probabilities wants f64. NaN counts as
/// -inf. An `id` out of range is a caller bug (debug assertion); a release build returns -inf.
pub fn log_softmax_at(logits: &[f32], id: u32) -> f64 {
    -kernels::loss::cross_entropy_row(logits, id, 0.0, None)
}

/// The normaliser of a log-softmax, computed once for a row and then applied to any entry:
/// log p(x) = (x - max) - ln sum_j exp(x_j - max), in f64.
///
/// It follows the conventions of [`log_softmax_at`]: NaN counts as -inf, and the max itself is
/// shifted to exactly 0, so an all -inf row reads as uniform (like [`softmax_inplace`]) instead of
/// NaN.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogNormalizer {
    max: f64,
    ln_sum: f64,
}

impl LogNormalizer {
    /// The normaliser of `values` (one pass for the max, one for the sum).
    pub(crate) fn new(values: impl Iterator<Item = f32> + Clone) -> LogNormalizer {
        let max = values.clone().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = values.filter(|x| !x.is_nan()).map(|x| if x as f64 == max { 1.0 } else { (x as f64 - max).exp() }).sum();
        LogNormalizer { max, ln_sum: sum.ln() }
    }

    /// log softmax of one entry `x` of the row.
    pub(crate) fn logprob(&self, x: f32) -> f64 {
        if x.is_nan() {
            return f64::NEG_INFINITY;
        }
        let shifted = if x as f64 == self.max { 0.0 } else { x as f64 - self.max };
        shifted - self.ln_sum
    }
}
