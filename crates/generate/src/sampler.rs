//! Token sampling: greedy, or the llama.cpp chain top_k -> top_p -> min_p -> temperature -> draw.
//!
//! Order matters. We follow llama.cpp's default chain, where top_p and min_p judge the
//! *untempered* distribution (softmax at T = 1) and temperature only reshapes the draw among the
//! survivors. Hugging Face `generate` applies temperature first, so with T != 1 the two keep
//! different top_p / min_p sets: a high T flattens the distribution and HF's top_p then keeps more
//! tokens than ours. (top_k does not care: dividing by T > 0 keeps the ranking.)
//!
//! Determinism: candidates are ranked by logit descending and ties go to the lower token id, so a
//! given (logits, config, seed) always yields the same token sequence.

use crate::rng::Rng;
use std::cmp::Ordering;
use thiserror::Error;

/// A sampler setting outside its allowed range.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SamplerError {
    /// Temperature must be finite and >= 0.
    #[error("temperature must be a finite number >= 0 (0 means greedy), got {got}")]
    Temperature {
        /// The rejected value.
        got: f32,
    },
    /// top_p must be in (0, 1].
    #[error("top_p must be in (0, 1] (1 turns it off), got {got}")]
    TopP {
        /// The rejected value.
        got: f32,
    },
    /// min_p must be in [0, 1].
    #[error("min_p must be in [0, 1] (0 turns it off), got {got}")]
    MinP {
        /// The rejected value.
        got: f32,
    },
}

/// How to pick the next token from a row of logits.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Divides the logits of the surviving candidates; <= 0 means greedy (argmax, no randomness).
    pub temperature: f32,
    /// Keep only the k highest logits; 0 turns it off.
    pub top_k: usize,
    /// Keep the smallest most-likely prefix whose probability mass is >= top_p; 1.0 turns it off.
    pub top_p: f32,
    /// Keep tokens with p >= min_p * p_max; 0.0 turns it off.
    pub min_p: f32,
    /// Seed of the sampler's own random stream.
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// llama.cpp's defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, seed 0.
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Always the most likely token: temperature 0, every filter off.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 0,
        }
    }

    /// Checks every setting is in its allowed range; the error names the range.
    pub fn validate(&self) -> Result<(), SamplerError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(SamplerError::Temperature {
                got: self.temperature,
            });
        }
        // Written so that NaN fails too.
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplerError::TopP { got: self.top_p });
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return Err(SamplerError::MinP { got: self.min_p });
        }
        Ok(())
    }
}

/// One surviving token: its id and its (possibly tempered) logit.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Candidate {
    id: u32,
    logit: f32,
}

/// Rank order: logit descending, ties to the lower id. Logits are NaN-free by the time they get
/// here, so `partial_cmp` never returns `None`; -0.0 and 0.0 compare equal, as they should.
fn rank(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit
        .partial_cmp(&a.logit)
        .unwrap_or(Ordering::Equal)
        .then(a.id.cmp(&b.id))
}

/// A configured sampler with its own random stream and scratch buffers.
///
/// The buffers grow to the vocabulary size on the first call and are reused afterwards, so
/// sampling allocates nothing once warmed up.
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
    /// (V) at most; the candidates still in the running, ranked after `filter`.
    candidates: Vec<Candidate>,
    /// Same length as `candidates`: their probabilities, scratch for top_p and the draw.
    probs: Vec<f32>,
}

impl Sampler {
    /// A sampler for `config`, after checking it.
    pub fn new(config: SamplerConfig) -> Result<Sampler, SamplerError> {
        config.validate()?;
        let rng = Rng::new(config.seed);
        Ok(Sampler {
            config,
            rng,
            candidates: Vec::new(),
            probs: Vec::new(),
        })
    }

    /// The settings this sampler was made with.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Picks a token id from one row of logits (V). NaN logits count as -inf.
    ///
    /// Empty logits are a caller bug (debug assertion); a release build returns 0.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        debug_assert!(!logits.is_empty(), "sample called with empty logits");
        if logits.is_empty() {
            return 0;
        }
        if self.config.temperature <= 0.0 {
            return argmax(logits);
        }
        self.filter(logits);

        let inv_temperature = 1.0 / self.config.temperature;
        self.probs.clear();
        self.probs
            .extend(self.candidates.iter().map(|c| c.logit * inv_temperature));
        softmax_inplace(&mut self.probs);

