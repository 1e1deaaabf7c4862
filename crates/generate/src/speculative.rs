//! Speculative sampling: accepting drafted tokens so that the output follows the target
//! distribution exactly (Leviathan et al. 2023, "Fast Inference from Transformers via
//! Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model Decoding with
//! Speculative Sampling").
//!
//! A cheap drafter proposes k tokens d_0..d_{k-1}, drawn from its distributions q_0..q_{k-1}
//! (q_i after the prefix d_<i); the target model scores all of them in one pass, giving p_0..p_k.
//! For i in 0..k, d_i is accepted with probability min(1, p_i(d_i) / q_i(d_i)); the first
//! rejection draws the replacement from the residual norm(max(0, p_i - q_i)) and stops. When all
//! k are accepted a bonus token is drawn from p_k. Every emitted token then follows p exactly
//! given its prefix: P(emit x) = min(p, q)(x) + (1 - sum min(p, q)) * residual(x) = p(x), and each
//! draft is accepted with probability 1 - TV(p, q) = sum_x min(p(x), q(x)).
//!
//! Prompt lookup (copying what followed an earlier occurrence of the last n-gram) is a
//! deterministic drafter: q_i is one-hot on d_i, so d_i is accepted with probability p_i(d_i)
//! and the residual is p_i without d_i. [`DraftProbs::OneHot`] says so without V-sized rows.
//!
//! Only the math lives here: the caller drafts, runs the target over the drafts and feeds the
//! sampler's view of its logits in (see [`Sampler::distributions_after_drafts`], which applies
//! penalties as if each draft had been accepted).
//!
//! [`Sampler::distributions_after_drafts`]: crate::sampler::Sampler::distributions_after_drafts

use crate::rng::Rng;
use crate::sampler::draw_weighted;
use crate::GenerateError;

/// The drafter's distributions q_0..q_{k-1}, one per drafted token.
#[derive(Clone, Copy, Debug)]
pub enum DraftProbs<'a> {
    /// (k, V) row-major: row i is q_i, the distribution d_i was drawn from.
    Rows(&'a [f32]),
    /// Each q_i is one-hot on d_i: a deterministic drafter (prompt lookup, a greedy draft model).
    OneHot,
}

/// The outcome of verifying one round of drafts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// How many drafted tokens were accepted, a prefix d_0..d_{accepted-1} (0..=k).
    pub accepted: usize,
    /// The token emitted after them: the replacement for the first rejected draft, or the bonus
    /// token from p_k when all k were accepted.
    pub next: u32,
}

/// Verifies drafted tokens against the target distributions (speculative sampling); emits
/// `drafted[..accepted]` followed by `next`, which together follow the target exactly.
///
/// `target` is (k+1, V) row-major: row i is p_i, the target's distribution after the prefix
/// `drafted[..i]` (row k for the bonus token). `draft` holds q_0..q_{k-1}; `drafted` (k) the
/// drafted ids. The rows are meant to be normalised distributions, such as
/// [`Sampler::distribution`](crate::sampler::Sampler::distribution) writes: the acceptance ratio
/// compares p_i and q_i as they are.
///
/// Uses one uniform of `rng` per examined draft and one for the final draw (two when the
/// residual is empty). Degenerate input never panics: entries that are NaN, infinite or negative
/// count as 0; a draft with q_i(d_i) = 0 (the drafter claims it could not have proposed it) is
/// rejected; a residual that is zero everywhere (p_i <= q_i, only possible through rounding)
/// falls back to p_i; a row of p with no positive entry gives token 0.
///
/// Errors: `GenerateError::InvalidArgument` when V is 0, when `target` or a `Rows` draft does not
/// hold (k+1, V) or (k, V) values, or a drafted id is not below V.
pub fn verify_sampled<'a>(target: &'a [f32], draft: DraftProbs<'a>, drafted: &[u32], vocab: usize, rng: &mut Rng) -> Result<Verdict, GenerateError> {
    check_shapes(target, draft, drafted, vocab)?;
    let row = |probs: &'a [f32], i: usize| &probs[i * vocab..(i + 1) * vocab];
    for (i, &d) in drafted.iter().enumerate() {
        let p = row(target, i);
        let p_d = clean(p[d as usize]);
        let q_d = match draft {
            DraftProbs::Rows(q) => clean(row(q, i)[d as usize]),
            DraftProbs::OneHot => 1.0,
        };
        // Accept with probability min(1, p/q), written u * q < p so that no division can make
        // inf or NaN; u < 1 makes p >= q a sure accept. q = 0 would read as p/q = inf, a sure
        // accept: but a drafter that could not have proposed d_i is wrong about it, and trusting
        // it would skew the output, so that is a reject.
        let u = rng.next_f32();
        if q_d > 0.0 && u * q_d < p_d {
            continue;
        }
        let next = match draft {
            DraftProbs::Rows(q) => {
                let q = row(q, i);
                let residual = p.iter().zip(q).map(|(&p, &q)| clean(p) - clean(q));
                draw_weighted(rng, residual).or_else(|| draw_weighted(rng, p.iter().copied()))
            }
            // max(0, p - onehot(d)) is p with d removed.
            DraftProbs::OneHot => {
                let residual = p.iter().enumerate().map(|(j, &w)| if j == d as usize { 0.0 } else { w });
                draw_weighted(rng, residual).or_else(|| draw_weighted(rng, p.iter().copied()))
            }
        };
        return Ok(Verdict { accepted: i, next: next.unwrap_or(0) });
    }
    let bonus = row(target, drafted.len());
    Ok(Verdict { accepted: drafted.len(), next: draw_weighted(rng, bonus.iter().copied()).unwrap_or(0) })
}

