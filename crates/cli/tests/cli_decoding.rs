//! End-to-end tests of `ferrolm generate`'s decoding modes (batch files, several completions,
//! beam search, log-probabilities, speculative decoding) and `tokenize` with tokenizer files,
//! on the tiny model of `common`.

mod common;

use common::*;

/// JSON lines of a `--json` run.
fn json_lines(run: &Run) -> Vec<serde_json::Value> {
    run.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

#[test]
fn batch_file_gives_each_prompt_what_it_gets_alone() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    let lines = [
        r#"{"prompt": "the weather", "id": "w"}"#,
        "",
        r#"{"prompt": "a longer prompt about cats and dogs", "max_tokens": 3, "seed": 9}"#,
        r#"{"prompt": "x", "temperature": 0}"#,
    ];
    let file = fx.write("prompts.jsonl", lines.join("\n").as_bytes());
    let run = fx.generate(&model, &["--batch-file", &file, "--json", "-n", "6", "--temperature", "0.9", "--seed", "4"]);
    run.ok();
    let got = json_lines(&run);
    assert_eq!(got.len(), 3, "one result per prompt, the blank line skipped");
    assert_eq!(got[0]["id"], "w");
    assert_eq!(got[1]["tokens"].as_array().unwrap().len(), 3);
    assert!(run.stderr.contains("[batch: 3 prompts"), "{}", run.stderr);
    // Each line alone, with the same settings, gives the same tokens.
    let singles = [
        vec!["-p", "the weather", "-n", "6", "--temperature", "0.9", "--seed", "4"],
        vec!["-p", "a longer prompt about cats and dogs", "-n", "3", "--temperature", "0.9", "--seed", "9"],
        vec!["-p", "x", "-n", "6", "--temperature", "0", "--seed", "4"],
    ];
    for (i, args) in singles.iter().enumerate() {
        let mut args = args.clone();
        args.push("--json");
        let alone = fx.generate(&model, &args);
        alone.ok();
        assert_eq!(json_lines(&alone)[0]["tokens"], got[i]["tokens"], "prompt {i}");
    }
    // One at a time gives the same results too.
    let serial = fx.generate(&model, &["--batch-file", &file, "--json", "-n", "6", "--temperature", "0.9", "--seed", "4", "--max-batch", "1"]);
    serial.ok();
    assert_eq!(json_lines(&serial), got);
}

#[test]
fn bad_batch_files_name_the_line() {
    let fx = Fx::new();
    let cases: [(&str, &[&str]); 5] = [
        ("{\"prompt\": \"ok\"}\nnot json\n", &["prompts.jsonl:2", "json"]),
        ("{\"text\": \"hi\"}\n", &["prompts.jsonl:1", "prompt"]),
        ("{\"prompt\": \"hi\", \"temperature\": \"hot\"}\n", &["prompts.jsonl:1", "temperature"]),
        ("{\"prompt\": \"hi\", \"colour\": 1}\n", &["prompts.jsonl:1", "unknown field"]),
        ("\n\n", &["no prompts"]),
    ];
    for (text, needles) in cases {
        let file = fx.write("prompts.jsonl", text.as_bytes());
        fx.generate(fx.tiny(), &["--batch-file", &file]).fails_with(needles);
    }
    fx.generate(fx.tiny(), &["--batch-file", &fx.path("missing.jsonl")]).fails_with(&["cannot open"]);
    let usage = fx.run(&["generate", "--model", fx.tiny(), "-p", "hi", "--batch-file", "x.jsonl"]);
    assert_eq!(usage.code, Some(2), "--prompt and --batch-file together are a usage error");
}

#[test]
fn num_return_sequences_gives_n_completions() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    let run = fx.generate(&model, &["-p", "the weather", "-n", "5", "--temperature", "1.0", "--num-return-sequences", "3", "--json"]);
    run.ok();
    let got = json_lines(&run);
    assert_eq!(got.len(), 3);
    assert!(got.iter().any(|g| g["tokens"] != got[0]["tokens"]), "completions differ: {got:?}");
    // Completion i is the single run with seed + i.
    let second = fx.generate(&model, &["-p", "the weather", "-n", "5", "--temperature", "1.0", "--seed", "1", "--json"]);
    assert_eq!(json_lines(second.ok())[0]["tokens"], got[1]["tokens"]);
    fx.generate(&model, &["-p", "hi", "--num-return-sequences", "0"]).fails_with(&["--num-return-sequences", "between 1"]);
}