        // Inverse-CDF draw. The sum may round to slightly under 1, so a draw beyond the last
        // cumulative value falls to the last candidate.
        let r = self.rng.next_f32();
        let mut cumulative = 0.0f32;
        for (c, &p) in self.candidates.iter().zip(&self.probs) {
            cumulative += p;
            if r < cumulative {
                return c.id;
            }
        }
        self.candidates.last().map_or(0, |c| c.id)
    }

    /// Runs top_k -> top_p -> min_p, leaving the survivors in `self.candidates`, ranked.
    /// Never leaves fewer than one candidate (given non-empty logits).
    fn filter(&mut self, logits: &[f32]) {
        self.candidates.clear();
        self.candidates
            .extend(logits.iter().enumerate().map(|(i, &x)| Candidate {
                id: i as u32,
                logit: if x.is_nan() { f32::NEG_INFINITY } else { x },
            }));

        self.top_k();
        self.top_p();
        self.min_p();
    }

    /// Keeps the k best candidates and ranks them. When k is small (40 of 49k) a partial
    /// selection, O(V), then a sort of k beats sorting all V; with k off we sort everything,
    /// because top_p needs the ranking.
    fn top_k(&mut self) {
        let k = self.config.top_k;
        if k > 0 && k < self.candidates.len() {
            self.candidates.select_nth_unstable_by(k - 1, rank);
            self.candidates.truncate(k);
        }
        self.candidates.sort_unstable_by(rank);
    }

    /// Keeps the smallest ranked prefix whose mass (softmax over the current candidates, at
    /// T = 1) reaches top_p, including the token that crosses it; at least one token.
    fn top_p(&mut self) {
        let p = self.config.top_p;
        if p >= 1.0 {
            return;
        }
        self.probs.clear();
        self.probs.extend(self.candidates.iter().map(|c| c.logit));
        softmax_inplace(&mut self.probs);
        let mut cumulative = 0.0f32;
        let mut keep = self.candidates.len();
        for (i, &prob) in self.probs.iter().enumerate() {
            cumulative += prob;
            if cumulative >= p {
                keep = i + 1;
                break;
            }
        }
        self.candidates.truncate(keep);
    }

    /// Keeps tokens with p_i >= min_p * p_max. The normaliser cancels in p_i / p_max, so this is
    /// logit_i >= logit_max + ln(min_p) (as llama.cpp does it): no softmax needed.
    fn min_p(&mut self) {
        let min_p = self.config.min_p;
        if min_p <= 0.0 {
            return;
        }
        let Some(best) = self.candidates.first() else {
            return;
        };
        let threshold = best.logit + min_p.ln();
        // Ranked descending, so the survivors are a prefix; the best always survives.
        let keep = self
            .candidates
            .iter()
            .position(|c| c.logit < threshold)
            .unwrap_or(self.candidates.len());
        self.candidates.truncate(keep.max(1));
    }
}

