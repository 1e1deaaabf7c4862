//! Speculative sampling keeps the target distribution exactly, checked by chi-square tests.
//!
//! Every test draws many times with a fixed seed and compares the counts with the distribution
//! they should follow, at significance 0.001 (the critical value computed from the chi-square
//! distribution below, checked against a printed table). A wrong rule must fail the same test:
//! the trap tests run deliberately wrong variants through the same harness and require the
//! statistic to be far above the critical value, so the tests are known to have power.

use generate::rng::Rng;
use generate::sampler::{draw_weighted, Sampler, SamplerConfig, SamplerOrder};
use generate::speculative::{verify_sampled, DraftProbs, Verdict};

// ---------------------------------------------------------------------------------------------
// Chi-square machinery
// ---------------------------------------------------------------------------------------------

/// Significance of every goodness-of-fit test here.
const ALPHA: f64 = 0.001;

/// ln Gamma(x) for x > 0 (Lanczos, g = 7, 9 terms: ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let t = x + 7.5;
    let series: f64 = G[0] + (1..9).map(|i| G[i] / (x + i as f64)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

/// The regularized upper incomplete gamma Q(a, x) (Numerical Recipes: the series below a + 1,
/// the continued fraction above).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let prefactor = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        while term.abs() > sum.abs() * 1e-15 {
            n += 1.0;
            term *= x / n;
            sum += term;
        }
        1.0 - sum * prefactor
    } else {
        // Modified Lentz.
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            d = if d.abs() < tiny { tiny } else { d };
            c = b + an / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        prefactor * h
    }
}

