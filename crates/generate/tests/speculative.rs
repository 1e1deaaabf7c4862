//! Prompt-lookup speculative decoding leaves greedy output unchanged, bit for bit.

use generate::sampler::SamplerConfig;
use generate::{GenerateOptions, PromptLookup, Session, Speculation};
use gguf::GgufFile;
use model::testing::{tiny_llama_gguf, TinySpec};
use model::tokenizer_gguf::tokenizer_from_gguf;
use model::Llama;

#[test]
fn greedy_output_is_identical_with_and_without_prompt_lookup() {
    let model = Llama::from_file(GgufFile::from_bytes(tiny_llama_gguf(&TinySpec::default())).unwrap(), 2).unwrap();
    let tok = tokenizer_from_gguf(model.file()).unwrap();
    // A prompt that repeats itself, so that drafts exist and some are accepted.
    let prompt = tok.encode("the cat sat on the mat. the cat sat on the mat. the cat", true);
    let plain = GenerateOptions { max_tokens: 40, stop: vec![], sampler: SamplerConfig::greedy(), speculative: None, ignore_eos: false };
    let mut session = Session::new(&model, 256, 64).unwrap();
    let want = session.generate(&tok, &prompt, &plain, &mut |_| true).unwrap();
    for draft_len in [1, 3, 8] {
        for (ngram, min_ngram) in [(1, 1), (2, 1), (3, 1), (3, 2), (4, 3)] {
            let options =
                GenerateOptions { speculative: Some(Speculation::PromptLookup(PromptLookup { ngram, min_ngram, draft_len })), ..plain.clone() };
            let mut session = Session::new(&model, 256, 64).unwrap();
            let got = session.generate(&tok, &prompt, &options, &mut |_| true).unwrap();
            assert_eq!(got.tokens, want.tokens, "draft_len {draft_len}, ngram {ngram}, min_ngram {min_ngram}");
            assert_eq!(got.text, want.text);
            assert!(got.drafted > 0, "the repeated prompt must give drafts");
            assert!(got.accepted <= got.drafted);
            // The session's cache must hold exactly the evaluated tokens: a follow-up turn
            // reusing it gives the same continuation as a fresh session.
            let mut next_prompt = prompt.clone();
            next_prompt.extend_from_slice(&got.tokens);
            let again = session.generate(&tok, &next_prompt, &plain, &mut |_| true).unwrap();
            let mut fresh = Session::new(&model, 256, 64).unwrap();
            let want_again = fresh.generate(&tok, &next_prompt, &plain, &mut |_| true).unwrap();
            assert_eq!(again.tokens, want_again.tokens);
        }
    }
}
