//! The stages of the chain, each a small function over the candidate list.
//!
//! Contract shared by all of them: `candidates` holds (id, logit) pairs with no NaN logits.
//! [`apply_logit_bias`] and the penalties need it indexed by id (`candidates[i].id == i`), so they
//! run first; the truncations need it ranked ([`rank`]) and leave it ranked, never empty.

use super::math::softmax_inplace;
use std::cmp::Ordering;

/// One token still in the running: its id and its current logit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Candidate {
    pub(crate) id: u32,
    pub(crate) logit: f32,
}

/// Rank order: logit descending, ties to the lower id. Logits are NaN-free here, so
/// `partial_cmp` never returns `None`; -0.0 and 0.0 compare equal, as they should.
pub(crate) fn rank(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.partial_cmp(&a.logit).unwrap_or(Ordering::Equal).then(a.id.cmp(&b.id))
}

/// Adds each (token, bias) to the logit of `token`; ids beyond the vocabulary are skipped.
/// `candidates` must be indexed by id. -inf bias makes -inf (a ban), also over +inf logits,
/// which would otherwise give NaN.
pub(crate) fn apply_logit_bias(candidates: &mut [Candidate], bias: &[(u32, f32)]) {
    for &(token, b) in bias {
        if let Some(c) = candidates.get_mut(token as usize) {
            debug_assert_eq!(c.id, token, "logit bias needs candidates indexed by id");
            c.logit = if b == f32::NEG_INFINITY { b } else { c.logit + b };
        }
    }
}

/// Keeps the k best candidates, ranked. When k is small (40 of 49k) a partial selection, O(V),
/// then a sort of k beats sorting all V; with k off (0 or >= V) everything is sorted.
pub(crate) fn top_k(candidates: &mut Vec<Candidate>, k: usize) {
    if k > 0 && k < candidates.len() {
        candidates.select_nth_unstable_by(k - 1, rank);
        candidates.truncate(k);
    }
    candidates.sort_unstable_by(rank);
}

/// Keeps the smallest ranked prefix whose mass (softmax over the current candidates) reaches
/// `p`, including the token that crosses it; at least one token. `probs` is scratch.
pub(crate) fn top_p(candidates: &mut Vec<Candidate>, probs: &mut Vec<f32>, p: f32) {
    if p >= 1.0 {
        return;
    }
    probs.clear();
    probs.extend(candidates.iter().map(|c| c.logit));
    softmax_inplace(probs);
    let mut cumulative = 0.0f32;
    let mut keep = candidates.len();
    for (i, &prob) in probs.iter().enumerate() {
        cumulative += prob;
        if cumulative >= p {
            keep = i + 1;
            break;
        }
    }
    candidates.truncate(keep);
}

/// Keeps tokens with p_i >= min_p * p_max. The normaliser cancels in p_i / p_max, so this is
/// logit_i >= logit_max + ln(min_p) (as llama.cpp does it): no softmax needed.
pub(crate) fn min_p(candidates: &mut Vec<Candidate>, min_p: f32) {
    if min_p <= 0.0 {
        return;
    }
    let Some(best) = candidates.first() else {
        return;
    };
    let threshold = best.logit + min_p.ln();
    // Ranked descending, so the survivors are a prefix; the best always survives.
    let keep = candidates.iter().position(|c| c.logit < threshold).unwrap_or(candidates.len());
    candidates.truncate(keep.max(1));
}

/// A candidate with its probability and its typicality distance, scratch for [`typical_p`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scored {
    distance: f32,
    prob: f32,
    candidate: Candidate,
}

/// Locally typical sampling: with H the entropy of the current distribution, orders tokens by
/// |-ln p_i - H| (how far their surprise is from the expected surprise) and keeps the smallest
/// such prefix holding mass >= `mass`, the crossing token included, at least one; then ranks the
/// survivors again. This is Hugging Face's `TypicalLogitsWarper` rule; llama.cpp stops at mass
/// > `mass`, which differs only on an exact tie. `probs` and `scored` are scratch.
pub(crate) fn typical_p(candidates: &mut Vec<Candidate>, probs: &mut Vec<f32>, scored: &mut Vec<Scored>, mass: f32) {
    if mass >= 1.0 || candidates.len() <= 1 {
        return;
    }
    probs.clear();
    probs.extend(candidates.iter().map(|c| c.logit));
    softmax_inplace(probs);
    // 0 * ln 0 counts as 0 (the limit), not NaN.
    let entropy: f32 = probs.iter().filter(|&&p| p > 0.0).map(|&p| -p * p.ln()).sum();
    scored.clear();
    scored.extend(candidates.iter().zip(probs.iter()).map(|(&candidate, &prob)| {
        // p = 0 has infinite surprise: it sorts last and never helps reach the mass.
        let distance = if prob > 0.0 { (-prob.ln() - entropy).abs() } else { f32::INFINITY };
        Scored { distance, prob, candidate }
    }));
    // Distance ties go by rank, so the result is deterministic. (An unstable sort: the stable
    // one allocates a buffer.)
    scored.sort_unstable_by(|a, b| a.distance.partial_cmp(&b.distance).unwrap_or(Ordering::Equal).then_with(|| rank(&a.candidate, &b.candidate)));
    let mut cumulative = 0.0f32;
    let mut keep = scored.len();
    for (i, s) in scored.iter().enumerate() {
        cumulative += s.prob;
        if cumulative >= mass {
            keep = i + 1;
            break;
        }
    }
    candidates.clear();
    candidates.extend(scored[..keep].iter().map(|s| s.candidate));
    candidates.sort_unstable_by(rank);
}

/// Divides every logit by `temperature` (> 0). Multiplying by the inverse is what the draw has
/// always done, so seeded sequences stay the same bits.
pub(crate) fn temperature(candidates: &mut [Candidate], temperature: f32) {
    let inv_temperature = 1.0 / temperature;
    candidates.iter_mut().for_each(|c| c.logit *= inv_temperature);
}