/// The x with P(chi-square(df) > x) = alpha, by bisection on the survival function.
fn chi_square_critical(df: usize, alpha: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 10.0 * df as f64 + 100.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if gamma_q(df as f64 / 2.0, mid / 2.0) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Pearson's statistic of `counts` against `probs` and its degrees of freedom (bins with p > 0,
/// less one). A count in a bin of probability 0 is a certain misfit: returned as infinity.
/// Panics when a bin's expected count is under 5, where the chi-square approximation fails (a
/// badly designed test, not a finding).
fn chi_square(counts: &[u64], probs: &[f64]) -> (f64, usize) {
    assert_eq!(counts.len(), probs.len());
    let n: u64 = counts.iter().sum();
    let mut stat = 0.0;
    let mut bins = 0;
    for (&c, &p) in counts.iter().zip(probs) {
        if p <= 0.0 {
            if c > 0 {
                return (f64::INFINITY, bins);
            }
            continue;
        }
        let expected = n as f64 * p;
        assert!(expected >= 5.0, "expected count {expected} too small for chi-square");
        stat += (c as f64 - expected).powi(2) / expected;
        bins += 1;
    }
    (stat, bins - 1)
}

/// Asserts the counts fit the distribution at [`ALPHA`].
fn assert_fits(counts: &[u64], probs: &[f64], what: &str) {
    let (stat, df) = chi_square(counts, probs);
    let critical = chi_square_critical(df, ALPHA);
    assert!(stat < critical, "{what}: chi-square {stat:.1} >= {critical:.1} (df {df}); counts {counts:?}, probs {probs:?}");
}

/// Asserts the counts misfit the distribution by a wide margin (ten times the critical value),
/// for the trap tests: a wrong rule must be caught with room to spare, not by luck.
fn assert_misfits(counts: &[u64], probs: &[f64], what: &str) {
    let (stat, df) = chi_square(counts, probs);
    let critical = chi_square_critical(df, ALPHA);
    assert!(stat > 10.0 * critical, "{what}: the wrong rule went unnoticed, chi-square {stat:.1} vs critical {critical:.1}");
}

#[test]
fn chi_square_critical_values_match_the_table() {
    // NIST/SEMATECH e-Handbook, table 1.3.6.7.4, upper-tail 0.001.
    for (df, table) in [(1, 10.828), (4, 18.467), (5, 20.515), (10, 29.588), (24, 51.179), (35, 66.619)] {
        let got = chi_square_critical(df, ALPHA);
        assert!((got - table).abs() < 2e-3, "df {df}: {got} vs {table}");
    }
}

// ---------------------------------------------------------------------------------------------
// Sampler::sample draws from Sampler::distribution
// ---------------------------------------------------------------------------------------------

const LOGITS: [f32; 10] = [2.0, 1.5, 1.2, 0.9, 0.5, 0.3, 0.0, -0.4, -1.0, -2.0];
const DRAWS: usize = 100_000;

/// Draws `sample` many times and checks the counts fit `distribution`; returns the distribution.
fn check_sample_matches_distribution(config: SamplerConfig, history: &[u32], what: &str) -> Vec<f64> {
    let mut s = Sampler::new(config).unwrap();
    history.iter().for_each(|&t| s.accept(t));
    let mut p = [0.0f32; 10];
    s.distribution(&LOGITS, &mut p);
    let sum: f32 = p.iter().sum();
    assert!((sum - 1.0).abs() < 1e-5, "{what}: sums to {sum}");
    let mut counts = [0u64; 10];
    for _ in 0..DRAWS {
        counts[s.sample(&LOGITS) as usize] += 1;
    }
    let probs: Vec<f64> = p.iter().map(|&x| x as f64).collect();
    assert_fits(&counts, &probs, what);
    probs
}

fn config(f: impl FnOnce(&mut SamplerConfig)) -> SamplerConfig {
    let mut c = SamplerConfig { temperature: 1.0, seed: 11, ..SamplerConfig::greedy() };
    f(&mut c);
    c
}

#[test]
fn sample_follows_distribution_with_truncations_and_temperature() {
    for order in [SamplerOrder::LlamaCpp, SamplerOrder::HuggingFace] {
        let cases: [(&str, SamplerConfig, usize); 5] = [
            ("top_k 5, T 0.7", config(|c| (c.top_k, c.temperature) = (5, 0.7)), 5),
            ("top_p 0.8, T 1.3", config(|c| (c.top_p, c.temperature) = (0.8, 1.3)), 0),
            ("min_p 0.1, T 0.9", config(|c| (c.min_p, c.temperature) = (0.1, 0.9)), 0),
            ("typical_p 0.9", config(|c| c.typical_p = 0.9), 0),
            ("llama.cpp defaults", SamplerConfig { seed: 12, ..SamplerConfig::default() }, 0),
        ];
        for (name, mut c, want_kept) in cases {
            c.order = order;
            let probs = check_sample_matches_distribution(c, &[], &format!("{name}, {order:?}"));
            let kept = probs.iter().filter(|&&p| p > 0.0).count();
            // Each truncation drops something here, or the test would not see the zeros.
            assert!(kept < 10, "{name}, {order:?}: nothing dropped");
            if want_kept > 0 {
                assert_eq!(kept, want_kept, "{name}, {order:?}");
            }
        }
    }
}

#[test]
fn sample_follows_distribution_with_penalties_and_bias() {
    let history = [1, 1, 4, 7, 0];
    for order in [SamplerOrder::LlamaCpp, SamplerOrder::HuggingFace] {
        let c = config(|c| {
            c.repeat_penalty = 1.3;
            c.frequency_penalty = 0.2;
            c.presence_penalty = 0.4;
            c.logit_bias = vec![(9, 1.5), (3, f32::NEG_INFINITY)];
            c.top_k = 8;
            c.temperature = 0.8;
            c.order = order;
        });
        let probs = check_sample_matches_distribution(c, &history, &format!("penalties, {order:?}"));
        assert_eq!(probs[3], 0.0, "the banned token");
        // Penalised below what it would have without the history.
        let mut plain = Sampler::new(config(|c| (c.top_k, c.temperature, c.order) = (8, 0.8, order))).unwrap();
        let mut p = [0.0f32; 10];
        plain.distribution(&LOGITS, &mut p);
        assert!(probs[1] < p[1] as f64 * 0.8, "{order:?}: token 1 not penalised: {} vs {}", probs[1], p[1]);
    }
}

#[test]
fn trap_distribution_of_the_other_stage_order_is_detected() {
    // top_p at T = 1.6 keeps more tokens in Hugging Face's order (temperature first): sampling in
    // llama.cpp's order must not fit that distribution. Shows the check above can fail.
    let llama = config(|c| (c.top_p, c.temperature) = (0.7, 1.6));
    let hf = SamplerConfig { order: SamplerOrder::HuggingFace, ..llama.clone() };
    let mut wrong = [0.0f32; 10];
    Sampler::new(hf).unwrap().distribution(&LOGITS, &mut wrong);
    let mut s = Sampler::new(llama).unwrap();
    let mut counts = [0u64; 10];
    for _ in 0..DRAWS {
        counts[s.sample(&LOGITS) as usize] += 1;
    }
    let wrong: Vec<f64> = wrong.iter().map(|&x| x as f64).collect();
    assert_misfits(&counts, &wrong, "llama.cpp-order draws against the HF-order distribution");
}

#[test]
fn greedy_distribution_is_one_hot_at_what_sample_picks() {
    for bias in [vec![], vec![(0u32, -0.6f32)]] {
        let mut s = Sampler::new(SamplerConfig { logit_bias: bias, ..SamplerConfig::greedy() }).unwrap();
        let mut p = [0.0f32; 10];
        s.distribution(&LOGITS, &mut p);
        let id = s.sample(&LOGITS) as usize;
        assert_eq!(p[id], 1.0);
        assert_eq!(p.iter().sum::<f32>(), 1.0);
    }
}

#[test]
fn draw_from_follows_its_row() {
    let mut s = Sampler::new(config(|_| {})).unwrap();
    let p = [0.1f32, 0.0, 0.35, 0.05, 0.3, 0.2];
    let mut counts = [0u64; 6];
    for _ in 0..DRAWS {
        counts[s.draw_from(&p) as usize] += 1;
    }
    assert_fits(&counts, &p.map(|x| x as f64), "draw_from");
}

// ---------------------------------------------------------------------------------------------
// Speculative sampling: a one-step target
// ---------------------------------------------------------------------------------------------

const V: usize = 6;
const TRIALS: usize = 200_000;
/// The target: token 2 impossible.
const P: [f32; V] = [0.05, 0.30, 0.0, 0.25, 0.15, 0.25];
/// The drafter, far from P: it likes the impossible token 2 and never proposes token 5.
const Q: [f32; V] = [0.30, 0.05, 0.30, 0.10, 0.25, 0.0];

/// A verification rule under test: (target (k+1, V), draft (k, V), drafted (k), rng).
type Rule = dyn Fn(&[f32], &[f32], &[u32], &mut Rng) -> Verdict;

fn speculative_sampling(target: &[f32], draft: &[f32], drafted: &[u32], rng: &mut Rng) -> Verdict {
    verify_sampled(target, DraftProbs::Rows(draft), drafted, V, rng).unwrap()
}

fn to_f64(p: &[f32]) -> Vec<f64> {
    p.iter().map(|&x| x as f64).collect()
}

fn sum_min(p: &[f32], q: &[f32]) -> f64 {
    p.iter().zip(q).map(|(&a, &b)| a.min(b) as f64).sum()
}

/// Runs draft-then-verify `TRIALS` times with k drafts from Q against P at every position (a
/// context-free "model"); returns the counts of the first emitted token and how often d_0 was
/// accepted.
fn first_token_counts(rule: &Rule, k: usize, seed: u64) -> ([u64; V], u64) {
    let mut draft_rng = Rng::new(seed);
    let mut rng = Rng::new(seed + 1000);
    let target: Vec<f32> = P.repeat(k + 1);
    let draft: Vec<f32> = Q.repeat(k);
    let mut drafted = vec![0u32; k];
    let (mut counts, mut first_accepted) = ([0u64; V], 0);
    for _ in 0..TRIALS {
        for d in drafted.iter_mut() {
            *d = draw_weighted(&mut draft_rng, Q.iter().copied()).unwrap();
        }
        let v = rule(&target, &draft, &drafted, &mut rng);
        assert!(v.accepted <= k);
        let first = if v.accepted > 0 { drafted[0] } else { v.next };
        counts[first as usize] += 1;
        first_accepted += (v.accepted > 0) as u64;
    }
    (counts, first_accepted)
}

/// Asserts an observed acceptance count is within 5 standard errors of rate * TRIALS.
fn assert_rate(accepted: u64, rate: f64, what: &str) {
    let n = TRIALS as f64;
    let se = (rate * (1.0 - rate) / n).sqrt();
    let got = accepted as f64 / n;
    assert!((got - rate).abs() < 5.0 * se, "{what}: acceptance {got:.4}, expected {rate:.4}");
}

#[test]
fn first_emitted_token_follows_target_with_sampled_drafts() {
    for k in [1, 3] {
        let (counts, accepted) = first_token_counts(&speculative_sampling, k, k as u64);
        assert_fits(&counts, &to_f64(&P), &format!("k {k}"));
        // Acceptance of each draft is 1 - TV(p, q) = sum min(p, q) (0.5 here): the efficiency
        // that makes the method worth it.
        assert_rate(accepted, sum_min(&P, &Q), &format!("k {k}"));
    }
}

#[test]
fn first_emitted_token_follows_target_for_every_one_hot_draft() {
    // A deterministic drafter (prompt lookup) proposing each token in turn, the impossible 2
    // included: whatever it proposes, the emitted token follows P.
    let mut rng = Rng::new(21);
    for d in 0..V as u32 {
        let target: Vec<f32> = P.repeat(2);
        let mut counts = [0u64; V];
        let mut accepted = 0;
        for _ in 0..TRIALS / V {
            let v = verify_sampled(&target, DraftProbs::OneHot, &[d], V, &mut rng).unwrap();
            counts[if v.accepted > 0 { d } else { v.next } as usize] += 1;
            accepted += v.accepted as u64;
        }
        assert_fits(&counts, &to_f64(&P), &format!("one-hot draft {d}"));
        // One-hot q: accepted with probability p(d).
        let n = (TRIALS / V) as f64;
        let p = P[d as usize] as f64;
        assert!((accepted as f64 / n - p).abs() < 5.0 * (p * (1.0 - p) / n).sqrt() + 1e-9, "draft {d}");
    }
}

// ---------------------------------------------------------------------------------------------
// Trap tests: wrong rules fail the same chi-square
// ---------------------------------------------------------------------------------------------

/// Accept with min(1, p/q) as it should, but on rejection resample from p instead of the
/// residual max(0, p - q): tokens the drafter likes less than the target get counted twice.
fn wrong_residual(target: &[f32], draft: &[f32], drafted: &[u32], rng: &mut Rng) -> Verdict {
    for (i, &d) in drafted.iter().enumerate() {
        let (p, q) = (&target[i * V..(i + 1) * V], &draft[i * V..(i + 1) * V]);
        if q[d as usize] > 0.0 && rng.next_f32() * q[d as usize] < p[d as usize] {
            continue;
        }
        return Verdict { accepted: i, next: draw_weighted(rng, p.iter().copied()).unwrap() };
    }
    let bonus = &target[drafted.len() * V..];
    Verdict { accepted: drafted.len(), next: draw_weighted(rng, bonus.iter().copied()).unwrap() }
}

/// The acceptance ratio upside down, min(1, q/p), with the right residual: tokens the drafter
/// overrates get through.
fn inverted_ratio(target: &[f32], draft: &[f32], drafted: &[u32], rng: &mut Rng) -> Verdict {
    for (i, &d) in drafted.iter().enumerate() {
        let (p, q) = (&target[i * V..(i + 1) * V], &draft[i * V..(i + 1) * V]);
        if p[d as usize] > 0.0 && rng.next_f32() * p[d as usize] < q[d as usize] {
            continue;
        }
        let residual = p.iter().zip(q).map(|(&p, &q)| p - q);
        let next = draw_weighted(rng, residual).or_else(|| draw_weighted(rng, p.iter().copied()));
        return Verdict { accepted: i, next: next.unwrap() };
    }
    let bonus = &target[drafted.len() * V..];
    Verdict { accepted: drafted.len(), next: draw_weighted(rng, bonus.iter().copied()).unwrap() }
}

/// The one-hot rule applied to a sampled draft: accept with p(d), ignoring q.
fn ignore_draft_probs(target: &[f32], _draft: &[f32], drafted: &[u32], rng: &mut Rng) -> Verdict {
    verify_sampled(target, DraftProbs::OneHot, drafted, V, rng).unwrap()
}

/// Sample t from p and accept the draft only when it equals t; else emit t.
fn match_target_sample(target: &[f32], _draft: &[f32], drafted: &[u32], rng: &mut Rng) -> Verdict {
    for (i, &d) in drafted.iter().enumerate() {
        let t = draw_weighted(rng, target[i * V..(i + 1) * V].iter().copied()).unwrap();
        if t != d {
            return Verdict { accepted: i, next: t };
        }
    }
    let bonus = &target[drafted.len() * V..];
    Verdict { accepted: drafted.len(), next: draw_weighted(rng, bonus.iter().copied()).unwrap() }
}

#[test]
fn trap_resampling_from_p_instead_of_the_residual_is_detected() {
    let (counts, _) = first_token_counts(&wrong_residual, 1, 31);
    assert_misfits(&counts, &to_f64(&P), "rejections resampled from p");
}

#[test]
fn trap_inverted_acceptance_ratio_is_detected() {
    let (counts, _) = first_token_counts(&inverted_ratio, 1, 32);
    assert_misfits(&counts, &to_f64(&P), "acceptance min(1, q/p)");
}

#[test]
fn naive_rules_are_unbiased_but_accept_less_than_speculative_sampling() {
    // Two rules that look like traps and are not. Emitting a fresh sample t of p whenever it
    // differs from the draft always emits a sample of p, whatever q. The one-hot rule (accept
    // with p(d), else draw from p without d) applied to a sampled draft is exact given any d,
    // hence for any drafter. What both lose is efficiency: a draft survives with probability
    // sum p*q (0.1225 here) instead of sum min(p, q) (0.5). For a one-hot q all three coincide.
    let sum_pq: f64 = P.iter().zip(&Q).map(|(&a, &b)| (a * b) as f64).sum();
    assert!(sum_pq < 0.3 * sum_min(&P, &Q));
    for (name, rule, seed) in
        [("match a sample of p", &match_target_sample as &Rule, 33), ("one-hot rule on a sampled draft", &ignore_draft_probs as &Rule, 34)]
    {
        let (counts, accepted) = first_token_counts(rule, 1, seed);
        assert_fits(&counts, &to_f64(&P), name);
        assert_rate(accepted, sum_pq, name);
    }
}

// ---------------------------------------------------------------------------------------------
// Two steps: Markov chains as target and draft models
// ---------------------------------------------------------------------------------------------

const M: usize = 5;
/// The target model: first-token distribution, then a transition row per previous token.
const TARGET_START: [f32; M] = [0.2, 0.3, 0.1, 0.25, 0.15];
const TARGET_NEXT: [[f32; M]; M] =
    [[0.1, 0.4, 0.0, 0.3, 0.2], [0.3, 0.1, 0.3, 0.1, 0.2], [0.2, 0.2, 0.2, 0.2, 0.2], [0.0, 0.5, 0.25, 0.1, 0.15], [0.4, 0.1, 0.1, 0.3, 0.1]];
/// The draft model: close in places, wrong in others.
const DRAFT_START: [f32; M] = [0.4, 0.1, 0.2, 0.2, 0.1];
const DRAFT_NEXT: [[f32; M]; M] =
    [[0.3, 0.3, 0.2, 0.1, 0.1], [0.3, 0.1, 0.3, 0.1, 0.2], [0.05, 0.05, 0.6, 0.1, 0.2], [0.1, 0.2, 0.4, 0.2, 0.1], [0.0, 0.2, 0.2, 0.2, 0.4]];

fn target_row(prev: Option<u32>) -> &'static [f32; M] {
    prev.map_or(&TARGET_START, |t| &TARGET_NEXT[t as usize])
}

