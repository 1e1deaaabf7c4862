//! Beam search over a real (tiny) model: width 1 is greedy decoding, every returned score is
//! the model's own log-probability of the hypothesis (so forked, shared KV blocks hold the right
//! keys and values), and stop strings end hypotheses.

use generate::beam::{BeamConfig, EarlyStopping, FinishReason, LengthPenalty};
use generate::sampler::{log_softmax_at, SamplerConfig};
use generate::{beam_search, GenerateOptions, Session};
use gguf::GgufFile;
use model::testing::{tiny_llama_gguf, TinySpec};
use model::tokenizer_gguf::tokenizer_from_gguf;
use model::{Llama, Logits};
use tokenizer::Tokenizer;

fn setup() -> (Llama, Tokenizer) {
    let spec = TinySpec { seed: 11, ..TinySpec::default() };
    let model = Llama::from_file(GgufFile::from_bytes(tiny_llama_gguf(&spec)).unwrap(), 2).unwrap();
    let tok = tokenizer_from_gguf(model.file()).unwrap();
    (model, tok)
}

#[test]
fn one_beam_is_greedy_decoding() {
    let (model, tok) = setup();
    for text in ["the cat", "hello world, this is", "x"] {
        let prompt = tok.encode(text, true);
        let options = GenerateOptions { max_tokens: 20, stop: vec![], sampler: SamplerConfig::greedy(), speculative: None, ignore_eos: false };
        let greedy = Session::new(&model, 128, 32).unwrap().generate(&tok, &prompt, &options, &mut |_| true).unwrap();
        let config = BeamConfig::new(1, 20, tok.end_of_generation_ids().to_vec());
        let beams = beam_search(&model, &tok, &prompt, &config, &[], 128, 32).unwrap();
        assert_eq!(beams.len(), 1);
        assert_eq!(beams[0].tokens, greedy.tokens, "{text:?}");
        assert_eq!(beams[0].text, greedy.text);
    }
}

/// The model's summed log-probability of `tokens` after `prompt`, from one fresh forward call.
fn sum_logprobs(model: &Llama, prompt: &[u32], tokens: &[u32]) -> f64 {
    let mut all = prompt.to_vec();
    all.extend_from_slice(tokens);
    let mut cache = model.new_cache(256).unwrap();
    let mut scratch = model.new_scratch(256, 256).unwrap();
    let logits = model.forward(&all[..all.len() - 1], &mut cache, &mut scratch, Logits::All).unwrap();
    let v = model.config.n_vocab;
    tokens.iter().enumerate().map(|(i, &t)| log_softmax_at(&logits[(prompt.len() - 1 + i) * v..][..v], t)).sum()
}

#[test]
fn every_hypothesis_scores_its_own_log_probability_under_the_model() {
    let (model, tok) = setup();
    // A prompt longer than one KV block, so forks share a full block and a partial one.
    let prompt = tok.encode("a prompt of some length that fills more than one block of the cache, surely", true);
    assert!(prompt.len() > model::KV_BLOCK);
    for (num_beams, lp, early) in [
        (4, LengthPenalty::Hf(1.0), EarlyStopping::Never),
        (6, LengthPenalty::Hf(0.0), EarlyStopping::True),
        (3, LengthPenalty::Gnmt(0.6), EarlyStopping::False),
    ] {
        let config = BeamConfig {
            num_beams,
            length_penalty: lp,
            early_stopping: early,
            num_return_sequences: num_beams,
            max_new_tokens: 12,
            eos: tok.end_of_generation_ids().to_vec(),
        };
        let beams = beam_search(&model, &tok, &prompt, &config, &[], 256, 32).unwrap();
        assert!(!beams.is_empty() && beams.len() <= num_beams);
        for w in beams.windows(2) {
            assert!(w[0].score >= w[1].score, "best first");
        }
        for b in &beams {
            let want = sum_logprobs(&model, &prompt, &b.tokens);
            assert!((b.sum_logprobs as f64 - want).abs() < 1e-3 * want.abs().max(1.0), "{num_beams} beams: {} vs {want}", b.sum_logprobs);
            let len = b.tokens.len() as f64;
            let divisor = match lp {
                LengthPenalty::Hf(p) => len.powf(p),
                LengthPenalty::Gnmt(a) => (5.0 + len).powf(a) / 6f64.powf(a),
            };
            assert!((b.score as f64 - b.sum_logprobs as f64 / divisor).abs() < 1e-4 * b.score.abs().max(1.0) as f64);
        }
        // Distinct hypotheses.
        for i in 0..beams.len() {
            for j in i + 1..beams.len() {
                assert_ne!(beams[i].tokens, beams[j].tokens);
            }
        }
    }
}

#[test]
fn a_stop_string_ends_a_hypothesis_and_is_cut_from_its_text() {
    let (model, tok) = setup();
    let prompt = tok.encode("the cat", true);
    let config = BeamConfig { num_return_sequences: 3, ..BeamConfig::new(3, 16, tok.end_of_generation_ids().to_vec()) };
    let free = beam_search(&model, &tok, &prompt, &config, &[], 128, 32).unwrap();
    // Stop on a piece of the best free hypothesis's text.
    let text = &free[0].text;
    let stop: String = text.chars().skip(text.chars().count() / 2).take(2).collect();
    assert!(!stop.is_empty(), "{text:?}");
    let beams = beam_search(&model, &tok, &prompt, &config, std::slice::from_ref(&stop), 128, 32).unwrap();
    assert!(beams.iter().any(|b| b.finish == FinishReason::StopString), "{beams:?}");
    for b in beams.iter().filter(|b| b.finish == FinishReason::StopString) {
        assert!(!b.text.contains(&stop), "{:?} still holds {stop:?}", b.text);
        assert!(tok.decode(&b.tokens, false).contains(&stop));
    }
}

#[test]
fn bad_settings_are_errors() {
    let (model, tok) = setup();
    let eos = tok.end_of_generation_ids().to_vec();
    assert!(beam_search(&model, &tok, &[5, 6], &BeamConfig::new(0, 4, eos.clone()), &[], 64, 16).is_err());
    let too_many = BeamConfig { num_return_sequences: 3, ..BeamConfig::new(2, 4, eos.clone()) };
    assert!(beam_search(&model, &tok, &[5, 6], &too_many, &[], 64, 16).is_err());
    assert!(beam_search(&model, &tok, &[], &BeamConfig::new(2, 4, eos.clone()), &[], 64, 16).is_err());
    let err = beam_search(&model, &tok, &[5; 64], &BeamConfig::new(2, 4, eos), &[], 64, 16).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}
