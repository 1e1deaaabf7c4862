//! Next-token cross-entropy: the training loss, and the measure perplexity reports.
//!
//! Language models are trained to predict token t+1 from the positions up to t, so the logits
//! row of position t is scored against the label of position t+1 (the "shift"). A label of
//! [`IGNORE_INDEX`] (-100, PyTorch's and Hugging Face's convention) is not scored: prompt tokens
//! of an instruction example, padding. The loss is the mean over the scored positions only.
//!
//! Each row's loss is a max-shifted log-sum-exp in f64, `-(x_t - max) + ln sum_j exp(x_j - max)`:
//! logits around 1e4 neither overflow nor lose their differences. The gradient with respect to
//! the logits, `softmax(x) - onehot(t)` scaled by 1 / (scored positions), comes from the same
//! exponentials, written while the sum is taken.

/// A label that is not scored.
pub const IGNORE_INDEX: i64 = -100;

/// The result of [`next_token_loss`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loss {
    /// Mean negative log-likelihood over the scored positions.
    pub mean: f64,
    /// Positions scored.
    pub count: usize,
}

/// What [`next_token_loss`] refuses.
#[derive(Debug, Clone, PartialEq)]
pub enum LossError {
    /// The logits are not (T, V) for T labels.
    Shape { logits: usize, labels: usize, vocab: usize },
    /// A label that is neither a token id nor -100.
    Label { label: i64, position: usize, vocab: usize },
    /// Nothing to score: every label after the first is -100 (the mean would be 0/0).
    NothingScored,
}

impl std::fmt::Display for LossError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LossError::Shape { logits, labels, vocab } => write!(f, "logits hold {logits} values, not {labels} labels times a vocabulary of {vocab}"),
            LossError::Label { label, position, vocab } => {
                write!(f, "label {label} at position {position} is neither a token id below {vocab} nor -100 (ignored)")
            }
            LossError::NothingScored => write!(f, "no position is scored: every label after the first is -100"),
        }
    }
}

impl std::error::Error for LossError {}

