//! The distribution a sampler draws from, written out as a row of probabilities, and draws from
//! such rows with the sampler's own random stream.
//!
//! Speculative sampling needs the target's distribution p itself, not just one draw from it: it
//! accepts a drafted token with probability min(1, p(d) / q(d)) and, on a rejection, draws from
//! the residual max(0, p - q). [`Sampler::distribution`] writes out exactly the p that
//! [`Sampler::sample`] draws from (same stages, same order, same rounding), so that speculative
//! sampling stays faithful to every sampler setting.

use super::stages::rank;
use super::{argmax, softmax_inplace, Sampler};
use crate::rng::Rng;

impl Sampler {
    /// Writes into `probs` (V) the distribution [`Sampler::sample`] draws from for `logits` (V),
    /// given the current penalty history: logit bias, penalties, the truncations and temperature
    /// in the configured order, then softmax over the survivors; 0 for every token a stage
    /// dropped. Greedy (temperature <= 0) gives 1 at the token `sample` would pick and 0
    /// elsewhere. Consumes no randomness.
    ///
    /// The probabilities are the very f32 values `sample` accumulates, so the two agree exactly
    /// in distribution. `probs` of another length than `logits` is a caller bug (debug
    /// assertion); a release build fills only the common prefix.
    pub fn distribution(&mut self, logits: &[f32], probs: &mut [f32]) {
        debug_assert_eq!(logits.len(), probs.len(), "distribution needs probs (V) like logits (V)");
        let n = logits.len().min(probs.len());
        let (logits, probs) = (&logits[..n], &mut probs[..n]);
        probs.fill(0.0);
        if n == 0 {
            return;
        }
        if self.is_plain_greedy() {
            probs[argmax(logits) as usize] = 1.0;
            return;
        }
        // The same sequence as `choose`: bias and penalties, then greedy picks the best by rank,
        // or the remaining stages run and the draw takes softmax over the ranked survivors.
        let stages = self.config.order.stages();
        let split = stages.iter().position(|s| !s.adjusts_logits()).unwrap_or(stages.len());
        self.load(logits);
        for &stage in &stages[..split] {
            self.run(stage);
        }
        if self.config.temperature <= 0.0 {
            let best = self.candidates.iter().min_by(|a, b| rank(a, b)).map_or(0, |c| c.id);
            probs[best as usize] = 1.0;
            return;
        }
        for &stage in &stages[split..] {
            self.run(stage);
        }
        // Ranked like the draw, so that the softmax sums in the same order and rounds the same.
        self.rank_candidates();
        self.probs.clear();
        self.probs.extend(self.candidates.iter().map(|c| c.logit));
        softmax_inplace(&mut self.probs);
        for (c, &p) in self.candidates.iter().zip(&self.probs) {
            probs[c.id as usize] = p;
        }
    }

    /// The rows p_0..p_k (k+1, V) that [`Sampler::distribution`] gives for `logits` (k+1, V)
    /// when row i is sampled after the drafted tokens `drafted[..i]` (k) have been accepted, the
    /// targets of speculative sampling. The penalty history is left as it was: the drafts count
    /// for the penalties of the later rows only while this runs.
    ///
    /// Logits or probs not holding `drafted.len() + 1` rows of the same width is a caller bug
    /// (debug assertion); a release build fills what the shorter of the two allows.
    pub fn distributions_after_drafts(&mut self, logits: &[f32], drafted: &[u32], probs: &mut [f32]) {
        let rows = drafted.len() + 1;
        debug_assert!(
            logits.len() == probs.len() && logits.len().is_multiple_of(rows),
            "distributions_after_drafts needs logits and probs of ({rows}, V), got {} and {}",
            logits.len(),
            probs.len()
        );
        let vocab = logits.len() / rows;
        // Only penalties read the history; the clone (the one allocation) is skipped without.
        let saved = self.config.has_penalties().then(|| self.history.clone());
        for (i, (row_logits, row_probs)) in logits.chunks_exact(vocab.max(1)).zip(probs.chunks_exact_mut(vocab.max(1))).take(rows).enumerate() {
            self.distribution(row_logits, row_probs);
            if saved.is_some() {
                if let Some(&d) = drafted.get(i) {
                    self.history.accept(d);
                }
            }
        }
        if let Some(history) = saved {
            self.history = history;
        }
    }

