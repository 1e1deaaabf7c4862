//! Batched generation and `n > 1` completions give each sequence exactly what it gets alone.

use generate::sampler::SamplerConfig;
use generate::{generate_batch, generate_n, BatchSizes, GenerateOptions, Generation, Session, StopReason};
use gguf::GgufFile;
use model::testing::{tiny_llama_gguf, TinySpec};
use model::tokenizer_gguf::tokenizer_from_gguf;
use model::Llama;
use tokenizer::Tokenizer;

const N_CTX: usize = 96;
const CHUNK: usize = 16;

fn setup(threads: usize) -> (Llama, Tokenizer) {
    let model = Llama::from_file(GgufFile::from_bytes(tiny_llama_gguf(&TinySpec::default())).unwrap(), threads).unwrap();
    let tok = tokenizer_from_gguf(model.file()).unwrap();
    (model, tok)
}

fn alone(model: &Llama, tok: &Tokenizer, prompt: &[u32], options: &GenerateOptions) -> Generation {
    let mut session = Session::new(model, N_CTX, CHUNK).unwrap();
    session.generate(tok, prompt, options, &mut |_| true).unwrap()
}

fn sampled(seed: u64) -> SamplerConfig {
    SamplerConfig { temperature: 1.2, top_k: 0, top_p: 0.95, min_p: 0.0, seed, ..SamplerConfig::default() }
}

fn assert_same(got: &Generation, want: &Generation, what: &str) {
    assert_eq!(got.tokens, want.tokens, "{what}");
    assert_eq!(got.text, want.text, "{what}");
    assert_eq!(got.stop_reason, want.stop_reason, "{what}");
    assert_eq!(got.logprobs, want.logprobs, "{what}");
}

#[test]
fn every_sequence_of_a_batch_equals_its_generation_alone() {
    for threads in [1, 2] {
        let (model, tok) = setup(threads);
        let texts = ["the cat", "a much longer prompt that spans more than one chunk of sixteen tokens, surely", "x", "hello there, how", "12 34 56"];
        let mut requests = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let sampler = match i % 3 {
                0 => SamplerConfig::greedy(),
                1 => sampled(40 + i as u64),
                _ => SamplerConfig { repeat_penalty: 1.3, logprobs: 3, ..sampled(7) },
            };
            // Different limits and a stop string, so sequences leave the batch at different steps.
            let stop = if i == 3 { vec!["e".to_string()] } else { vec![] };
            requests.push((tok.encode(text, true), GenerateOptions { max_tokens: 5 + 7 * i, stop, sampler, speculative: None, ignore_eos: false }));
        }
        let mut streamed = vec![String::new(); texts.len()];
        let got = generate_batch(&model, &tok, &requests, BatchSizes { n_ctx: N_CTX, prefill_chunk: CHUNK }, &mut |i, t| {
            streamed[i].push_str(t);
            true
        })
        .unwrap();
        assert_eq!(got.len(), texts.len());
        let mut lengths = Vec::new();
        for (i, ((prompt, options), g)) in requests.iter().zip(&got).enumerate() {
            let want = alone(&model, &tok, prompt, options);
            assert_same(g, &want, &format!("threads {threads}, sequence {i}"));
            assert_eq!(streamed[i], g.text, "the stream carries the text");
            lengths.push(g.tokens.len());
        }
        assert!(got[2].logprobs.len() == got[2].tokens.len() && got[2].logprobs[0].top.len() == 3);
        // The batch really mixed lengths: some sequences ended early.
        assert!(lengths.iter().min() < lengths.iter().max(), "{lengths:?}");
    }
}

#[test]
fn a_finished_sequence_stops_costing_compute() {
    let (model, tok) = setup(2);
    let short = GenerateOptions { max_tokens: 2, stop: vec![], sampler: SamplerConfig::greedy(), speculative: None, ignore_eos: false };
    let long = GenerateOptions { max_tokens: 20, ..short.clone() };
    let (p1, p2) = (tok.encode("ab", true), tok.encode("cd", true));
    let before = model.tokens_evaluated();
    let got =
        generate_batch(&model, &tok, &[(p1.clone(), short), (p2.clone(), long)], BatchSizes { n_ctx: N_CTX, prefill_chunk: CHUNK }, &mut |_, _| true)
            .unwrap();
    let evaluated = model.tokens_evaluated() - before;
    // Prompts once, then one row per decode step of each sequence while it runs (the last token
    // of a sequence is never fed back).
    let want = p1.len() + p2.len() + (got[0].tokens.len() - 1) + (got[1].tokens.len() - 1);
    assert_eq!(got[1].tokens.len(), 20);
    assert_eq!(evaluated as usize, want);
}

#[test]
fn n_completions_share_the_prompt_and_equal_single_runs_with_seed_plus_i() {
    let (model, tok) = setup(2);
    let prompt = tok.encode("once upon a time, in a land far away, there lived", true);
    // A hot sampler: the tiny model's own distribution is very peaked.
    let hot = |seed| SamplerConfig { temperature: 30.0, top_p: 1.0, ..sampled(seed) };
    let options = GenerateOptions { max_tokens: 12, stop: vec![], sampler: hot(100), speculative: None, ignore_eos: false };
    let before = model.tokens_evaluated();
    let got = generate_n(&model, &tok, &prompt, &options, 4, BatchSizes { n_ctx: N_CTX, prefill_chunk: CHUNK }, &mut |_, _| true).unwrap();
    let evaluated = (model.tokens_evaluated() - before) as usize;
    let decoded: usize = got.iter().map(|g| g.tokens.len() - 1).sum();
    assert_eq!(evaluated, prompt.len() + decoded, "the prompt is evaluated once for all completions");
    for (i, g) in got.iter().enumerate() {
        let single = GenerateOptions { sampler: hot(100 + i as u64), ..options.clone() };
        assert_same(g, &alone(&model, &tok, &prompt, &single), &format!("completion {i}"));
    }
    assert!(
        got.iter().any(|g| g.tokens != got[0].tokens),
        "different seeds give different completions: {:?}",
        got.iter().map(|g| &g.tokens).collect::<Vec<_>>()
    );
    assert_eq!(got[0].prompt_tokens, prompt.len());
    assert_eq!(got[1].prompt_tokens, 0);
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let (model, tok) = setup(1);
    let sizes = BatchSizes { n_ctx: 16, prefill_chunk: CHUNK };
    let ok = GenerateOptions { max_tokens: 3, stop: vec![], sampler: SamplerConfig::greedy(), speculative: None, ignore_eos: false };
    assert!(generate_batch(&model, &tok, &[], sizes, &mut |_, _| true).is_err());
    assert!(generate_batch(&model, &tok, &[(vec![], ok.clone())], sizes, &mut |_, _| true).is_err());
    let long = tok.encode(&"word ".repeat(40), true);
    let err = generate_batch(&model, &tok, &[(long, ok.clone())], sizes, &mut |_, _| true).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    assert!(generate_n(&model, &tok, &[5], &ok, 0, sizes, &mut |_, _| true).is_err());
    // A prompt that fills the context ends with ContextFull, as alone.
    let fill = tok.encode(&"ab ".repeat(7), true);
    let got = generate_batch(&model, &tok, &[(fill.clone(), GenerateOptions { max_tokens: 50, ..ok.clone() })], sizes, &mut |_, _| true).unwrap();
    assert_eq!(got[0].stop_reason, StopReason::ContextFull);
}