/// A probability as the acceptance test reads it: NaN, infinite and negative count as 0.
fn clean(p: f32) -> f32 {
    if p.is_finite() && p > 0.0 {
        p
    } else {
        0.0
    }
}

/// Checks the shapes [`verify_sampled`] relies on, so that its indexing cannot go out of range.
fn check_shapes(target: &[f32], draft: DraftProbs<'_>, drafted: &[u32], vocab: usize) -> Result<(), GenerateError> {
    let k = drafted.len();
    if vocab == 0 {
        return Err(GenerateError::InvalidArgument("speculative verification needs a vocabulary of at least one token, got V = 0".into()));
    }
    if target.len() != (k + 1) * vocab {
        return Err(GenerateError::InvalidArgument(format!(
            "speculative verification needs target probabilities of (k+1, V) = ({}, {vocab}) = {} values for {k} drafts, got {}",
            k + 1,
            (k + 1) * vocab,
            target.len()
        )));
    }
    if let DraftProbs::Rows(q) = draft {
        if q.len() != k * vocab {
            return Err(GenerateError::InvalidArgument(format!(
                "speculative verification needs draft probabilities of (k, V) = ({k}, {vocab}) = {} values, got {}",
                k * vocab,
                q.len()
            )));
        }
    }
    if let Some((i, &bad)) = drafted.iter().enumerate().find(|&(_, &d)| d as usize >= vocab) {
        return Err(GenerateError::InvalidArgument(format!("drafted token {i} has id {bad}, outside the vocabulary of {vocab} tokens")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: usize = 4;
    const P: [f32; V] = [0.1, 0.2, 0.3, 0.4];

    fn rows(rows: &[[f32; V]]) -> Vec<f32> {
        rows.iter().flatten().copied().collect()
    }

    #[test]
    fn draft_equal_to_target_is_always_accepted() {
        let target = rows(&[P, P, P]);
        let draft = rows(&[P, P]);
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let v = verify_sampled(&target, DraftProbs::Rows(&draft), &[3, 0], V, &mut rng).unwrap();
            assert_eq!(v.accepted, 2);
        }
    }

    #[test]
    fn zero_draft_probability_is_always_rejected() {
        // q_0(d_0) = 0 while p_0(d_0) > 0: always rejected. The residual max(0, p - q) keeps
        // d_0 at p(d_0) here, so d_0 itself may come back as the replacement.
        let target = rows(&[P, P]);
        let draft = rows(&[[0.5, 0.5, 0.0, 0.0]]);
        let mut rng = Rng::new(2);
        let mut reference = Rng::new(2);
        for _ in 0..1000 {
            let v = verify_sampled(&target, DraftProbs::Rows(&draft), &[2], V, &mut rng).unwrap();
            assert_eq!(v.accepted, 0);
            // Residual (0, 0, 0.3, 0.4): only 2 and 3.
            assert!(v.next == 2 || v.next == 3, "{v:?}");
            reference.next_f32();
            reference.next_f32();
        }
        assert_eq!(rng, reference, "one uniform for the test, one for the residual draw");
    }

    #[test]
    fn one_hot_draft_with_zero_target_probability_is_replaced_by_another_token() {
        let p = [0.0, 0.5, 0.5, 0.0];
        let target = rows(&[p, P]);
        let mut rng = Rng::new(3);
        for _ in 0..1000 {
            let v = verify_sampled(&target, DraftProbs::OneHot, &[0], V, &mut rng).unwrap();
            assert_eq!(v.accepted, 0);
            assert!(v.next == 1 || v.next == 2);
        }
    }

    #[test]
    fn one_hot_draft_that_target_is_sure_of_is_always_accepted_and_bonus_follows_last_row() {
        let sure = [0.0, 0.0, 1.0, 0.0];
        let target = rows(&[sure, sure, [0.0, 0.0, 0.0, 1.0]]);
        let mut rng = Rng::new(4);
        for _ in 0..100 {
            let v = verify_sampled(&target, DraftProbs::OneHot, &[2, 2], V, &mut rng).unwrap();
            assert_eq!(v, Verdict { accepted: 2, next: 3 });
        }
    }

    #[test]
    fn no_drafts_draw_the_bonus_from_the_only_row() {
        let mut rng = Rng::new(5);
        let v = verify_sampled(&[0.0, 0.0, 7.0, 0.0], DraftProbs::OneHot, &[], V, &mut rng).unwrap();
        assert_eq!(v, Verdict { accepted: 0, next: 2 });
    }

    #[test]
    fn zero_residual_falls_back_to_the_target_row() {
        // q scaled above p everywhere (an unnormalised row): p/q < 1 rejects sometimes, and
        // max(0, p - q) is zero everywhere, so the replacement must come from p itself.
        let target = rows(&[[0.0, 0.0, 0.5, 0.5], P]);
        let draft = rows(&[[1.0, 1.0, 1.0, 1.0]]);
        let mut rng = Rng::new(6);
        let mut rejected = 0;
        for _ in 0..1000 {
            let v = verify_sampled(&target, DraftProbs::Rows(&draft), &[2], V, &mut rng).unwrap();
            if v.accepted == 0 {
                rejected += 1;
                assert!(v.next == 2 || v.next == 3, "{v:?}");
            }
        }
        assert!(rejected > 300, "half should be rejected, got {rejected}");
    }

    #[test]
    fn nan_and_garbage_rows_do_not_panic() {
        let nan = [f32::NAN; V];
        let target = rows(&[nan, [f32::INFINITY, -1.0, f32::NAN, 0.0]]);
        let draft = rows(&[nan]);
        let mut rng = Rng::new(7);
        for mode in [DraftProbs::Rows(&draft), DraftProbs::OneHot] {
            let v = verify_sampled(&target, mode, &[1], V, &mut rng).unwrap();
            // p_0 counts as all zero: d_0 rejected, no residual, no p: the lowest id.
            assert_eq!(v, Verdict { accepted: 0, next: 0 });
        }
        // A NaN bonus row alone.
        let v = verify_sampled(&nan, DraftProbs::OneHot, &[], V, &mut rng).unwrap();
        assert_eq!(v, Verdict { accepted: 0, next: 0 });
    }

    #[test]
    fn wrong_shapes_and_ids_are_errors_naming_the_shape() {
        let mut rng = Rng::new(8);
        let target = rows(&[P, P]);
        let err = |r: Result<Verdict, GenerateError>| r.unwrap_err().to_string();
        let e = err(verify_sampled(&target, DraftProbs::OneHot, &[1, 2], V, &mut rng));
        assert!(e.contains("(3, 4)") && e.contains("got 8"), "{e}");
        let e = err(verify_sampled(&target, DraftProbs::Rows(&P[..3]), &[1], V, &mut rng));
        assert!(e.contains("(1, 4)") && e.contains("got 3"), "{e}");
        let e = err(verify_sampled(&target, DraftProbs::OneHot, &[4], V, &mut rng));
        assert!(e.contains("id 4"), "{e}");
        let e = err(verify_sampled(&[], DraftProbs::OneHot, &[], 0, &mut rng));
        assert!(e.contains("V = 0"), "{e}");
    }
}