#[test]
fn beam_search_flags_work_and_one_beam_is_greedy() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    let greedy = fx.generate(&model, &["-p", "the weather", "-n", "8", "--temperature", "0", "--json"]);
    let beam = fx.generate(&model, &["-p", "the weather", "-n", "8", "--num-beams", "1", "--json"]);
    assert_eq!(json_lines(greedy.ok())[0]["tokens"], json_lines(beam.ok())[0]["tokens"]);
    for extra in [&["--length-penalty", "-0.5"][..], &["--gnmt-alpha", "0.6"], &["--early-stopping", "never"], &["--early-stopping", "true"]] {
        let mut args = vec!["-p", "the weather", "-n", "6", "--num-beams", "3", "--num-return-sequences", "2", "--json"];
        args.extend_from_slice(extra);
        let run = fx.generate(&model, &args);
        let got = json_lines(run.ok());
        assert_eq!(got.len(), 2, "{extra:?}");
        assert!(got[0]["score"].as_f64().unwrap() >= got[1]["score"].as_f64().unwrap(), "best first");
    }
    fx.generate(&model, &["-p", "hi", "--num-beams", "2", "--num-return-sequences", "3"]).fails_with(&["cannot exceed"]);
    fx.generate(&model, &["-p", "hi", "--num-beams", "0"]).fails_with(&["--num-beams"]);
    let usage = fx.run(&["generate", "--model", fx.tiny(), "-p", "hi", "--num-beams", "2", "--early-stopping", "maybe"]);
    assert_eq!(usage.code, Some(2));
}

#[test]
fn logprobs_are_reported_per_token() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    let run = fx.generate(&model, &["-p", "the weather", "-n", "4", "--temperature", "0", "--logprobs", "2", "--json"]);
    let got = json_lines(run.ok());
    let lps = got[0]["logprobs"].as_array().expect("logprobs array");
    assert_eq!(lps.len(), 4);
    for (lp, tok) in lps.iter().zip(got[0]["tokens"].as_array().unwrap()) {
        assert_eq!(&lp["token"], tok);
        let top = lp["top"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(top[0]["token"], lp["token"]);
        assert!(lp["logprob"].as_f64().unwrap() <= 0.0);
    }
    fx.generate(&model, &["-p", "hi", "--logprobs", "21"]).fails_with(&["--logprobs", "20"]);
}

#[test]
fn speculative_draft_keeps_greedy_output_and_needs_a_draft() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    let plain = fx.generate(&model, &["-p", "the weather the weather", "-n", "10", "--temperature", "0", "--json"]);
    for extra in
        [&["--speculative", "draft", "--draft-layers", "1"][..], &["--speculative", "draft", "--draft-model", &model], &["--speculative", "ngram"]]
    {
        let mut args = vec!["-p", "the weather the weather", "-n", "10", "--temperature", "0", "--json", "--verbose"];
        args.extend_from_slice(extra);
        let run = fx.generate(&model, &args);
        run.ok();
        assert_eq!(json_lines(&run)[0]["tokens"], json_lines(&plain)[0]["tokens"], "{extra:?}");
        assert!(run.stderr.contains("[speculative:") && run.stderr.contains("steps not drafted"), "{}", run.stderr);
    }
    // Chat drafts too.
    let chat = fx.run_with_stdin(
        &["chat", "--model", &model, "-t", "1", "-n", "4", "--temperature", "0", "--speculative", "draft", "--draft-layers", "1"],
        Some("hello\n"),
    );
    chat.ok();
    // Sampling with a draft runs too.
    fx.generate(&model, &["-p", "hi", "-n", "5", "--temperature", "0.8", "--speculative", "draft", "--draft-layers", "1"]).ok();
    fx.generate(&model, &["-p", "hi", "--speculative", "draft"]).fails_with(&["--draft-model", "--draft-layers"]);
    fx.generate(&model, &["-p", "hi", "--speculative", "draft", "--draft-layers", "9"]).fails_with(&["layers"]);
    fx.generate(&model, &["-p", "hi", "--draft-layers", "1"])
        .usage_error("error: --draft-layers applies only to --speculative draft: add --speculative draft or drop --draft-layers");
    // Prompt lookup's shortest match: at least 1, at most the longest (whose default is 6).
    fx.generate(&model, &["-p", "hi", "--speculative", "ngram", "--ngram-min", "0"]).fails_with(&["--ngram-min", "got 0"]);
    fx.generate(&model, &["-p", "hi", "--speculative", "ngram", "--ngram", "3"]).fails_with(&["--ngram-min", "(3)", "got 4"]);
    fx.generate(&model, &["-p", "hi", "-n", "2", "--speculative", "ngram", "--ngram", "3", "--ngram-min", "2"]).ok();
}

