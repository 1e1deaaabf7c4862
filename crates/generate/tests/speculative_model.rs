//! Speculative decoding on a real (tiny) model: a draft made of the model's own first layer, and
//! prompt lookup with sampling. Greedy output must not change; sampled output must keep the
//! model's distribution (chi-square over many seeds against the exact distribution).

use generate::sampler::{Sampler, SamplerConfig};
use generate::{GenerateOptions, PromptLookup, Session, Speculation};
use gguf::GgufFile;
use model::testing::{tiny_llama_gguf, TinySpec};
use model::tokenizer_gguf::tokenizer_from_gguf;
use model::{Llama, Logits};

fn spec() -> TinySpec {
    TinySpec { n_layer: 3, seed: 3, ..TinySpec::default() }
}

fn target(threads: usize) -> Llama {
    Llama::from_file(GgufFile::from_bytes(tiny_llama_gguf(&spec())).unwrap(), threads).unwrap()
}

fn draft_of(model: &Llama, layers: usize) -> Llama {
    Llama::sharing_threads(GgufFile::from_bytes(tiny_llama_gguf(&spec())).unwrap(), model, Some(layers)).unwrap()
}

#[test]
fn greedy_output_is_identical_with_a_draft_model() {
    let model = target(2);
    let tok = tokenizer_from_gguf(model.file()).unwrap();
    let prompt = tok.encode("the quick brown fox jumps over the lazy dog and then", true);
    let plain = GenerateOptions { max_tokens: 40, stop: vec![], sampler: SamplerConfig::greedy(), speculative: None, ignore_eos: false };
    let want = Session::new(&model, 256, 64).unwrap().generate(&tok, &prompt, &plain, &mut |_| true).unwrap();
    for layers in [1, 2, 3] {
        let draft = draft_of(&model, layers);
        for k in [1, 3, 6] {
            let options = GenerateOptions { speculative: Some(Speculation::DraftModel { draft_len: k }), ..plain.clone() };
            let mut session = Session::with_draft_model(&model, &draft, 256, 64).unwrap();
            let got = session.generate(&tok, &prompt, &options, &mut |_| true).unwrap();
            assert_eq!(got.tokens, want.tokens, "{layers} draft layers, k {k}");
            assert_eq!(got.text, want.text);
            assert!(got.drafted > 0 && got.accepted <= got.drafted);
            if layers == 3 {
                // The whole model as its own draft: every greedy draft is right.
                assert_eq!(got.accepted, got.drafted, "a draft equal to the model is always accepted");
            }
        }
    }
}

#[test]
fn a_draft_model_needs_the_same_vocabulary_and_a_session_with_it() {
    let model = target(2);
    let tok = tokenizer_from_gguf(model.file()).unwrap();
    let options = GenerateOptions {
        max_tokens: 4,
        stop: vec![],
        sampler: SamplerConfig::greedy(),
        speculative: Some(Speculation::DraftModel { draft_len: 2 }),
        ignore_eos: false,
    };
    let err = Session::new(&model, 64, 16).unwrap().generate(&tok, &[5, 6], &options, &mut |_| true).unwrap_err();
    assert!(err.to_string().contains("with_draft_model"), "{err}");
    assert!(Llama::sharing_threads(GgufFile::from_bytes(tiny_llama_gguf(&spec())).unwrap(), &model, Some(0)).is_err());
    assert!(Llama::sharing_threads(GgufFile::from_bytes(tiny_llama_gguf(&spec())).unwrap(), &model, Some(4)).is_err());
}

/// Chi-square statistic of `counts` against probabilities `p` (cells with p = 0 must be empty).
fn chi_square(counts: &[u64], p: &[f64]) -> (f64, usize) {
    let n: u64 = counts.iter().sum();
    let mut stat = 0.0;
    let mut cells = 0;
    for (&c, &p) in counts.iter().zip(p) {
        if p == 0.0 {
            assert_eq!(c, 0, "a token of probability 0 was drawn");
            continue;
        }
        let e = n as f64 * p;
        stat += (c as f64 - e).powi(2) / e;
        cells += 1;
    }
    (stat, cells - 1)
}

/// Chi-square critical values at p = 0.001 for 1..=30 degrees of freedom (standard table).
const CRITICAL_0_001: [f64; 30] = [
    10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26, 32.91, 34.53, 36.12, 37.70, 39.25, 40.79, 42.31, 43.82, 45.31,
    46.80, 48.27, 49.73, 51.18, 52.62, 54.05, 55.48, 56.89, 58.30, 59.70,
];