/// `-log softmax(logits)[target]` in f64. With `grad` (the row's length), also writes
/// `scale * (softmax(logits) - onehot(target))` there, from the same exponentials. NaN logits
/// count as -inf; the max is shifted to exactly 0, so a row of -inf is uniform rather than NaN.
/// A `target` out of range is a caller bug (debug assertion); a release build returns +inf.
pub fn cross_entropy_row(logits: &[f32], target: u32, scale: f32, grad: Option<&mut [f32]>) -> f64 {
    let Some(&x_t) = logits.get(target as usize) else {
        debug_assert!(false, "target {target} out of range for {} logits", logits.len());
        return f64::INFINITY;
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e = |x: f32| -> f64 {
        if x.is_nan() {
            0.0
        } else if x as f64 == max {
            1.0
        } else {
            (x as f64 - max).exp()
        }
    };
    let sum: f64 = match grad {
        None => logits.iter().map(|&x| e(x)).sum(),
        Some(g) => {
            debug_assert_eq!(g.len(), logits.len());
            // The exponentials once: summed, and kept in the gradient row, which is then scaled
            // to the probabilities (times `scale`).
            let mut sum = 0.0f64;
            for (gi, &x) in g.iter_mut().zip(logits) {
                let ex = e(x);
                sum += ex;
                *gi = ex as f32;
            }
            let k = (scale as f64 / sum) as f32;
            g.iter_mut().for_each(|gi| *gi *= k);
            g[target as usize] -= scale;
            sum
        }
    };
    if x_t.is_nan() {
        return f64::INFINITY;
    }
    let shifted = if x_t as f64 == max { 0.0 } else { x_t as f64 - max };
    sum.ln() - shifted
}

/// Next-token cross-entropy of logits (T, V) against `labels` (T): row t is scored against
/// `labels[t + 1]` unless it is [`IGNORE_INDEX`]; the last row predicts nothing. Returns the
/// mean over the scored rows. With `grad` (T, V), writes the gradient of that mean with respect
/// to the logits (zero rows where nothing is scored).
pub fn next_token_loss(logits: &[f32], vocab: usize, labels: &[i64], mut grad: Option<&mut [f32]>) -> Result<Loss, LossError> {
    let t = labels.len();
    if vocab == 0 || logits.len() != t * vocab || grad.as_ref().is_some_and(|g| g.len() != logits.len()) {
        return Err(LossError::Shape { logits: logits.len(), labels: t, vocab });
    }
    for (position, &label) in labels.iter().enumerate() {
        if label != IGNORE_INDEX && !(0..vocab as i64).contains(&label) {
            return Err(LossError::Label { label, position, vocab });
        }
    }
    let count = labels.iter().skip(1).filter(|&&l| l != IGNORE_INDEX).count();
    if count == 0 {
        return Err(LossError::NothingScored);
    }
    let scale = 1.0 / count as f32;
    let mut total = 0.0f64;
    for pos in 0..t {
        let row = &logits[pos * vocab..(pos + 1) * vocab];
        let g = grad.as_deref_mut().map(|g| &mut g[pos * vocab..(pos + 1) * vocab]);
        match labels.get(pos + 1) {
            Some(&label) if label != IGNORE_INDEX => total += cross_entropy_row(row, label as u32, scale, g),
            _ => {
                if let Some(g) = g {
                    g.fill(0.0);
                }
            }
        }
    }
    Ok(Loss { mean: total / count as f64, count })
}

/// Labels for training on `tokens` where the first `prompt_len` are the prompt: those are
/// [`IGNORE_INDEX`], so only the response is scored (its first token from the prompt's last).
pub fn mask_prompt(tokens: &[u32], prompt_len: usize) -> Vec<i64> {
    tokens.iter().enumerate().map(|(i, &t)| if i < prompt_len { IGNORE_INDEX } else { t as i64 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(row: &[f32], target: usize) -> f64 {
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
        lse - row[target] as f64
    }

    fn rows(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
            })
            .collect()
    }

    #[test]
    fn a_row_matches_the_f64_definition_and_survives_large_logits() {
        let row = rows(1, 50);
        for t in [0, 7, 49] {
            assert!((cross_entropy_row(&row, t, 1.0, None) - naive(&row, t as usize)).abs() < 1e-12);
        }
        // Logits near 1e4: a naive exp overflows; the shifted one gives ln(1 + e^-1) exactly.
        let big = [1e4f32, 1e4 - 1.0];
        let want = (1.0f64 + (-1.0f64).exp()).ln();
        assert!((cross_entropy_row(&big, 0, 1.0, None) - want).abs() < 1e-12);
        assert!((cross_entropy_row(&big, 1, 1.0, None) - (want + 1.0)).abs() < 1e-12);
        // -inf logits (banned tokens) take no mass; a NaN target is infinitely unlikely.
        assert!((cross_entropy_row(&[0.0, f32::NEG_INFINITY], 0, 1.0, None)).abs() < 1e-12);
        assert_eq!(cross_entropy_row(&[0.0, f32::NAN], 1, 1.0, None), f64::INFINITY);
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        // d/dx_j of the mean loss, by central differences of the f64 loss, against the fused one.
        let (t, v) = (5, 11);
        let logits = rows(3, t * v);
        let labels: Vec<i64> = vec![4, 2, IGNORE_INDEX, 9, 0];
        let mut grad = vec![0f32; t * v];
        let loss = next_token_loss(&logits, v, &labels, Some(&mut grad)).unwrap();
        assert_eq!(loss.count, 3);
        let h = 1e-2f32;
        for i in 0..t * v {
            let (mut up, mut down) = (logits.clone(), logits.clone());
            up[i] += h;
            down[i] -= h;
            let fd =
                (next_token_loss(&up, v, &labels, None).unwrap().mean - next_token_loss(&down, v, &labels, None).unwrap().mean) / (2.0 * h as f64);
            assert!((fd - grad[i] as f64).abs() < 2e-4, "logit {i}: finite difference {fd}, gradient {}", grad[i]);
        }
    }

    #[test]
    fn position_t_is_scored_against_label_t_plus_1() {
        // Logits that put all mass on the *next* token score ~0; on the current token, a lot.
        let v = 4;
        let tokens = [1u32, 3, 0, 2];
        let one_hot = |k: u32| (0..v).map(|j| if j == k as usize { 30.0 } else { 0.0 }).collect::<Vec<f32>>();
        let next: Vec<f32> = (0..4).flat_map(|p| one_hot(tokens[(p + 1).min(3)])).collect();
        let same: Vec<f32> = (0..4).flat_map(|p| one_hot(tokens[p])).collect();
        let labels: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let good = next_token_loss(&next, v, &labels, None).unwrap();
        let bad = next_token_loss(&same, v, &labels, None).unwrap();
        assert_eq!(good.count, 3, "the last row predicts nothing");
        assert!(good.mean < 1e-10 && bad.mean > 29.0, "{good:?} {bad:?}");
    }

    #[test]
    fn ignored_labels_are_not_counted_and_prompts_can_be_masked() {
        let v = 6;
        let logits = rows(5, 5 * v);
        let tokens = [1u32, 2, 3, 4, 5];
        let labels = mask_prompt(&tokens, 3);
        assert_eq!(labels, vec![IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 4, 5]);
        let mut grad = vec![1f32; 5 * v];
        let loss = next_token_loss(&logits, v, &labels, Some(&mut grad)).unwrap();
        // Scored: row 2 -> token 4 and row 3 -> token 5; the mean is over those two only.
        let want = (naive(&logits[2 * v..3 * v], 4) + naive(&logits[3 * v..4 * v], 5)) / 2.0;
        assert_eq!(loss.count, 2);
        assert!((loss.mean - want).abs() < 1e-12);
        for pos in [0, 1, 4] {
            assert!(grad[pos * v..(pos + 1) * v].iter().all(|&g| g == 0.0), "row {pos} is not scored");
        }
        for pos in [2, 3] {
            let s: f32 = grad[pos * v..(pos + 1) * v].iter().sum();
            assert!(s.abs() < 1e-6, "a scored row's gradient sums to 0, got {s}");
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let logits = rows(7, 12);
        assert_eq!(next_token_loss(&logits, 4, &[1, 2], None), Err(LossError::Shape { logits: 12, labels: 2, vocab: 4 }));
        assert_eq!(next_token_loss(&logits, 4, &[1, 4, 0], None), Err(LossError::Label { label: 4, position: 1, vocab: 4 }));
        assert_eq!(next_token_loss(&logits, 4, &[1, -5, 0], None), Err(LossError::Label { label: -5, position: 1, vocab: 4 }));
        assert_eq!(next_token_loss(&logits, 4, &[1, IGNORE_INDEX, IGNORE_INDEX], None), Err(LossError::NothingScored));
        let e = next_token_loss(&logits, 4, &[1, IGNORE_INDEX, IGNORE_INDEX], None).unwrap_err().to_string();
        assert!(e.contains("-100"), "{e}");
    }

    proptest! {
        /// The loss is never negative, and each scored row's gradient sums to zero and lies in
        /// [-1/count, 1/count].
        #[test]
        fn loss_and_gradient_bounds(seed in 0u64..1000, t in 2usize..6, v in 2usize..9, ignore in proptest::collection::vec(any::<bool>(), 6)) {
            let logits = rows(seed, t * v);
            let mut labels: Vec<i64> = (0..t).map(|i| ((seed as usize + i * 7) % v) as i64).collect();
            for (i, l) in labels.iter_mut().enumerate().skip(2) {
                if ignore[i] { *l = IGNORE_INDEX; }
            }
            let mut grad = vec![0f32; t * v];
            let loss = next_token_loss(&logits, v, &labels, Some(&mut grad)).unwrap();
            prop_assert!(loss.mean >= 0.0);
            let bound = 1.0 / loss.count as f32 + 1e-6;
            for row in grad.chunks_exact(v) {
                prop_assert!(row.iter().sum::<f32>().abs() < 1e-5);
                prop_assert!(row.iter().all(|g| g.abs() <= bound));
            }
        }
    }
}