#[test]
fn ignore_eos_keeps_generating_past_end_of_generation() {
    let fx = Fx::new();
    // A bias makes <|im_end|> (id 2, end of generation) the only choice.
    let stops = fx.generate(fx.tiny(), &["-p", "hi", "-n", "4", "--temperature", "0", "--logit-bias", "2=100", "--json"]);
    let got = json_lines(stops.ok());
    assert_eq!(got[0]["tokens"], serde_json::json!([2]));
    assert_eq!(got[0]["stop_reason"], "eos");
    let goes_on = fx.generate(fx.tiny(), &["-p", "hi", "-n", "4", "--temperature", "0", "--logit-bias", "2=100", "--json", "--ignore-eos"]);
    let got = json_lines(goes_on.ok());
    assert_eq!(got[0]["tokens"], serde_json::json!([2, 2, 2, 2]));
    assert_eq!(got[0]["stop_reason"], "length");
}

#[test]
fn tokenize_reads_a_tokenizer_json_and_prints_offsets() {
    let fx = Fx::new();
    let json = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/hf/minilm/tokenizer.json");
    let run = fx.run(&["tokenize", "--tokenizer", json, "--text", "Hello, Wörld!", "--offsets"]);
    let v: serde_json::Value = serde_json::from_str(run.ok().stdout.trim()).expect("one JSON object");
    // [CLS] hello , world ! [SEP], with byte spans into the text ([CLS]/[SEP] at (0, 0)).
    assert_eq!(v["ids"], serde_json::json!([101, 7592, 1010, 2088, 999, 102]));
    assert_eq!(v["offsets"], serde_json::json!([[0, 0], [0, 5], [5, 6], [7, 13], [13, 14], [0, 0]]));
    let bare = fx.run(&["tokenize", "--tokenizer", json, "--text", "Hello", "--no-add-special"]);
    assert_eq!(bare.ok().stdout.trim(), "[7592]");
    // A GGUF given as --tokenizer, with offsets covering the text.
    let run = fx.run(&["tokenize", "--tokenizer", fx.tiny(), "--text", "the cat", "--offsets"]);
    let v: serde_json::Value = serde_json::from_str(run.ok().stdout.trim()).expect("one JSON object");
    let offsets = v["offsets"].as_array().unwrap();
    assert_eq!(offsets.first().unwrap()[0], 0);
    assert_eq!(offsets.last().unwrap()[1], 7);
    let bad = fx.write("bad.json", b"{\"model\": {\"type\": \"Unigram\"}}");
    fx.run(&["tokenize", "--tokenizer", &bad, "--text", "hi"]).fails_with(&["bad.json", "tokenizer.json"]);
}

// ---------------------------------------------------------------------------------------------
// Flags that would be ignored are refused, naming both flags (issue 16)
// ---------------------------------------------------------------------------------------------

#[test]
fn draft_model_with_prompt_lookup_is_refused_before_the_path_is_opened() {
    let fx = Fx::new();
    let missing = fx.path("no-such-draft.gguf");
    fx.generate(fx.tiny(), &["-p", "hi", "--speculative", "ngram", "--draft-model", &missing]).usage_error(
        "error: --draft-model applies only to --speculative draft, not to --speculative ngram: drop --draft-model or use --speculative draft",
    );
    fx.generate(fx.tiny(), &["-p", "hi", "--speculative", "draft", "--draft-layers", "1", "--ngram", "3"])
        .usage_error("error: --ngram applies only to --speculative ngram, not to --speculative draft: drop --ngram or use --speculative ngram");
    fx.generate(fx.tiny(), &["-p", "hi", "--draft-k", "2"])
        .usage_error("error: --draft-k applies only to speculative decoding: add --speculative ngram|draft or drop --draft-k");
    // The same checks guard chat.
    fx.run(&["chat", "--model", fx.tiny(), "--ngram-min", "2"])
        .usage_error("error: --ngram-min applies only to --speculative ngram: add --speculative ngram or drop --ngram-min");
}