#[test]
fn sampled_speculative_decoding_keeps_the_model_distribution() {
    let model = target(1);
    let draft = draft_of(&model, 1);
    let tok = tokenizer_from_gguf(model.file()).unwrap();
    let v = model.config.n_vocab;
    // A repetitive prompt, so that prompt lookup finds drafts too; top_k keeps the cells few.
    let prompt = tok.encode("ab ab ab ab ab", true);
    let config = |seed| SamplerConfig { temperature: 25.0, top_k: 3, top_p: 1.0, min_p: 0.0, seed, ..SamplerConfig::default() };
    // The exact distribution of the first two generated tokens: p(t1) p(t2 | t1).
    let mut sampler = Sampler::new(config(0)).unwrap();
    let mut scratch = model.new_scratch(64, 64).unwrap();
    let mut p1 = vec![0f32; v];
    let mut cache = model.new_cache(64).unwrap();
    sampler.distribution(model.forward(&prompt, &mut cache, &mut scratch, Logits::Last).unwrap(), &mut p1);
    let mut joint = vec![0f64; v * v];
    for t1 in (0..v).filter(|&t| p1[t] > 0.0) {
        let mut cache = model.new_cache(64).unwrap();
        let mut seq = prompt.clone();
        seq.push(t1 as u32);
        let mut p2 = vec![0f32; v];
        sampler.distribution(model.forward(&seq, &mut cache, &mut scratch, Logits::Last).unwrap(), &mut p2);
        for t2 in 0..v {
            joint[t1 * v + t2] = p1[t1] as f64 * p2[t2] as f64;
        }
    }
    let modes = [Speculation::DraftModel { draft_len: 3 }, Speculation::PromptLookup(PromptLookup { ngram: 2, min_ngram: 1, draft_len: 3 })];
    for mode in modes {
        let mut counts = vec![0u64; v * v];
        let (mut drafted, mut accepted) = (0, 0);
        let mut session = Session::with_draft_model(&model, &draft, 64, 64).unwrap();
        let n = 3000;
        for seed in 0..n {
            let options = GenerateOptions { max_tokens: 2, stop: vec![], sampler: config(seed), speculative: Some(mode), ignore_eos: false };
            session.clear();
            let g = session.generate(&tok, &prompt, &options, &mut |_| true).unwrap();
            assert_eq!(g.tokens.len(), 2, "{:?}", g.stop_reason);
            counts[g.tokens[0] as usize * v + g.tokens[1] as usize] += 1;
            drafted += g.drafted;
            accepted += g.accepted;
        }
        assert!(drafted as u64 >= n / 4 && accepted > 0 && accepted < drafted, "{mode:?}: {accepted} of {drafted} accepted");
        let (stat, dof) = chi_square(&counts, &joint);
        assert!((3..=30).contains(&dof), "{dof} degrees of freedom");
        assert!(stat < CRITICAL_0_001[dof - 1], "{mode:?}: chi-square {stat:.1} with {dof} dof");
    }
}

#[test]
fn greedy_with_penalties_and_a_draft_model_keeps_the_output() {
    // Temperature 0 with a penalty: the target samples (deterministically) through the penalty
    // stage, while the draft (penalties dropped) is plain greedy and so one-hot.
    let model = target(1);
    let draft = draft_of(&model, 1);
    let tok = tokenizer_from_gguf(model.file()).unwrap();
    let prompt = tok.encode("the quick brown fox jumps over the lazy dog and then", true);
    let sampler = SamplerConfig { repeat_penalty: 1.3, ..SamplerConfig::greedy() };
    let plain = GenerateOptions { max_tokens: 24, stop: vec![], sampler, speculative: None, ignore_eos: false };
    let want = Session::new(&model, 256, 64).unwrap().generate(&tok, &prompt, &plain, &mut |_| true).unwrap();
    for speculation in [Speculation::DraftModel { draft_len: 3 }, Speculation::PromptLookup(PromptLookup { ngram: 2, min_ngram: 1, draft_len: 3 })] {
        let options = GenerateOptions { speculative: Some(speculation), ..plain.clone() };
        let got = Session::with_draft_model(&model, &draft, 256, 64).unwrap().generate(&tok, &prompt, &options, &mut |_| true).unwrap();
        assert_eq!(got.tokens, want.tokens, "{speculation:?}");
    }
}

