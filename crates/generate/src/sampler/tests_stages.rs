//! Tests of the newer stages (typical_p, penalties, logit bias), the two orders and logprobs.

use super::*;
use proptest::prelude::*;

/// Temperature 1, every filter off, the given seed: tests turn on what they test.
fn plain(seed: u64) -> SamplerConfig {
    SamplerConfig { temperature: 1.0, seed, ..SamplerConfig::greedy() }
}

fn logits_of(probs: &[f32]) -> Vec<f32> {
    probs.iter().map(|p| p.ln()).collect()
}

/// Ids left after every stage (the draw excepted), in rank order.
fn kept(config: SamplerConfig, logits: &[f32]) -> Vec<u32> {
    let mut s = Sampler::new(config).unwrap();
    s.load(logits);
    for &stage in s.config.order.stages() {
        s.run(stage);
    }
    s.rank_candidates();
    s.candidates.iter().map(|c| c.id).collect()
}

/// The logits after bias and penalties only, indexed by id.
fn adjusted(s: &mut Sampler, logits: &[f32]) -> Vec<f32> {
    s.load(logits);
    s.run(Stage::LogitBias);
    s.run(Stage::Penalties);
    s.candidates.iter().map(|c| c.logit).collect()
}

fn draws(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<u32> {
    (0..n).map(|_| s.sample(logits)).collect()
}

#[test]
fn default_order_is_llama_cpp_and_both_orders_lead_with_bias_and_penalties() {
    assert_eq!(SamplerConfig::default().order, SamplerOrder::LlamaCpp);
    for order in [SamplerOrder::LlamaCpp, SamplerOrder::HuggingFace] {
        let stages = order.stages();
        assert_eq!(&stages[..2], &[Stage::LogitBias, Stage::Penalties]);
        assert!(stages[2..].iter().all(|s| !s.adjusts_logits()));
        assert_eq!(stages.len(), 7);
    }
    assert_eq!(SamplerOrder::LlamaCpp.stages().last(), Some(&Stage::Temperature));
    assert_eq!(SamplerOrder::HuggingFace.stages()[2], Stage::Temperature);
}

#[test]
fn validate_rejects_out_of_range_new_settings() {
    let bad = |f: fn(&mut SamplerConfig)| {
        let mut c = SamplerConfig::default();
        f(&mut c);
        Sampler::new(c).err().expect("should be rejected")
    };
    assert_eq!(bad(|c| c.typical_p = 0.0), SamplerError::TypicalP { got: 0.0 });
    assert_eq!(bad(|c| c.typical_p = 1.5), SamplerError::TypicalP { got: 1.5 });
    assert_eq!(bad(|c| c.repeat_penalty = 0.0), SamplerError::RepeatPenalty { got: 0.0 });
    assert!(matches!(bad(|c| c.repeat_penalty = f32::NAN), SamplerError::RepeatPenalty { .. }));
    assert!(matches!(bad(|c| c.frequency_penalty = f32::INFINITY), SamplerError::Penalty { name: "frequency_penalty", .. }));
    assert!(matches!(bad(|c| c.presence_penalty = f32::NAN), SamplerError::Penalty { name: "presence_penalty", .. }));
    assert!(matches!(bad(|c| c.penalty_window = usize::MAX), SamplerError::PenaltyWindow { .. }));
    assert_eq!(bad(|c| c.logit_bias = vec![(3, 1.0), (7, f32::INFINITY)]), SamplerError::LogitBias { token: 7, got: f32::INFINITY });
    assert!(matches!(bad(|c| c.logit_bias = vec![(1, f32::NAN)]), SamplerError::LogitBias { .. }));
    let ok =
        SamplerConfig { logit_bias: vec![(1, f32::NEG_INFINITY), (2, -3.0)], frequency_penalty: -0.5, penalty_window: 0, ..SamplerConfig::default() };
    assert!(ok.validate().is_ok());
    let message = bad(|c| c.typical_p = 2.0).to_string();
    assert!(message.contains("typical_p") && message.contains("(0, 1]"), "{message}");
}

#[test]
fn top_k_of_one_always_draws_the_argmax_and_k_beyond_vocab_keeps_all() {
    let logits = [0.5, 2.0, 1.9, -1.0];
    let mut s = Sampler::new(SamplerConfig { top_k: 1, ..plain(3) }).unwrap();
    assert!(draws(&mut s, &logits, 200).iter().all(|&id| id == 1));
    for k in [4, 5, 1000] {
        assert_eq!(kept(SamplerConfig { top_k: k, ..plain(0) }, &logits), vec![1, 2, 0, 3]);
    }
}

#[test]
fn top_p_one_keeps_all_and_tiny_top_p_keeps_only_the_top() {
    let logits = logits_of(&[0.1, 0.2, 0.3, 0.4]);
    assert_eq!(kept(SamplerConfig { top_p: 1.0, ..plain(0) }, &logits).len(), 4);
    assert_eq!(kept(SamplerConfig { top_p: 1e-6, ..plain(0) }, &logits), vec![3]);
}

#[test]
fn typical_p_one_is_identity() {
    let logits = logits_of(&[0.4, 0.15, 0.15, 0.15, 0.15]);
    for order in [SamplerOrder::LlamaCpp, SamplerOrder::HuggingFace] {
        let config = SamplerConfig { typical_p: 1.0, order, ..plain(0) };
        assert_eq!(kept(config, &logits), vec![0, 1, 2, 3, 4]);
    }
}

#[test]
fn typical_p_can_drop_the_most_likely_token() {
    // H = 1.505 nats; -ln 0.4 = 0.92 is further from H than -ln 0.15 = 1.90, so the four 0.15s
    // are the typical ones: mass 0.5 is reached after four of them and token 0 goes.
    let logits = logits_of(&[0.4, 0.15, 0.15, 0.15, 0.15]);
    assert_eq!(kept(SamplerConfig { typical_p: 0.5, ..plain(0) }, &logits), vec![1, 2, 3, 4]);
    // Ties in typicality go to the lower id: mass 0.35 needs three of the four.
    assert_eq!(kept(SamplerConfig { typical_p: 0.35, ..plain(0) }, &logits), vec![1, 2, 3]);
    // Never empty, even with a tiny mass.
    assert_eq!(kept(SamplerConfig { typical_p: 1e-6, ..plain(0) }, &logits), vec![1]);
}

#[test]
fn all_minus_inf_but_one_always_draws_that_one() {
    let inf = f32::NEG_INFINITY;
    let logits = [inf, inf, 2.0, inf, f32::NAN];
    for order in [SamplerOrder::LlamaCpp, SamplerOrder::HuggingFace] {
        for (top_k, top_p, min_p, typical_p) in [(0, 1.0, 0.0, 1.0), (3, 0.5, 0.1, 0.5)] {
            let config = SamplerConfig { top_k, top_p, min_p, typical_p, order, temperature: 1.5, ..plain(7) };
            let mut s = Sampler::new(config).unwrap();
            assert!(draws(&mut s, &logits, 300).iter().all(|&id| id == 2));
        }
    }
}

#[test]
fn banned_token_is_never_drawn_even_by_greedy() {
    let logits = [1.0f32, 1.0, 1.0, 1.0];
    let config = SamplerConfig { logit_bias: vec![(1, f32::NEG_INFINITY), (99, 5.0)], ..plain(4) };
    let mut s = Sampler::new(config).unwrap();
    let got = draws(&mut s, &logits, 4000);
    assert!(!got.contains(&1));
    assert!([0, 2, 3].iter().all(|id| got.contains(id)));

    // Greedy honours bias too (and so is not "plain greedy": the caller must pass logits).
    let config = SamplerConfig { logit_bias: vec![(1, f32::NEG_INFINITY), (0, 0.5)], ..SamplerConfig::greedy() };
    let mut s = Sampler::new(config).unwrap();
    assert!(!s.is_plain_greedy());
    assert_eq!(s.sample(&[0.0, 5.0, 0.4]), 0);
    assert!(Sampler::new(SamplerConfig::greedy()).unwrap().is_plain_greedy());
}

#[test]
fn logit_bias_adds_and_minus_inf_bans_even_plus_inf() {
    let config = SamplerConfig { logit_bias: vec![(0, 1.5), (2, f32::NEG_INFINITY), (0, 1.0)], ..plain(0) };
    let mut s = Sampler::new(config).unwrap();
    assert_eq!(adjusted(&mut s, &[1.0, 2.0, f32::INFINITY]), vec![3.5, 2.0, f32::NEG_INFINITY]);
}

#[test]
fn repeat_penalty_divides_positive_and_multiplies_negative_logits_once_per_token() {
    let config = SamplerConfig { repeat_penalty: 2.0, ..plain(0) };
    let mut s = Sampler::new(config).unwrap();
    for token in [0, 1, 1, 1] {
        s.accept(token);
    }
    // Token 1 was seen three times and is still penalised once: -2 * 2, not -2 * 8.
    assert_eq!(adjusted(&mut s, &[2.0, -2.0, 1.0, 0.0]), vec![1.0, -4.0, 1.0, 0.0]);
    s.accept(3);
    // 0 is not positive: multiplied, stays 0.
    assert_eq!(adjusted(&mut s, &[2.0, -2.0, 1.0, 0.0])[3], 0.0);
}

#[test]
fn frequency_and_presence_penalties_follow_the_openai_formula() {
    let config = SamplerConfig { frequency_penalty: 0.5, presence_penalty: 1.0, ..plain(0) };
    let mut s = Sampler::new(config).unwrap();
    for token in [2, 0, 2, 2, 7] {
        s.accept(token);
    }
    // logit - 0.5 * count - 1.0 * (count > 0); token 7 is beyond this vocabulary: ignored.
    assert_eq!(adjusted(&mut s, &[2.0, 1.0, 1.0]), vec![0.5, 1.0, -1.5]);
}

#[test]
fn penalty_window_excludes_old_tokens_and_zero_means_all() {
    let config = SamplerConfig { presence_penalty: 1.0, penalty_window: 2, ..plain(0) };
    let mut s = Sampler::new(config).unwrap();
    for token in [0, 1, 2, 1] {
        s.accept(token);
    }
    // The window holds [2, 1]; 0 left it, and the older 1 left while the newer stays.
    assert_eq!((s.history.count(0), s.history.count(1), s.history.count(2)), (0, 1, 1));
    assert_eq!(adjusted(&mut s, &[0.0; 3]), vec![0.0, -1.0, -1.0]);

    let config = SamplerConfig { presence_penalty: 1.0, penalty_window: 0, ..plain(0) };
    let mut s = Sampler::new(config).unwrap();
    for token in [0, 1, 2, 1] {
        s.accept(token);
    }
    assert_eq!(adjusted(&mut s, &[0.0; 3]), vec![-1.0; 3]);
    s.reset_history();
    assert_eq!(adjusted(&mut s, &[0.0; 3]), vec![0.0; 3]);
}

#[test]
fn greedy_applies_penalties_before_the_argmax() {
    let config = SamplerConfig { repeat_penalty: 2.0, ..SamplerConfig::greedy() };
    let mut s = Sampler::new(config).unwrap();
    let logits = [3.0, 2.9, 0.0];
    assert_eq!(s.sample(&logits), 0);
    s.accept(0);
    assert_eq!(s.sample(&logits), 1);
}

#[test]
fn llama_cpp_and_hugging_face_orders_keep_different_top_p_sets_when_t_is_not_1() {
    // At T = 1 top_p 0.85 keeps {0, 1} (0.6 + 0.3). HF applies T = 10 first: 0.6^0.1, 0.3^0.1,
    // 0.1^0.1 normalise to about 0.37, 0.34, 0.29, so it needs all three to reach 0.85.
    let logits = logits_of(&[0.6, 0.3, 0.1]);
    let config = |order, temperature| SamplerConfig { top_p: 0.85, order, temperature, ..plain(0) };
    assert_eq!(kept(config(SamplerOrder::LlamaCpp, 10.0), &logits), vec![0, 1]);
    assert_eq!(kept(config(SamplerOrder::HuggingFace, 10.0), &logits), vec![0, 1, 2]);
    // At T = 1 they agree.
    assert_eq!(kept(config(SamplerOrder::LlamaCpp, 1.0), &logits), vec![0, 1]);
    assert_eq!(kept(config(SamplerOrder::HuggingFace, 1.0), &logits), vec![0, 1]);
    // And so do the draws: the HF sampler does draw token 2.
    let mut hf = Sampler::new(SamplerConfig { seed: 1, ..config(SamplerOrder::HuggingFace, 10.0) }).unwrap();
    assert!(draws(&mut hf, &logits, 2000).contains(&2));
}

#[test]
fn logprobs_are_of_the_full_distribution_and_match_log_softmax_at() {
    let logits: Vec<f32> = (0..300).map(|i| ((i * 37 % 101) as f32) * 0.07 - 3.0).collect();
    for order in [SamplerOrder::LlamaCpp, SamplerOrder::HuggingFace] {
        let config = SamplerConfig { logprobs: 5, temperature: 2.0, top_k: 3, order, ..plain(8) };
        let mut s = Sampler::new(config).unwrap();
        for _ in 0..20 {
            let (id, lp) = s.sample_with_logprobs(&logits);
            let lp = lp.expect("logprobs were asked for");
            assert_eq!(lp.token, id);
            // Temperature and top_k do not enter: the model's own distribution.
            assert!((lp.logprob as f64 - log_softmax_at(&logits, id)).abs() < 1e-5);
            assert_eq!(lp.top.len(), 5);
            assert_eq!(lp.top[0].0, argmax(&logits));
            assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
            let mass: f32 = lp.top.iter().map(|&(_, l)| l.exp()).sum();
            assert!(mass <= 1.0 + 1e-5 && mass > 0.0, "{mass}");
            for &(t, l) in &lp.top {
                assert!((l as f64 - log_softmax_at(&logits, t)).abs() < 1e-5);
            }
        }
    }
    // Off: None, and the same tokens as `sample` for the same seed.
    let mut a = Sampler::new(plain(3)).unwrap();
    let mut b = Sampler::new(SamplerConfig { logprobs: 2, ..plain(3) }).unwrap();
    for _ in 0..50 {
        let (id, lp) = a.sample_with_logprobs(&logits);
        assert!(lp.is_none());
        assert_eq!(b.sample_with_logprobs(&logits).0, id);
    }
}

#[test]
fn logprobs_see_bias_and_report_more_alternatives_than_vocab_as_all() {
    let config = SamplerConfig { logprobs: 10, logit_bias: vec![(0, f32::NEG_INFINITY)], ..SamplerConfig::greedy() };
    let mut s = Sampler::new(config).unwrap();
    let (id, lp) = s.sample_with_logprobs(&[5.0, 1.0, 1.0]);
    let lp = lp.unwrap();
    assert_eq!(id, 1);
    assert!((lp.logprob - 0.5f32.ln()).abs() < 1e-6);
    assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2, 0]);
    assert_eq!(lp.top[2].1, f32::NEG_INFINITY);
}