#[test]
fn logprobs_with_speculative_decoding_is_refused() {
    let fx = Fx::new();
    for mode in [&["--speculative", "ngram"][..], &["--speculative", "draft", "--draft-layers", "1"]] {
        let mut args = vec!["-p", "hi", "--logprobs", "2"];
        args.extend_from_slice(mode);
        fx.generate(fx.tiny(), &args).usage_error("error: the argument '--logprobs <N>' cannot be used with '--speculative <SPECULATIVE>'");
    }
}

#[test]
fn max_batch_without_batch_file_is_refused() {
    let fx = Fx::new();
    fx.generate(fx.tiny(), &["-p", "hi", "--max-batch", "4"])
        .usage_error("error: --max-batch applies only to --batch-file: add --batch-file FILE or drop --max-batch");
    // The default (8) is not the user's: a plain run goes on.
    fx.generate(fx.tiny(), &["-p", "hi", "-n", "1"]).ok();
}

#[test]
fn beam_flags_without_num_beams_are_refused() {
    let fx = Fx::new();
    for (flag, value) in [("--length-penalty", "1.0"), ("--gnmt-alpha", "0.6"), ("--early-stopping", "never")] {
        fx.generate(fx.tiny(), &["-p", "hi", flag, value])
            .usage_error(&format!("error: {flag} applies only to beam search: add --num-beams B or drop {flag}"));
    }
    // GNMT replaces the Hugging Face length penalty: both together would drop one.
    fx.generate(fx.tiny(), &["-p", "hi", "--num-beams", "2", "--gnmt-alpha", "0.6", "--length-penalty", "2"])
        .usage_error("error: the argument '--gnmt-alpha <A>' cannot be used with '--length-penalty <LENGTH_PENALTY>'");
}

#[test]
fn sampling_flags_with_num_beams_are_refused() {
    let fx = Fx::new();
    let cases = [
        ("--logprobs", "2", "--logprobs <N>"),
        ("--seed", "3", "--seed <SEED>"),
        ("--temperature", "0.5", "--temperature <TEMPERATURE>"),
        ("--logit-bias", "1=2", "--logit-bias <LOGIT_BIAS>"),
    ];
    for (flag, value, shown) in cases {
        fx.generate(fx.tiny(), &["-p", "hi", "--num-beams", "2", flag, value])
            .usage_error(&format!("error: the argument '--num-beams <NUM_BEAMS>' cannot be used with '{shown}'"));
    }
}

#[test]
fn batch_file_text_output_keeps_the_logprobs() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    let file = fx.write("prompts.jsonl", b"{\"prompt\": \"the weather\"}\n{\"prompt\": \"a cat\"}\n");
    let run = fx.generate(&model, &["--batch-file", &file, "-n", "3", "--temperature", "0", "--logprobs", "2"]);
    run.ok();
    assert_eq!(run.stdout.matches("[logprobs]").count(), 2, "one table per prompt:\n{}", run.stdout);
    // The numbers are those of --json: three tokens each, with their log-probabilities.
    let json = fx.generate(&model, &["--batch-file", &file, "-n", "3", "--temperature", "0", "--logprobs", "2", "--json"]);
    for g in json_lines(json.ok()) {
        for lp in g["logprobs"].as_array().expect("logprobs") {
            let shown = format!("{:>8.3}", lp["logprob"].as_f64().unwrap());
            assert!(run.stdout.contains(&shown), "{shown} missing from:\n{}", run.stdout);
        }
    }
}