fn draft_row(prev: Option<u32>) -> &'static [f32; M] {
    prev.map_or(&DRAFT_START, |t| &DRAFT_NEXT[t as usize])
}

/// The exact joint distribution of the first two tokens of the target chain (M*M, a then b).
fn target_pairs() -> Vec<f64> {
    (0..M * M).map(|ab| (TARGET_START[ab / M] * TARGET_NEXT[ab / M][ab % M]) as f64).collect()
}

/// A verification rule over the chains' vocabulary: (target (k+1, M), draft, drafted (k), rng).
type ChainRule = dyn Fn(&[f32], DraftProbs<'_>, &[u32], &mut Rng) -> Verdict;

fn chain_speculative_sampling(target: &[f32], draft: DraftProbs<'_>, drafted: &[u32], rng: &mut Rng) -> Verdict {
    verify_sampled(target, draft, drafted, M, rng).unwrap()
}

/// Generates until two tokens are emitted, drafting k tokens per round from the draft chain
/// (sampled, or greedy when `one_hot`) and verifying with `rule`; returns the counts of the
/// first pair.
fn first_pair_counts(rule: &ChainRule, k: usize, one_hot: bool, seed: u64) -> Vec<u64> {
    let mut draft_rng = Rng::new(seed);
    let mut rng = Rng::new(seed + 1000);
    let mut counts = vec![0u64; M * M];
    let (mut target, mut draft, mut drafted) = (Vec::new(), Vec::new(), Vec::new());
    let mut emitted = Vec::new();
    for _ in 0..TRIALS {
        emitted.clear();
        while emitted.len() < 2 {
            let mut prev = emitted.last().copied();
            target.clear();
            draft.clear();
            drafted.clear();
            for _ in 0..k {
                let q = draft_row(prev);
                let d = if one_hot { generate::sampler::argmax(q) } else { draw_weighted(&mut draft_rng, q.iter().copied()).unwrap() };
                target.extend_from_slice(target_row(prev));
                draft.extend_from_slice(q);
                drafted.push(d);
                prev = Some(d);
            }
            target.extend_from_slice(target_row(prev));
            let mode = if one_hot { DraftProbs::OneHot } else { DraftProbs::Rows(&draft) };
            let v = rule(&target, mode, &drafted, &mut rng);
            emitted.extend_from_slice(&drafted[..v.accepted]);
            emitted.push(v.next);
        }
        counts[emitted[0] as usize * M + emitted[1] as usize] += 1;
    }
    counts
}

#[test]
fn first_two_tokens_follow_the_target_chain_with_sampled_drafts() {
    let want = target_pairs();
    for k in [1, 3] {
        assert_fits(&first_pair_counts(&chain_speculative_sampling, k, false, 40 + k as u64), &want, &format!("sampled drafts, k {k}"));
    }
}

#[test]
fn first_two_tokens_follow_the_target_chain_with_greedy_one_hot_drafts() {
    assert_fits(&first_pair_counts(&chain_speculative_sampling, 3, true, 50), &target_pairs(), "one-hot drafts, k 3");
}

#[test]
fn trap_bonus_token_from_the_previous_row_is_detected() {
    // An off-by-one that only the second token can show: the bonus drawn from p_{k-1} (the
    // distribution the last draft came from) instead of p_k (the one after it).
    let off_by_one = |target: &[f32], draft: DraftProbs<'_>, drafted: &[u32], rng: &mut Rng| {
        let k = drafted.len();
        let mut shifted = target.to_vec();
        shifted.copy_within((k - 1) * M..k * M, k * M);
        verify_sampled(&shifted, draft, drafted, M, rng).unwrap()
    };
    assert_misfits(&first_pair_counts(&off_by_one, 1, false, 55), &target_pairs(), "bonus from p_(k-1)");
}