#[test]
fn seeded_runs_with_penalties_reproduce() {
    let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
    let run = |seed| {
        let config = SamplerConfig {
            repeat_penalty: 1.3,
            frequency_penalty: 0.2,
            presence_penalty: 0.1,
            typical_p: 0.9,
            ..SamplerConfig { seed, ..SamplerConfig::default() }
        };
        let mut s = Sampler::new(config).unwrap();
        (0..100)
            .map(|_| {
                let id = s.sample(&logits);
                s.accept(id);
                id
            })
            .collect::<Vec<u32>>()
    };
    assert_eq!(run(21), run(21));
    assert_ne!(run(21), run(22));
}

#[test]
fn no_reallocation_once_warmed_up_with_every_stage_on() {
    let logits: Vec<f32> = (0..5000).map(|i| (i % 97) as f32 * 0.01).collect();
    let config = SamplerConfig {
        top_k: 0,
        typical_p: 0.95,
        repeat_penalty: 1.1,
        frequency_penalty: 0.1,
        presence_penalty: 0.1,
        penalty_window: 16,
        logit_bias: vec![(3, f32::NEG_INFINITY)],
        logprobs: 3,
        ..SamplerConfig::default()
    };
    let mut s = Sampler::new(config).unwrap();
    // Warm up past the window, so the history is at its largest.
    for i in 0..40 {
        let _ = s.sample_with_logprobs(&logits);
        s.accept(i % 20);
    }
    let buffers = |s: &Sampler| {
        (
            (s.candidates.as_ptr(), s.candidates.capacity()),
            (s.probs.as_ptr(), s.probs.capacity()),
            (s.scored.as_ptr(), s.scored.capacity()),
            (s.snapshot.as_ptr(), s.snapshot.capacity()),
            s.history.capacity(),
        )
    };
    let before = buffers(&s);
    for i in 0..20 {
        let _ = s.sample_with_logprobs(&logits);
        s.accept(i % 20);
    }
    assert_eq!(before, buffers(&s));
}

proptest! {
    #[test]
    fn sample_always_returns_a_kept_id_in_both_orders(
        logits in proptest::collection::vec(-20.0f32..20.0, 1..80),
        k in 0usize..10, top_p in 0.01f32..=1.0, min_p in 0.0f32..=1.0,
        typical_p in 0.01f32..=1.0, temperature in 0.1f32..4.0, hf: bool, seed: u64,
    ) {
        let order = if hf { SamplerOrder::HuggingFace } else { SamplerOrder::LlamaCpp };
        let config = SamplerConfig { top_k: k, top_p, min_p, typical_p, temperature, order, ..plain(seed) };
        let allowed = kept(config.clone(), &logits);
        prop_assert!(!allowed.is_empty());
        let id = Sampler::new(config).unwrap().sample(&logits);
        prop_assert!(allowed.contains(&id));
    }
}
