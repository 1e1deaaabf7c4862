//! Tests of the whole chain (each stage's own edge cases are here too, named by stage).

use super::*;
use proptest::prelude::*;

/// A sampler with only the given filters on, temperature 1.
fn sampler(top_k: usize, top_p: f32, min_p: f32, seed: u64) -> Sampler {
    let config = SamplerConfig { temperature: 1.0, top_k, top_p, min_p, seed, ..SamplerConfig::greedy() };
    Sampler::new(config).unwrap()
}

/// Logits whose softmax is exactly `probs` (up to rounding).
fn logits_of(probs: &[f32]) -> Vec<f32> {
    probs.iter().map(|p| p.ln()).collect()
}

/// Ids left after every stage of the sampler's order (the draw excepted), in rank order.
fn kept(s: &mut Sampler, logits: &[f32]) -> Vec<u32> {
    s.load(logits);
    for &stage in s.config.order.stages() {
        s.run(stage);
    }
    s.rank_candidates();
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
    assert_eq!((c.temperature, c.top_k, c.top_p, c.min_p, c.seed), (0.8, 40, 0.95, 0.05, 0));
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
    assert_eq!(bad(|c| c.temperature = -0.5), SamplerError::Temperature { got: -0.5 });
    assert!(matches!(bad(|c| c.temperature = f32::NAN), SamplerError::Temperature { .. }));
    assert!(matches!(bad(|c| c.temperature = f32::INFINITY), SamplerError::Temperature { .. }));
    assert_eq!(bad(|c| c.top_p = 0.0), SamplerError::TopP { got: 0.0 });
    assert_eq!(bad(|c| c.top_p = 1.5), SamplerError::TopP { got: 1.5 });
    assert!(matches!(bad(|c| c.top_p = f32::NAN), SamplerError::TopP { .. }));
    assert_eq!(bad(|c| c.min_p = -0.1), SamplerError::MinP { got: -0.1 });
    assert_eq!(bad(|c| c.min_p = 1.1), SamplerError::MinP { got: 1.1 });
    let message = bad(|c| c.top_p = 2.0).to_string();
    assert!(message.contains("(0, 1]") && message.contains('2'), "{message}");
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
    assert!((freq[0] - 0.5).abs() < 0.02 && (freq[2] - 0.5).abs() < 0.02, "{freq:?}");
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
        let config = SamplerConfig { temperature, ..SamplerConfig::default() };
        // Negative temperature is rejected by validate; greedy semantics still hold.
        let mut s = Sampler::new(SamplerConfig::default()).unwrap();
        s.config = config;
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
    let config = SamplerConfig { temperature: 10.0, top_k: 0, top_p: 0.85, min_p: 0.0, seed: 5, ..SamplerConfig::greedy() };
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
    assert!((x[0] as f64 - p0).abs() < 1e-6 && (x[1] as f64 - (1.0 - p0)).abs() < 1e-6, "{x:?}");

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
    let logits: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32) * 0.13 - 5.0).collect();
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
    let config = SamplerConfig { temperature: 2.0, ..SamplerConfig::greedy() };
    let freq = frequencies(&mut Sampler::new(config).unwrap(), &logits_of(&[0.1, 0.2, 0.3, 0.4]), 20_000);
    let norm: f64 = probs.iter().map(|p| p.sqrt()).sum();
    for (f, p) in freq.iter().zip(probs) {
        assert!((f - p.sqrt() / norm).abs() < 0.015, "{freq:?}");
    }
}

#[test]
fn nan_logits_do_not_panic_and_are_never_drawn() {
    let logits = [f32::NAN, 1.0, f32::NAN, 0.5];
    assert_eq!(argmax(&logits), 1);
    let mut s = Sampler::new(SamplerConfig { seed: 2, ..SamplerConfig::default() }).unwrap();
    assert!((0..200).map(|_| s.sample(&logits)).all(|id| id == 1 || id == 3));
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
    assert_eq!(kept(&mut sampler(1, 1.0, 0.0, 0), &[0.0, 2.0, 2.0, 2.0]), vec![1]);
    assert_eq!(kept(&mut sampler(2, 1.0, 0.0, 0), &[2.0, 0.0, 2.0, 2.0]), vec![0, 2]);
}

#[test]
fn no_reallocation_once_warmed_up() {
    let logits: Vec<f32> = (0..5000).map(|i| (i % 97) as f32 * 0.01).collect();
    let mut s = Sampler::new(SamplerConfig { top_k: 0, ..SamplerConfig::default() }).unwrap();
    s.sample(&logits);
    let before = (s.candidates.as_ptr(), s.candidates.capacity(), s.probs.as_ptr(), s.probs.capacity());
    for _ in 0..10 {
        s.sample(&logits);
    }
    let after = (s.candidates.as_ptr(), s.candidates.capacity(), s.probs.as_ptr(), s.probs.capacity());
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