// ---------------------------------------------------------------------------------------------
// The sampler as target, penalties included
// ---------------------------------------------------------------------------------------------

/// Target model logits after `prev` (None: at the start).
fn model_logits(prev: Option<u32>) -> [f32; V] {
    let shift = prev.map_or(0.0, |t| t as f32 * 0.7);
    std::array::from_fn(|j| ((j as f32 + shift) * 1.3).sin() * 2.0)
}

#[test]
fn first_two_tokens_follow_a_penalised_truncated_sampler() {
    // Target: a sampler with a presence penalty (so the second token's distribution depends on
    // the first through the history, not only through the logits), top_k and temperature. The
    // drafter: a different sampler over different logits.
    let target_config = config(|c| {
        c.presence_penalty = 1.5;
        c.top_k = 5;
        c.temperature = 0.9;
        c.seed = 60;
    });
    let draft_config = config(|c| {
        c.temperature = 1.4;
        c.seed = 61;
    });
    // The exact joint, from fresh samplers.
    let mut want = vec![0.0f64; V * V];
    let mut first = [0.0f32; V];
    Sampler::new(target_config.clone()).unwrap().distribution(&model_logits(None), &mut first);
    for a in 0..V {
        let mut s = Sampler::new(target_config.clone()).unwrap();
        s.accept(a as u32);
        let mut second = [0.0f32; V];
        s.distribution(&model_logits(Some(a as u32)), &mut second);
        for b in 0..V {
            want[a * V + b] = first[a] as f64 * second[b] as f64;
        }
    }
    let mut target = Sampler::new(target_config).unwrap();
    let mut drafter = Sampler::new(draft_config).unwrap();
    let k = 3;
    let (mut logits, mut p, mut q) = (vec![0.0f32; (k + 1) * V], vec![0.0f32; (k + 1) * V], vec![0.0f32; k * V]);
    let mut drafted = Vec::new();
    let mut emitted: Vec<u32> = Vec::new();
    let mut counts = vec![0u64; V * V];
    for _ in 0..TRIALS / 2 {
        target.reset_history();
        emitted.clear();
        while emitted.len() < 2 {
            let mut prev = emitted.last().copied();
            drafted.clear();
            for i in 0..k {
                logits[i * V..(i + 1) * V].copy_from_slice(&model_logits(prev));
                let draft_logits = model_logits(prev.map(|t| (t + 2) % V as u32));
                let row = &mut q[i * V..(i + 1) * V];
                drafter.distribution(&draft_logits, row);
                let d = drafter.draw_from(row);
                drafted.push(d);
                prev = Some(d);
            }
            logits[k * V..].copy_from_slice(&model_logits(prev));
            target.distributions_after_drafts(&logits, &drafted, &mut p);
            let v = verify_sampled(&p, DraftProbs::Rows(&q), &drafted, V, target.rng_mut()).unwrap();
            for &t in drafted[..v.accepted].iter().chain([&v.next]) {
                target.accept(t);
                emitted.push(t);
            }
        }
        counts[emitted[0] as usize * V + emitted[1] as usize] += 1;
    }
    assert_fits(&counts, &want, "penalised sampler as target");
}