    /// Draws a token id from `probs` (V), a distribution such as [`Sampler::distribution`]
    /// writes, with this sampler's random stream. See [`draw_weighted`]: weights need not sum to
    /// 1, and a row with no positive weight gives its argmax (0 when all are equal).
    pub fn draw_from(&mut self, probs: &[f32]) -> u32 {
        draw_weighted(&mut self.rng, probs.iter().copied()).unwrap_or_else(|| argmax_or_zero(probs))
    }

    /// The sampler's random stream, for draws made outside it (speculative acceptance) that must
    /// stay reproducible from the one seed.
    pub fn rng_mut(&mut self) -> &mut Rng {
        &mut self.rng
    }
}

/// Draws an index with probability proportional to its weight, by inverse CDF in index order,
/// using exactly one uniform number of `rng` whatever the outcome. Weights that are negative,
/// NaN or infinite count as 0, so a residual max(0, p - q) can be passed lazily as p - q. Returns
/// `None` (the uniform still spent) when no weight is positive.
///
/// The sums run in f64, twice over the same iterator in the same order, so the last cumulative
/// value equals the total exactly and a uniform just under 1 cannot fall off the end; over a
/// 50k vocabulary an f32 sum would drift by ~1e-4 and shift mass onto the last token.
pub fn draw_weighted(rng: &mut Rng, weights: impl Iterator<Item = f32> + Clone) -> Option<u32> {
    let r = rng.next_f32();
    let clean = |w: f32| {
        if w.is_finite() && w > 0.0 {
            w as f64
        } else {
            0.0
        }
    };
    let total: f64 = weights.clone().map(clean).sum();
    if total <= 0.0 {
        return None;
    }
    let target = r as f64 * total;
    let mut cumulative = 0.0f64;
    let mut last_possible = None;
    for (i, w) in weights.map(clean).enumerate() {
        cumulative += w;
        if target < cumulative {
            return Some(i as u32);
        }
        if w > 0.0 {
            last_possible = Some(i as u32);
        }
    }
    last_possible
}