#[test]
fn out_of_vocabulary_logit_bias_is_refused() {
    let fx = Fx::new();
    let n_vocab = model::testing::tiny_vocab().0.len();
    let last = format!("{}=1", n_vocab - 1);
    fx.generate(fx.tiny(), &["-p", "hi", "-n", "1", "--logit-bias", &last]).ok();
    let outside = format!("{n_vocab}=1");
    let expected = format!(
        "error: --logit-bias token {n_vocab} is outside the model's vocabulary of {n_vocab} tokens (ids 0 to {}): use an id that `ferrolm tokenize` prints",
        n_vocab - 1
    );
    for extra in [&[][..], &["--num-return-sequences", "2"]] {
        let mut args = vec!["-p", "hi", "-n", "1", "--logit-bias", &outside];
        args.extend_from_slice(extra);
        let run = fx.generate(fx.tiny(), &args);
        run.fails_with(&[]);
        assert_eq!(run.stderr.trim_end(), expected);
    }
    let file = fx.write("prompts.jsonl", b"{\"prompt\": \"hi\"}\n");
    fx.generate(fx.tiny(), &["--batch-file", &file, "--logit-bias", &outside]).fails_with(&[&expected["error: ".len()..]]);
    fx.run_with_stdin(&["chat", "--model", fx.tiny(), "--logit-bias", &outside], Some("hello\n")).fails_with(&[&expected["error: ".len()..]]);
}

#[test]
fn batch_file_reports_a_bad_prompt_in_its_line_and_finishes_the_others() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    let long = "x".repeat(40);
    let lines = [
        r#"{"prompt": "the weather", "id": "first"}"#.to_string(),
        format!(r#"{{"prompt": "{long}", "id": "long"}}"#),
        r#"{"prompt": "a cat"}"#.to_string(),
        r#"{"prompt": ""}"#.to_string(),
    ];
    let file = fx.write("prompts.jsonl", lines.join("\n").as_bytes());
    let base = ["--batch-file", file.as_str(), "--ctx", "16", "-n", "3", "--temperature", "0"];
    let mut expected = None;
    for max_batch in ["8", "2", "1"] {
        let mut args = base.to_vec();
        args.extend_from_slice(&["--json", "--max-batch", max_batch]);
        let run = fx.generate(&model, &args);
        assert_eq!(run.code, Some(1), "a failed prompt fails the run; stderr:\n{}", run.stderr);
        assert!(run.stderr.contains("error: 2 of 4 prompts failed"), "{}", run.stderr);
        let got = json_lines(&run);
        assert_eq!(got.len(), 4, "one line per prompt:\n{}", run.stdout);
        assert_eq!((&got[0]["id"], &got[0]["index"]), (&serde_json::json!("first"), &serde_json::json!(0)));
        assert_eq!(got[0]["tokens"].as_array().map(Vec::len), Some(3));
        assert_eq!((&got[1]["id"], &got[1]["index"]), (&serde_json::json!("long"), &serde_json::json!(1)));
        let error = got[1]["error"].as_str().expect("an error string");
        assert!(error.contains("context is full") && error.contains("40 positions needed") && error.contains("holds 16"), "{error}");
        assert!(got[1].get("tokens").is_none());
        assert_eq!(got[2]["tokens"].as_array().map(Vec::len), Some(3), "the prompt after the bad one still runs");
        assert!(got[3]["error"].as_str().is_some_and(|e| e.contains("prompt is empty")), "{}", got[3]);
        // The good prompts get what they get in any batch size.
        let good: Vec<_> = [&got[0], &got[2]].iter().map(|g| g["tokens"].clone()).collect();
        assert_eq!(expected.get_or_insert_with(|| good.clone()), &good, "--max-batch {max_batch}");
    }
    // Text mode: the results on stdout, each failure named on stderr.
    let run = fx.generate(&model, &base);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stdout.contains("=== prompt 1 of 4") && run.stdout.contains("=== prompt 3 of 4"), "{}", run.stdout);
    assert!(!run.stdout.contains("=== prompt 2 of 4"), "{}", run.stdout);
    let named = format!("error: prompt 2 of 4 ({file}:2): the context is full");
    assert!(run.stderr.contains(&named), "stderr lacks {named:?}:\n{}", run.stderr);
    assert!(run.stderr.contains(&format!("error: prompt 4 of 4 ({file}:4): the prompt is empty")), "{}", run.stderr);
}