#[test]
fn drafts_longer_than_the_session_batch_are_cut_to_fit() {
    // A session evaluating 2 tokens per call can verify at most one drafted token at a time.
    let model = target(1);
    let draft = draft_of(&model, 2);
    let tok = tokenizer_from_gguf(model.file()).unwrap();
    let prompt = tok.encode("ab ab ab ab ab ab", true);
    let plain = GenerateOptions { max_tokens: 12, stop: vec![], sampler: SamplerConfig::greedy(), speculative: None, ignore_eos: false };
    let want = Session::new(&model, 128, 2).unwrap().generate(&tok, &prompt, &plain, &mut |_| true).unwrap();
    for speculation in [Speculation::DraftModel { draft_len: 4 }, Speculation::PromptLookup(PromptLookup { ngram: 2, min_ngram: 1, draft_len: 4 })] {
        let options = GenerateOptions { speculative: Some(speculation), ..plain.clone() };
        let mut session = Session::with_draft_model(&model, &draft, 128, 2).unwrap();
        let got = session.generate(&tok, &prompt, &options, &mut |_| true).unwrap();
        assert_eq!(got.tokens, want.tokens, "{speculation:?}");
        // The session's tokens match its cache: a follow-up turn equals a fresh session's.
        let mut next = prompt.clone();
        next.extend_from_slice(&got.tokens);
        let again = session.generate(&tok, &next, &plain, &mut |_| true).unwrap();
        let fresh = Session::new(&model, 128, 2).unwrap().generate(&tok, &next, &plain, &mut |_| true).unwrap();
        assert_eq!(again.tokens, fresh.tokens);
    }
}

#[test]
fn the_adaptive_draft_length_and_back_off_keep_greedy_output() {
    // The tiny model's greedy decoding repeats its last token, and a draft of its own first layers
    // agrees with it: every draft is accepted and the policy keeps drafting the most. A frequency
    // penalty at temperature 0 makes it move on to other tokens (deterministically), where the
    // drafts (made without penalties) are partly (5) or all (20) wrong: the policy shortens the
    // drafts and backs off. None of it may change a token.
    let model = target(1);
    let tok = tokenizer_from_gguf(model.file()).unwrap();
    let prompt = tok.encode("one two three four one two three four one two three four one two", true);
    for frequency_penalty in [0.0, 5.0, 20.0] {
        let sampler = SamplerConfig { frequency_penalty, ..SamplerConfig::greedy() };
        let plain = GenerateOptions { max_tokens: 80, stop: vec![], sampler, speculative: None, ignore_eos: true };
        let want = Session::new(&model, 256, 64).unwrap().generate(&tok, &prompt, &plain, &mut |_| true).unwrap();
        for layers in [1, 3] {
            let draft = draft_of(&model, layers);
            for speculation in
                [Speculation::DraftModel { draft_len: 4 }, Speculation::PromptLookup(PromptLookup { ngram: 3, min_ngram: 1, draft_len: 4 })]
            {
                let options = GenerateOptions { speculative: Some(speculation), ..plain.clone() };
                let got = Session::with_draft_model(&model, &draft, 256, 64).unwrap().generate(&tok, &prompt, &options, &mut |_| true).unwrap();
                let what = format!(
                    "penalty {frequency_penalty}, {layers} draft layers, {speculation:?}: {} drafted, {} accepted in {} calls, {} steps backing off",
                    got.drafted, got.accepted, got.verify_calls, got.backoff_steps
                );
                assert_eq!(got.tokens, want.tokens, "{what}");
                assert!(got.accepted <= got.drafted && got.drafted <= 4 * got.verify_calls, "{what}");
                if frequency_penalty == 0.0 {
                    assert!(got.drafted > 0 && got.accepted == got.drafted && got.backoff_steps == 0, "{what}");
                }
                if matches!(speculation, Speculation::DraftModel { .. }) && frequency_penalty == 0.0 {
                    // The longest drafts all along: 16 calls of 4 and the bonus tokens make 80.
                    assert_eq!((got.drafted, got.verify_calls), (64, 16), "{what}");
                }
                if frequency_penalty == 20.0 {
                    // Every draft rejected: after two misses (4 and 3 drafts), back-offs of 4, 8,
                    // 16, 32 steps with probes of 2, 1, 1, 1 drafts take most of the 80 steps.
                    assert!(got.accepted == 0 && got.backoff_steps >= 50 && got.drafted <= 12, "{what}");
                }
            }
        }
    }
}