/// The index of the largest entry, ties and all-NaN to the lowest; 0 when empty.
fn argmax_or_zero(values: &[f32]) -> u32 {
    if values.is_empty() {
        0
    } else {
        argmax(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::{SamplerConfig, SamplerOrder};

    fn sampling(f: impl FnOnce(&mut SamplerConfig)) -> Sampler {
        let mut c = SamplerConfig { temperature: 1.0, ..SamplerConfig::greedy() };
        f(&mut c);
        Sampler::new(c).unwrap()
    }

    const LOGITS: [f32; 6] = [1.0, 3.0, 2.5, -1.0, 0.5, 2.9];

    #[test]
    fn distribution_sums_to_one_and_zeroes_dropped_tokens() {
        let mut s = sampling(|c| {
            c.top_k = 3;
            c.temperature = 0.7;
        });
        let mut p = [0.0f32; 6];
        s.distribution(&LOGITS, &mut p);
        let sum: f32 = p.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "{p:?}");
        // top_k 3 keeps ids 1, 5, 2.
        assert_eq!(p.iter().map(|&x| x > 0.0).collect::<Vec<_>>(), [false, true, true, false, false, true]);
        // Temperature 0.7 after top_k: p1 / p2 = exp((3 - 2.5) / 0.7).
        assert!((p[1] / p[2] - (0.5f32 / 0.7).exp()).abs() < 1e-5);
    }

    #[test]
    fn greedy_distribution_is_one_hot_at_the_sampled_token() {
        // Plain greedy, and greedy whose winner moves because of a bias.
        for bias in [vec![], vec![(1u32, -1.0f32)]] {
            let mut s = sampling(|c| {
                c.temperature = 0.0;
                c.logit_bias = bias.clone();
            });
            let mut p = [0.5f32; 6];
            s.distribution(&LOGITS, &mut p);
            let id = s.sample(&LOGITS);
            let mut want = [0.0f32; 6];
            want[id as usize] = 1.0;
            assert_eq!(p, want, "bias {bias:?}");
        }
    }

    #[test]
    fn distribution_follows_the_penalty_history() {
        let mut s = sampling(|c| c.presence_penalty = 1.0);
        let (mut before, mut after) = ([0.0f32; 6], [0.0f32; 6]);
        s.distribution(&LOGITS, &mut before);
        s.accept(1);
        s.distribution(&LOGITS, &mut after);
        assert!(after[1] < before[1]);
        assert!((after[1] / after[0] - (LOGITS[1] - 1.0 - LOGITS[0]).exp()).abs() < 1e-5);
    }

    #[test]
    fn distributions_after_drafts_see_the_drafts_and_restore_the_history() {
        let mut s = sampling(|c| {
            c.presence_penalty = 2.0;
            c.order = SamplerOrder::HuggingFace;
        });
        s.accept(5);
        let logits: Vec<f32> = LOGITS.iter().chain(&LOGITS).chain(&LOGITS).copied().collect();
        let mut rows = vec![0.0f32; 18];
        s.distributions_after_drafts(&logits, &[1, 2], &mut rows);
        // Row i equals a fresh distribution after accepting drafted[..i].
        let mut fresh = sampling(|c| {
            c.presence_penalty = 2.0;
            c.order = SamplerOrder::HuggingFace;
        });
        fresh.accept(5);
        let mut want = [0.0f32; 6];
        for (i, extra) in [None, Some(1u32), Some(2u32)].into_iter().enumerate() {
            if let Some(t) = extra {
                fresh.accept(t);
            }
            fresh.distribution(&LOGITS, &mut want);
            assert_eq!(&rows[i * 6..(i + 1) * 6], &want, "row {i}");
        }
        // The history is back to [5] only.
        let mut now = [0.0f32; 6];
        s.distribution(&LOGITS, &mut now);
        let mut only_five = sampling(|c| {
            c.presence_penalty = 2.0;
            c.order = SamplerOrder::HuggingFace;
        });
        only_five.accept(5);
        only_five.distribution(&LOGITS, &mut want);
        assert_eq!(now, want);
    }

    #[test]
    fn all_banned_logits_give_the_uniform_row_sample_draws_from() {
        let mut s = sampling(|c| c.logit_bias = vec![(0, f32::NEG_INFINITY), (1, f32::NEG_INFINITY)]);
        let mut p = [0.0f32; 2];
        s.distribution(&[f32::NEG_INFINITY, f32::NAN], &mut p);
        assert_eq!(p, [0.5, 0.5]);
    }

    #[test]
    fn draw_weighted_spends_one_uniform_and_skips_zero_and_bad_weights() {
        let mut rng = Rng::new(3);
        let mut reference = Rng::new(3);
        for _ in 0..1000 {
            let id = draw_weighted(&mut rng, [0.0, f32::NAN, 2.0, -1.0, f32::INFINITY, 0.0].into_iter());
            assert_eq!(id, Some(2));
            reference.next_f32();
        }
        assert_eq!(rng, reference);
        assert_eq!(draw_weighted(&mut rng, [0.0f32, -3.0, f32::NAN].into_iter()), None);
        reference.next_f32();
        assert_eq!(rng, reference, "a failed draw spends its uniform too");
    }

    #[test]
    fn draw_from_all_zero_row_gives_its_argmax_without_panicking() {
        let mut s = sampling(|_| {});
        assert_eq!(s.draw_from(&[0.0, 0.0, 0.0]), 0);
        assert_eq!(s.draw_from(&[f32::NAN, -1.0, -0.5]), 2);
        assert_eq!(s.draw_from(&[]), 0);
    }
}
