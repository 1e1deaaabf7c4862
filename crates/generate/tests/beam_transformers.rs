//! Beam search on a small random Llama against Hugging Face transformers' `generate(num_beams=...)`.
//!
//! The model (F32 weights, 96 tokens) and the expected outputs are fixtures made by
//! `tools/make_beam_fixtures.py` (transformers 5.24.0, torch 2.15.0; see tests/fixtures/README.md).
//! Token sequences must be identical; scores agree to the precision of our forward pass, which
//! quantizes activations to 8 bits per block before each product (HF computes in f32): the
//! fixture's smallest decision gap is 0.015 in log-prob units, above that difference.

use generate::beam::{BeamConfig, EarlyStopping, LengthPenalty};
use generate::sampler::SamplerConfig;
use generate::{beam_search, GenerateOptions, Session};
use gguf::GgufFile;
use model::tokenizer_gguf::tokenizer_from_gguf;
use model::Llama;
use serde_json::Value;

fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/beam")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("array of ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

#[test]
fn beam_search_matches_transformers_on_the_fixture_model() {
    let dir = fixture_dir();
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("beam_cases.json")).unwrap()).unwrap();
    let model = Llama::from_file(GgufFile::open(dir.join("tiny_llama_f32.gguf")).unwrap(), 2).unwrap();
    let tok = tokenizer_from_gguf(model.file()).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 12);
    let mut compared = 0;
    for (i, case) in cases.iter().enumerate() {
        let prompt = ids(&case["prompt"]);
        let num_beams = case["num_beams"].as_u64().unwrap() as usize;
        let max_new_tokens = case["max_new_tokens"].as_u64().unwrap() as usize;
        let eos = vec![case["eos_token_id"].as_u64().unwrap() as u32];
        let want: Vec<Vec<u32>> = case["sequences"].as_array().unwrap().iter().map(ids).collect();
        let want_scores: Vec<f64> = case["scores"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
        if case["hf_method"] == "greedy_search" {
            // transformers runs num_beams = 1 as greedy search, which stops at the first EOS.
            let options =
                GenerateOptions { max_tokens: max_new_tokens, stop: vec![], sampler: SamplerConfig::greedy(), speculative: None, ignore_eos: false };
            let got = Session::new(&model, 256, 64).unwrap().generate(&tok, &prompt, &options, &mut |_| true).unwrap();
            assert_eq!(got.tokens, want[0], "case {i} (greedy)");
            compared += 1;
            continue;
        }
        let early_stopping = match &case["early_stopping"] {
            Value::Bool(true) => EarlyStopping::True,
            Value::Bool(false) => EarlyStopping::False,
            _ => EarlyStopping::Never,
        };
        let config = BeamConfig {
            num_beams,
            length_penalty: LengthPenalty::Hf(case["length_penalty"].as_f64().unwrap()),
            early_stopping,
            num_return_sequences: case["num_return_sequences"].as_u64().unwrap() as usize,
            max_new_tokens,
            eos,
        };
        let got = beam_search(&model, &tok, &prompt, &config, &[], 256, 64).unwrap();
        let got_tokens: Vec<Vec<u32>> = got.iter().map(|b| b.tokens.clone()).collect();
        assert_eq!(got_tokens, want, "case {i}: {num_beams} beams, lp {}, early {:?}", case["length_penalty"], case["early_stopping"]);
        for (b, w) in got.iter().zip(&want_scores) {
            assert!((b.score as f64 - w).abs() < 0.05, "case {i}: score {} vs transformers {w}", b.score);
        }
        compared += 1;
    }
    assert_eq!(compared, cases.len());
}

#[test]
fn fixture_model_forward_agrees_with_transformers_logits() {
    let dir = fixture_dir();
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("beam_cases.json")).unwrap()).unwrap();
    let model = Llama::from_file(GgufFile::open(dir.join("tiny_llama_f32.gguf")).unwrap(), 1).unwrap();
    let v = model.config.n_vocab;
    for check in cases["logits_checks"].as_array().unwrap() {
        let prompt = ids(&check["prompt"]);
        let want: Vec<f64> =
            check["logits"].as_array().unwrap().iter().flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap())).collect();
        assert_eq!(want.len(), prompt.len() * v);
        let mut cache = model.new_cache(64).unwrap();
        let mut scratch = model.new_scratch(64, 64).unwrap();
        let got = model.forward(&prompt, &mut cache, &mut scratch, model::Logits::All).unwrap();
        let worst = got.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        // 8-bit activations against f32: a few hundredths on logits of several units.
        assert!(worst < 0.1, "largest logit difference {worst}");
    }
}