/// The index of the largest logit; ties go to the lowest index, NaN is ignored. Returns 0 when
/// every value is NaN or the slice is empty (a caller bug, debug assertion).
pub fn argmax(logits: &[f32]) -> u32 {
    debug_assert!(!logits.is_empty(), "argmax of empty logits");
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    let mut found = false;
    for (i, &x) in logits.iter().enumerate() {
        // Strict `>` keeps the first of equal maxima; NaN compares false and is skipped. The
        // `found` arm picks the first non-NaN value even when it is -inf.
        if (!found && !x.is_nan()) || x > best_value {
            best = i;
            best_value = x;
            found = true;
        }
    }
    best as u32
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

/// log softmax(logits)[id], in f64: logit_id - (max + ln sum_j exp(logit_j - max)).
///
/// Used for perplexity, where summing thousands of log-probabilities wants f64. NaN counts as
/// -inf. An `id` out of range is a caller bug (debug assertion); a release build returns -inf.
pub fn log_softmax_at(logits: &[f32], id: u32) -> f64 {
    let Some(&target) = logits.get(id as usize) else {
        debug_assert!(
            false,
            "token id {id} out of range for {} logits",
            logits.len()
        );
        return f64::NEG_INFINITY;
    };
    if target.is_nan() {
        return f64::NEG_INFINITY;
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| {
            if x as f64 == max {
                1.0
            } else {
                (x as f64 - max).exp()
            }
        })
        .sum();
    let shifted = if target as f64 == max {
        0.0
    } else {
        target as f64 - max
    };
    shifted - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use proptest::prelude::*;

    /// A sampler with only the given filters on, temperature 1.
    fn sampler(top_k: usize, top_p: f32, min_p: f32, seed: u64) -> Sampler {
        let config = SamplerConfig {
            temperature: 1.0,
            top_k,
            top_p,
            min_p,
            seed,
        };
        Sampler::new(config).unwrap()
    }

    /// Logits whose softmax is exactly `probs` (up to rounding).
    fn logits_of(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    /// Ids left after top_k -> top_p -> min_p, in rank order.
    fn kept(s: &mut Sampler, logits: &[f32]) -> Vec<u32> {
        s.filter(logits);
        s.candidates.iter().map(|c| c.id).collect()
    }

    /// Fraction of `draws` samples that landed on each of `n` tokens.
    fn frequencies(s: &mut Sampler, logits: &[f32], draws: usize) -> Vec<f64> {
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..draws {
            counts[s.sample(logits) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    #[test]
    fn defaults_are_llama_cpp_defaults() {
        let c = SamplerConfig::default();
        assert_eq!(
            (c.temperature, c.top_k, c.top_p, c.min_p, c.seed),
            (0.8, 40, 0.95, 0.05, 0)
        );
        assert!(c.validate().is_ok());
        assert!(SamplerConfig::greedy().validate().is_ok());
    }

    #[test]
    fn validate_rejects_out_of_range_settings_and_names_the_range() {
        let bad = |f: fn(&mut SamplerConfig)| {
            let mut c = SamplerConfig::default();
            f(&mut c);
            Sampler::new(c).err().expect("should be rejected")
        };
        assert_eq!(
            bad(|c| c.temperature = -0.5),
            SamplerError::Temperature { got: -0.5 }
        );
        assert!(matches!(
            bad(|c| c.temperature = f32::NAN),
            SamplerError::Temperature { .. }
        ));
        assert!(matches!(
            bad(|c| c.temperature = f32::INFINITY),
            SamplerError::Temperature { .. }
        ));
        assert_eq!(bad(|c| c.top_p = 0.0), SamplerError::TopP { got: 0.0 });
        assert_eq!(bad(|c| c.top_p = 1.5), SamplerError::TopP { got: 1.5 });
        assert!(matches!(
            bad(|c| c.top_p = f32::NAN),
            SamplerError::TopP { .. }
        ));
        assert_eq!(bad(|c| c.min_p = -0.1), SamplerError::MinP { got: -0.1 });
        assert_eq!(bad(|c| c.min_p = 1.1), SamplerError::MinP { got: 1.1 });
        let message = bad(|c| c.top_p = 2.0).to_string();
        assert!(
            message.contains("(0, 1]") && message.contains('2'),
            "{message}"
        );
    }

    #[test]
    fn top_p_keeps_top_token_when_it_alone_exceeds_p() {
        let logits = logits_of(&[0.05, 0.9, 0.05]);
        let mut s = sampler(0, 0.5, 0.0, 1);
        assert_eq!(kept(&mut s, &logits), vec![1]);
        assert!((0..100).all(|_| s.sample(&logits) == 1));
    }

    #[test]
    fn top_p_includes_the_token_that_crosses_p() {
        // Mass 0.5 < 0.7 after the first token, 0.8 >= 0.7 after the second: keep both.
        let logits = logits_of(&[0.2, 0.5, 0.3]);
        assert_eq!(kept(&mut sampler(0, 0.7, 0.0, 1), &logits), vec![1, 2]);
        // Just past the first token's mass still needs the second.
        assert_eq!(kept(&mut sampler(0, 0.51, 0.0, 1), &logits), vec![1, 2]);
        assert_eq!(kept(&mut sampler(0, 0.49, 0.0, 1), &logits), vec![1]);
    }

    #[test]
    fn top_k_is_applied_before_softmax_so_top_p_sees_renormalised_mass() {
        // Over all four, the first token has 0.4 < 0.45 and top_p alone would keep two. After
        // top_k = 2 the survivors renormalise to 0.5 / 0.5, so top_p 0.45 keeps one.
        let logits = logits_of(&[0.4, 0.4, 0.1, 0.1]);
        assert_eq!(kept(&mut sampler(0, 0.45, 0.0, 1), &logits), vec![0, 1]);
        assert_eq!(kept(&mut sampler(2, 0.45, 0.0, 1), &logits), vec![0]);
    }

    #[test]
    fn top_k_draws_renormalise_over_the_k_kept() {
        let logits = logits_of(&[0.4, 0.1, 0.4, 0.1]);
        let freq = frequencies(&mut sampler(2, 1.0, 0.0, 3), &logits, 20_000);
        assert_eq!((freq[1], freq[3]), (0.0, 0.0));
        assert!(
            (freq[0] - 0.5).abs() < 0.02 && (freq[2] - 0.5).abs() < 0.02,
            "{freq:?}"
        );
    }

    #[test]
    fn min_p_is_relative_to_the_max_probability() {
        // Threshold 0.3 * 0.5 = 0.15 keeps 0.2 and 0.16; an absolute 0.3 would keep only 0.5.
        let logits = logits_of(&[0.14, 0.5, 0.2, 0.16]);
        assert_eq!(kept(&mut sampler(0, 1.0, 0.3, 1), &logits), vec![1, 2, 3]);
        // min_p 1 keeps only the max.
        assert_eq!(kept(&mut sampler(0, 1.0, 1.0, 1), &logits), vec![1]);
    }

    #[test]
    fn temperature_zero_is_greedy_argmax() {
        let logits = [0.3, -1.0, 2.5, 2.5, 0.0];
        for temperature in [0.0, -1.0] {
            let config = SamplerConfig {
                temperature,
                ..SamplerConfig::default()
            };
            // Negative temperature is rejected by validate; greedy semantics still hold.
            let mut s = Sampler {
                rng: Rng::new(0),
                candidates: vec![],
                probs: vec![],
                config,
            };
            assert!((0..20).all(|_| s.sample(&logits) == 2));
        }
        let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
        assert_eq!(s.sample(&logits), argmax(&logits));
    }

    #[test]
    fn temperature_applies_after_top_p_llama_cpp_order() {
        // At T = 1 top_p 0.85 keeps {0, 1} (0.6 + 0.3). HF would apply T = 10 first, flattening
        // the distribution so that top_p keeps all three; in our order token 2 is never drawn.
        let logits = logits_of(&[0.6, 0.3, 0.1]);
        let config = SamplerConfig {
            temperature: 10.0,
            top_k: 0,
            top_p: 0.85,
            min_p: 0.0,
            seed: 5,
        };
        let mut s = Sampler::new(config).unwrap();
        let freq = frequencies(&mut s, &logits, 5_000);
        assert_eq!(freq[2], 0.0);
        // T = 10 still flattens the draw among the two survivors: 0.6^0.1 / (0.6^0.1 + 0.3^0.1).
        let want = 0.6f64.powf(0.1) / (0.6f64.powf(0.1) + 0.3f64.powf(0.1));
        assert!((freq[0] - want).abs() < 0.03, "{} vs {want}", freq[0]);
    }

    #[test]
    fn softmax_of_logits_around_1e4_is_finite_and_exact() {
        let mut x = [1e4f32, 1e4 - 1.0];
        softmax_inplace(&mut x);
        let p0 = 1.0 / (1.0 + (-1.0f64).exp());
        assert!(
            (x[0] as f64 - p0).abs() < 1e-6 && (x[1] as f64 - (1.0 - p0)).abs() < 1e-6,
            "{x:?}"
        );

        let mut y = [-1e4f32, 1e4, 1e4];
        softmax_inplace(&mut y);
        assert_eq!(y, [0.0, 0.5, 0.5]);

        let lp = log_softmax_at(&[1e4, 1e4 - 1.0], 1);
        assert!((lp - (1.0 - p0).ln()).abs() < 1e-12, "{lp}");
    }

    #[test]
    fn softmax_handles_infinities_and_nan() {
        let mut x = [f32::NEG_INFINITY; 4];
        softmax_inplace(&mut x);
        assert_eq!(x, [0.25; 4]);
        let mut x = [1.0, f32::INFINITY, f32::NAN, f32::INFINITY];
        softmax_inplace(&mut x);
        assert_eq!(x, [0.0, 0.5, 0.0, 0.5]);
        let mut x = [f32::NAN, f32::NAN];
        softmax_inplace(&mut x);
        assert_eq!(x, [0.5, 0.5]);
    }

    #[test]
    fn log_softmax_at_matches_f64_reference() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32) * 0.13 - 5.0)
            .collect();
        let lse = logits.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        for id in [0u32, 17, 999] {
            let want = logits[id as usize] as f64 - lse;
            assert!((log_softmax_at(&logits, id) - want).abs() < 1e-12);
        }
        assert_eq!(log_softmax_at(&[1.0, f32::NAN], 1), f64::NEG_INFINITY);
        assert!((log_softmax_at(&[1.0, f32::NAN], 0)).abs() < 1e-12);
    }

    #[test]
    fn same_seed_same_sequence_different_seed_different() {
        let logits = vec![0.0f32; 64];
        let draw = |seed| {
            let mut s = sampler(0, 1.0, 0.0, seed);
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<u32>>()
        };
        assert_eq!(draw(11), draw(11));
        assert_ne!(draw(11), draw(12));
    }

    #[test]
    fn empirical_frequencies_match_softmax() {
        // 20k draws: the standard error at p = 0.4 is ~0.0035, so 0.015 is over 4 sigma.
        let probs = [0.1, 0.2, 0.3, 0.4];
        let freq = frequencies(&mut sampler(0, 1.0, 0.0, 9), &logits_of(&probs), 20_000);
        for (f, p) in freq.iter().zip(probs) {
            assert!((f - p as f64).abs() < 0.015, "{freq:?}");
        }
    }

    #[test]
    fn temperature_two_draws_from_square_root_distribution() {
        // softmax(ln p / 2) is proportional to sqrt(p).
        let probs = [0.1f64, 0.2, 0.3, 0.4];
        let config = SamplerConfig {
            temperature: 2.0,
            ..SamplerConfig::greedy()
        };
        let freq = frequencies(
            &mut Sampler::new(config).unwrap(),
            &logits_of(&[0.1, 0.2, 0.3, 0.4]),
            20_000,
        );
        let norm: f64 = probs.iter().map(|p| p.sqrt()).sum();
        for (f, p) in freq.iter().zip(probs) {
            assert!((f - p.sqrt() / norm).abs() < 0.015, "{freq:?}");
        }
    }

    #[test]
    fn nan_logits_do_not_panic_and_are_never_drawn() {
        let logits = [f32::NAN, 1.0, f32::NAN, 0.5];
        assert_eq!(argmax(&logits), 1);
        let mut s = Sampler::new(SamplerConfig {
            seed: 2,
            ..SamplerConfig::default()
        })
        .unwrap();
        assert!((0..200)
            .map(|_| s.sample(&logits))
            .all(|id| id == 1 || id == 3));
        let all_nan = [f32::NAN; 5];
        assert_eq!(argmax(&all_nan), 0);
        assert!(s.sample(&all_nan) < 5);
        assert!(sampler(2, 0.9, 0.1, 0).sample(&all_nan) < 5);
    }

    #[test]
    fn ties_go_to_the_lowest_id() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), 1);
        assert_eq!(
            kept(&mut sampler(1, 1.0, 0.0, 0), &[0.0, 2.0, 2.0, 2.0]),
            vec![1]
        );
        assert_eq!(
            kept(&mut sampler(2, 1.0, 0.0, 0), &[2.0, 0.0, 2.0, 2.0]),
            vec![0, 2]
        );
    }

    #[test]
    fn no_reallocation_once_warmed_up() {
        let logits: Vec<f32> = (0..5000).map(|i| (i % 97) as f32 * 0.01).collect();
        let mut s = Sampler::new(SamplerConfig {
            top_k: 0,
            ..SamplerConfig::default()
        })
        .unwrap();
        s.sample(&logits);
        let before = (
            s.candidates.as_ptr(),
            s.candidates.capacity(),
            s.probs.as_ptr(),
            s.probs.capacity(),
        );
        for _ in 0..10 {
            s.sample(&logits);
        }
        let after = (
            s.candidates.as_ptr(),
            s.candidates.capacity(),
            s.probs.as_ptr(),
            s.probs.capacity(),
        );
        assert_eq!(before, after);
    }

    proptest! {
        #[test]
        fn top_k_partial_selection_equals_full_sort(
            // Few distinct values so that ties are common.
            logits in proptest::collection::vec(0u8..8, 1..200).prop_map(|v| v.into_iter().map(f32::from).collect::<Vec<f32>>()),
            k in 1usize..50,
        ) {
            let mut ranked: Vec<u32> = (0..logits.len() as u32).collect();
            ranked.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
            ranked.truncate(k);
            prop_assert_eq!(kept(&mut sampler(k, 1.0, 0.0, 0), &logits), ranked);
        }

        #[test]
        fn sample_always_returns_a_kept_id(
            logits in proptest::collection::vec(-20.0f32..20.0, 1..100),
            k in 0usize..10, top_p in 0.01f32..=1.0, min_p in 0.0f32..=1.0, seed: u64,
        ) {
            let mut s = sampler(k, top_p, min_p, seed);
            let allowed = kept(&mut s, &logits);
            prop_assert!(!allowed.is_empty());
            let id = s.sample(&logits);
            prop_assert!(allowed.contains(&id));
        }
    }
}
