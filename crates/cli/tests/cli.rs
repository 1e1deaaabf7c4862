//! End-to-end tests of the `ferrolm` binary against a tiny random Llama written to a temp dir.
//!
//! Every run passes `--model` and points `FERROLM_CACHE_DIR` at a temp dir, so no test touches
//! the network, the real model or the user's cache. Failures must be clean: exit code 1 (not 101,
//! a panic, nor a signal), stderr starting with `error:` and naming the problem.

mod common;

use common::*;
use gguf::{GgmlType, Value};

/// Byte offset of the type id field of tensor `name` in a GGUF file's tensor infos.
fn tensor_type_offset(bytes: &[u8], name: &str) -> usize {
    let mut pattern = (name.len() as u64).to_le_bytes().to_vec();
    pattern.extend_from_slice(name.as_bytes());
    let at = bytes.windows(pattern.len()).position(|w| w == pattern.as_slice()).expect("tensor info present");
    let dims_at = at + pattern.len();
    let n_dims = u32::from_le_bytes(bytes[dims_at..dims_at + 4].try_into().unwrap()) as usize;
    dims_at + 4 + 8 * n_dims
}

// ---------------------------------------------------------------------------------------------
// 1. Malformed model files
// ---------------------------------------------------------------------------------------------

/// Runs info, tokenize and generate against `path`; each must fail cleanly naming `needles`.
fn all_commands_fail(fx: &Fx, path: &str, needles: &[&str]) {
    fx.run(&["info", "--model", path]).fails_with(needles);
    fx.run(&["tokenize", "--model", path, "--text", "hi"]).fails_with(needles);
    fx.generate(path, &["-p", "hi", "-n", "2"]).fails_with(needles);
}

#[test]
fn truncated_model_files_fail_cleanly_at_every_length() {
    let fx = Fx::new();
    let tiny = tiny_bytes();
    for len in [8, 100, tiny.len() / 2, tiny.len() - 1] {
        let path = fx.write(&format!("truncated-{len}.gguf"), &tiny[..len]);
        let run = fx.run(&["info", "--model", &path]);
        run.fails_with(&[&path]);
        assert!(
            run.stderr.contains("truncated") || run.stderr.contains("past the end"),
            "length {len}: the message should say the file is cut short:\n{}",
            run.stderr
        );
        fx.run(&["tokenize", "--model", &path, "--text", "hi"]).fails_with(&[&path]);
        fx.generate(&path, &["-p", "hi", "-n", "2"]).fails_with(&[&path]);
    }
}

#[test]
fn bad_magic_says_not_a_gguf_file() {
    let fx = Fx::new();
    let mut bytes = tiny_bytes().to_vec();
    bytes[..4].copy_from_slice(b"GGML");
    let path = fx.write("bad-magic.gguf", &bytes);
    all_commands_fail(&fx, &path, &["not a GGUF file", "GGML", &path]);
}

#[test]
fn empty_model_file_fails_cleanly() {
    let fx = Fx::new();
    let path = fx.write("empty.gguf", b"");
    all_commands_fail(&fx, &path, &["the file is empty", &path]);
}

#[test]
fn random_bytes_model_file_fails_cleanly() {
    let fx = Fx::new();
    let bytes = lcg_bytes(7, 4096);
    assert_ne!(&bytes[..4], b"GGUF");
    let path = fx.write("random.gguf", &bytes);
    all_commands_fail(&fx, &path, &["not a GGUF file"]);
}

#[test]
fn misspelt_kernel_variables_are_errors_not_silent_defaults() {
    let fx = Fx::new();
    let run_with = |name: &str, value: &str| {
        let mut cmd = fx.command(&["generate", "--model", fx.tiny(), "-t", "1", "-p", "hi", "-n", "2", "--temperature", "0"], false);
        let out = cmd.env(name, value).output().expect("run ferrolm");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for (name, bad, hint) in [("FERROLM_SUM_ORDER", "block", "llama-cpp, blocks"), ("FERROLM_KERNELS", "avx9", "scalar, avx2")] {
        let (code, _, stderr) = run_with(name, bad);
        assert_eq!(code, Some(1), "{name}={bad}: {stderr}");
        assert!(stderr.starts_with("error:") && stderr.contains(name) && stderr.contains(hint), "{stderr}");
    }
    // The documented values run; every kernel level gives the same greedy text (levels are
    // exact to each other).
    let (_, plain, _) = run_with("FERROLM_SUM_ORDER", "llama-cpp");
    for (name, good) in [("FERROLM_SUM_ORDER", "blocks"), ("FERROLM_KERNELS", "scalar"), ("FERROLM_KERNELS", "avx2")] {
        let (code, stdout, stderr) = run_with(name, good);
        assert_eq!(code, Some(0), "{name}={good}: {stderr}");
        assert!(!stdout.is_empty());
        if name == "FERROLM_KERNELS" {
            assert_eq!(stdout, plain, "{name}={good}");
        }
    }
}

#[test]
fn nonexistent_model_path_fails_without_fetching() {
    let fx = Fx::new();
    let path = fx.path("does-not-exist.gguf");
    all_commands_fail(&fx, &path, &["no model file", &path]);
}

#[test]
fn directory_as_model_fails_cleanly() {
    let fx = Fx::new();
    let path = fx.path("a-directory.gguf");
    std::fs::create_dir(&path).expect("create dir");
    all_commands_fail(&fx, &path, &["no model file", &path]);
}

#[test]
fn unknown_tensor_type_id_is_named() {
    let fx = Fx::new();
    let mut bytes = tiny_bytes().to_vec();
    let at = tensor_type_offset(&bytes, "output_norm.weight");
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), GgmlType::F32.id());
    bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let path = fx.write("unknown-type.gguf", &bytes);
    all_commands_fail(&fx, &path, &["output_norm.weight", "type id 99"]);
}

#[test]
fn model_without_tokenizer_keys_fails_tokenize_clearly() {
    let fx = Fx::new();
    let path = fx.write("no-tokenizer.gguf", &rewrite_tiny(|key, v| (!key.starts_with("tokenizer.")).then(|| v.clone())));
    let needles = ["cannot build the tokenizer", "missing metadata key 'tokenizer.ggml.model'"];
    fx.run(&["tokenize", "--model", &path, "--text", "hi"]).fails_with(&needles);
    fx.run(&["detokenize", "--model", &path, "1", "2"]).fails_with(&needles);
    fx.generate(&path, &["-p", "hi", "-n", "2"]).fails_with(&needles);
    // `info` describes what it can: the model is fine, only the tokenizer is missing.
    let run = fx.run(&["info", "--model", &path]);
    run.ok();
    assert!(run.stdout.contains("layers:        2"), "{}", run.stdout);
    assert!(run.stdout.contains("tokenizer:     unsupported") && run.stdout.contains("tokenizer.ggml.model"), "{}", run.stdout);
    assert!(run.stdout.contains("chat template: absent"), "{}", run.stdout);
}

#[test]
fn other_architecture_fails_generate_but_info_describes_it() {
    let fx = Fx::new();
    let mamba = rewrite_tiny(|key, v| Some(if key == "general.architecture" { Value::String("mamba".into()) } else { v.clone() }));
    let path = fx.write("mamba.gguf", &mamba);
    let text = fx.write("text.txt", "some text to score ".repeat(10).as_bytes());
    fx.generate(&path, &["-p", "hi", "-n", "2"]).fails_with(&["unsupported architecture \"mamba\"", "supported: llama"]);
    fx.run(&["perplexity", "--model", &path, "-t", "1", "--file", &text, "--ctx", "16"]).fails_with(&["unsupported architecture \"mamba\""]);
    let run = fx.run(&["info", "--model", &path]);
    run.ok();
    assert!(run.stdout.contains("architecture:  mamba"), "{}", run.stdout);
    assert!(run.stdout.contains("not runnable here: unsupported architecture \"mamba\""), "{}", run.stdout);
    assert!(run.stdout.contains("20 tensors"), "{}", run.stdout);
    assert!(run.stdout.contains("chat template: present"), "{}", run.stdout);
    // The tokenizer does not depend on the architecture, so tokenizing still works.
    let run = fx.run(&["tokenize", "--model", &path, "--text", "hi there"]);
    run.ok();
    assert_eq!(run.stdout.trim(), serde_json::to_string(&fx.tokenize("hi there", &[])).unwrap());
}

// ---------------------------------------------------------------------------------------------
// 2. tokenize / detokenize
// ---------------------------------------------------------------------------------------------

/// Tokens of the tiny vocabulary: 3 control tokens, 256 byte tokens and 6 merges.
const TINY_VOCAB: u32 = 265;

#[test]
fn tokenize_prints_one_json_array_of_ids() {
    let fx = Fx::new();
    let ids = fx.tokenize("hello there", &[]);
    assert!(ids.iter().all(|&id| id < TINY_VOCAB), "{ids:?}");
    // Byte b is id 3 + b; the merges " t", "he", " the" are ids 259, 260, 261.
    let byte = |b: u8| 3 + u32::from(b);
    assert_eq!(ids, vec![260, byte(b'l'), byte(b'l'), byte(b'o'), 261, byte(b'r'), byte(b'e')]);
}

#[test]
fn special_tokens_parse_unless_no_special() {
    let fx = Fx::new();
    assert_eq!(fx.tokenize("<|im_start|>", &[]), vec![1]);
    assert_eq!(fx.tokenize("a<|im_end|>b", &[]), vec![3 + u32::from(b'a'), 2, 3 + u32::from(b'b')]);
    let plain = fx.tokenize("<|im_start|>", &["--no-special"]);
    assert_eq!(plain.len(), "<|im_start|>".len(), "{plain:?}");
    assert!(!plain.contains(&1), "{plain:?}");
}

#[test]
fn tokenize_jsonl_prints_one_array_per_line_in_order() {
    let fx = Fx::new();
    let texts = ["first line", "<|im_end|>", "the end", "ünïcödé ✓"];
    let jsonl: String = texts.iter().map(|t| format!("{}\n", serde_json::json!({ "text": t }))).collect();
    let path = fx.write("texts.jsonl", jsonl.as_bytes());
    let run = fx.run(&["tokenize", "--model", fx.tiny(), "--jsonl", &path]);
    run.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), texts.len(), "{}", run.stdout);
    for (line, text) in lines.iter().zip(texts) {
        let ids: Vec<u32> = serde_json::from_str(line).expect("JSON array");
        assert_eq!(ids, fx.tokenize(text, &[]), "line for {text:?}");
    }
}

#[test]
fn tokenize_jsonl_malformed_line_names_the_line_number() {
    let fx = Fx::new();
    let path = fx.write("bad.jsonl", b"{\"text\": \"ok\"}\n{\"text\": \"fine\"}\nnot json at all\n");
    fx.run(&["tokenize", "--model", fx.tiny(), "--jsonl", &path]).fails_with(&[&format!("{path}:3: not valid JSON")]);

    let path = fx.write("no-text-field.jsonl", b"{\"text\": \"ok\"}\n{\"txt\": \"typo\"}\n");
    fx.run(&["tokenize", "--model", fx.tiny(), "--jsonl", &path]).fails_with(&[&format!("{path}:2:"), "string field \"text\""]);

    let path = fx.write("not-utf8.jsonl", b"{\"text\": \"ok\"}\n\xff\xfe\n");
    fx.run(&["tokenize", "--model", fx.tiny(), "--jsonl", &path]).fails_with(&[&format!("{path}:2: cannot read the line")]);

    let missing = fx.path("missing.jsonl");
    fx.run(&["tokenize", "--model", fx.tiny(), "--jsonl", &missing]).fails_with(&["cannot open", &missing]);
}

#[test]
fn detokenize_round_trips_tokenize() {
    let fx = Fx::new();
    for text in ["hello there, the inner water", "<|im_start|>user\nhi<|im_end|>", "ünïcödé ✓ 😀"] {
        let ids = fx.tokenize(text, &[]);
        let id_args: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let mut args = vec!["detokenize", "--model", fx.tiny()];
        args.extend(id_args.iter().map(String::as_str));
        let run = fx.run(&args);
        run.ok();
        assert_eq!(run.stdout, format!("{text}\n"), "ids {ids:?}");
    }
}

#[test]
fn detokenize_out_of_range_id_fails_clearly() {
    let fx = Fx::new();
    fx.run(&["detokenize", "--model", fx.tiny(), "5", "100000"]).fails_with(&["token id 100000", "outside the vocabulary of 265"]);
    fx.run(&["detokenize", "--model", fx.tiny(), &TINY_VOCAB.to_string()]).fails_with(&["token id 265"]);
}

// ---------------------------------------------------------------------------------------------
// 3. generate
// ---------------------------------------------------------------------------------------------

/// The generated text: stdout minus the newline `generate` adds after it.
fn generated_text(run: &Run) -> &str {
    run.stdout.strip_suffix('\n').unwrap_or_else(|| panic!("stdout should end with a newline: {:?}", run.stdout))
}

#[test]
fn greedy_generation_is_deterministic_and_stats_go_to_stderr() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    let greedy = ["-p", "the weather", "--temperature", "0", "-n", "8"];
    let first = fx.generate(&model, &greedy);
    first.ok();
    assert!(!generated_text(&first).is_empty());
    let second = fx.generate(&model, &greedy);
    second.ok();
    assert_eq!(first.stdout, second.stdout);
    assert!(first.stderr.contains("tok/s") && first.stderr.contains("generated: 8 tokens"), "stats belong on stderr:\n{}", first.stderr);
    assert!(!first.stdout.contains("tok/s") && !first.stdout.contains("prompt:"), "stdout holds only the text:\n{}", first.stdout);
    // The thread count must not change greedy output.
    let threaded = fx.run(&["generate", "--model", &model, "-t", "2", "-p", "the weather", "--temperature", "0", "-n", "8"]);
    threaded.ok();
    assert_eq!(threaded.stdout, first.stdout);
}

#[test]
fn sampling_same_seed_repeats_and_other_seeds_differ() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    let sample = |seed: &str| {
        let run = fx.generate(&model, &["-p", "once upon", "--temperature", "0.9", "--seed", seed, "-n", "12"]);
        run.ok();
        run.stdout
    };
    let seven = sample("7");
    assert_eq!(seven, sample("7"), "the same seed must reproduce the same text");
    assert!(["8", "9", "10", "11"].iter().any(|s| sample(s) != seven), "four other seeds all gave {seven:?}");
}

#[test]
fn stop_string_is_never_printed_and_output_is_the_prefix_before_it() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    let free = fx.generate(&model, &["-p", "the", "--temperature", "0", "-n", "24"]);
    free.ok();
    let text = generated_text(&free);
    // The last pair of printable ASCII characters that does not also start the text, so there
    // is a prefix to keep (the text is random bytes from a random model).
    let chars: Vec<char> = text.chars().collect();
    let stop: String = (1..chars.len().saturating_sub(1))
        .rev()
        .map(|i| [chars[i], chars[i + 1]].iter().collect::<String>())
        .find(|pair| pair.chars().all(|c| c.is_ascii_graphic()) && text.find(pair.as_str()) > Some(0))
        .unwrap_or_else(|| panic!("no usable printable pair in the greedy output {text:?}"));
    let expected = &text[..text.find(&stop).unwrap()];
    let stopped = fx.generate(&model, &["-p", "the", "--temperature", "0", "-n", "24", "--stop", &stop]);
    stopped.ok();
    assert!(!stopped.stdout.contains(&stop), "stop text {stop:?} printed: {:?}", stopped.stdout);
    assert_eq!(generated_text(&stopped), expected, "stop {stop:?} in {text:?}");
    assert!(stopped.stderr.contains("stop: stop string"), "{}", stopped.stderr);
}

#[test]
fn zero_max_tokens_prints_an_empty_line_and_succeeds() {
    let fx = Fx::new();
    let run = fx.generate(fx.tiny(), &["-p", "hello", "-n", "0"]);
    run.ok();
    assert_eq!(run.stdout, "\n");
    assert!(run.stderr.contains("generated: 0 tokens"), "{}", run.stderr);
}

#[test]
fn absurd_sampling_parameters_state_the_allowed_range() {
    let fx = Fx::new();
    let cases: [(&[&str], &[&str]); 5] = [
        (&["--top-p", "0"], &["top_p must be in (0, 1]", "got 0"]),
        (&["--top-p", "1.5"], &["top_p must be in (0, 1]", "got 1.5"]),
        (&["--temperature=-1"], &["temperature must be a finite number >= 0", "got -1"]),
        (&["--temperature", "NaN"], &["temperature must be a finite number >= 0"]),
        (&["--min-p", "2"], &["min_p must be in [0, 1]", "got 2"]),
    ];
    for (flags, needles) in cases {
        let mut args = vec!["-p", "hi", "-n", "2"];
        args.extend_from_slice(flags);
        fx.generate(fx.tiny(), &args).fails_with(needles);
    }
}

#[test]
fn negative_temperature_after_a_space_is_a_usage_error_not_a_run() {
    // clap reads `-1` after a space as a flag, so this is a usage error (exit 2) rather than a
    // range error; either way it must not generate or panic.
    let fx = Fx::new();
    let run = fx.generate(fx.tiny(), &["-p", "hi", "-n", "2", "--temperature", "-1"]);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(matches!(run.code, Some(1) | Some(2)), "{run:?}");
    assert!(run.stderr.starts_with("error:"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn absurd_run_parameters_state_the_allowed_range() {
    let fx = Fx::new();
    let cases: [(&[&str], &[&str]); 3] = [
        (&["--threads", "0"], &["--threads must be between 1 and 1024, got 0"]),
        (&["--ctx", "0"], &["--ctx must be between 1 and the model's context length 256, got 0"]),
        (&["--ctx", "100000"], &["--ctx must be between 1 and the model's context length 256, got 100000"]),
    ];
    for (flags, needles) in cases {
        let mut args = vec!["generate", "--model", fx.tiny(), "-p", "hi", "-n", "2"];
        args.extend_from_slice(flags);
        fx.run(&args).fails_with(needles);
    }
}

#[test]
fn prompt_longer_than_ctx_gives_a_context_error() {
    let fx = Fx::new();
    let prompt = "x".repeat(40);
    fx.generate(fx.tiny(), &["-p", &prompt, "--ctx", "8", "-n", "2"]).fails_with(&["context is full", "40 positions needed", "holds 8"]);
}

#[test]
fn prompt_that_exactly_fills_ctx_generates_one_token_then_stops() {
    let fx = Fx::new();
    let prompt = "xxxxxxxx";
    assert_eq!(fx.tokenize(prompt, &[]).len(), 8);
    let run = fx.generate(fx.tiny(), &["-p", prompt, "--ctx", "8", "-n", "5", "--temperature", "0"]);
    run.ok();
    assert!(run.stderr.contains("generated: 1 tokens") && run.stderr.contains("stop: context full"), "{}", run.stderr);
}

#[test]
fn empty_prompt_fails_clearly() {
    let fx = Fx::new();
    fx.generate(fx.tiny(), &["-p", "", "-n", "2"]).fails_with(&["prompt is empty"]);
}

// ---------------------------------------------------------------------------------------------
// 4. perplexity
// ---------------------------------------------------------------------------------------------

const PROSE: &str = "The quick brown fox jumps over the lazy dog. Then the dog wakes up and chases the fox \
    around the garden, past the roses and the old oak tree, until both of them are tired and lie down \
    in the shade. The farmer watches them from the porch and laughs, because this happens every day, \
    and every day the fox gets away.";

#[test]
fn perplexity_json_prints_one_object_with_finite_ppl() {
    let fx = Fx::new();
    let path = fx.write("prose.txt", PROSE.as_bytes());
    let run = fx.run(&["perplexity", "--model", fx.tiny(), "-t", "1", "--file", &path, "--ctx", "16", "--json"]);
    run.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stdout);
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("one JSON object");
    let ppl = v["ppl"].as_f64().expect("ppl is a number");
    assert!(ppl.is_finite() && ppl > 1.0, "ppl {ppl}");
    let tokens = v["tokens"].as_u64().expect("tokens is a number");
    assert_eq!(tokens as usize, fx.tokenize(PROSE, &[]).len());
    assert_eq!(v["chunks"].as_u64(), Some(tokens / 16));
}

#[test]
fn perplexity_chunks_scores_only_the_first_chunks() {
    // As llama-perplexity's --chunks: the first N chunks, the same numbers as a text of N chunks
    // (the two-chunk minimum applies to the text, before the limit).
    let fx = Fx::new();
    let path = fx.write("prose.txt", PROSE.as_bytes());
    let tokens = fx.tokenize(PROSE, &[]).len();
    assert!(tokens / 16 >= 3, "the text must have at least 3 chunks");
    let json = |args: &[&str]| -> serde_json::Value {
        let run = fx.run(args);
        run.ok();
        serde_json::from_str(run.stdout.trim()).expect("one JSON object")
    };
    let two = json(&["perplexity", "--model", fx.tiny(), "-t", "1", "--file", &path, "--ctx", "16", "--chunks", "2", "--json"]);
    assert_eq!(two["chunks"].as_u64(), Some(2));
    assert_eq!(two["scored"].as_u64(), Some(2 * 7), "the second half of each chunk of 16 but the last token");
    let all = json(&["perplexity", "--model", fx.tiny(), "-t", "1", "--file", &path, "--ctx", "16", "--json"]);
    assert_ne!(two["ppl"], all["ppl"]);
    assert!(all["scored"].as_u64().unwrap() > two["scored"].as_u64().unwrap());
    fx.run(&["perplexity", "--model", fx.tiny(), "--file", &path, "--ctx", "16", "--chunks", "0"]).fails_with(&["--chunks must be at least 1"]);
}

#[test]
fn perplexity_text_shorter_than_one_chunk_fails_clearly() {
    let fx = Fx::new();
    let path = fx.write("short.txt", b"hi there");
    fx.run(&["perplexity", "--model", fx.tiny(), "--file", &path, "--ctx", "16"]).fails_with(&["fewer than two chunks of 16"]);
    // One whole chunk is not enough either: llama-perplexity wants two.
    let prose = fx.write("prose.txt", PROSE.as_bytes());
    let ctx = (fx.tokenize(PROSE, &[]).len() / 2 + 1).to_string();
    fx.run(&["perplexity", "--model", fx.tiny(), "--file", &prose, "--ctx", &ctx]).fails_with(&["fewer than two chunks", "llama-perplexity"]);
}

#[test]
fn perplexity_missing_or_binary_file_fails_clearly() {
    let fx = Fx::new();
    let missing = fx.path("no-such-text.txt");
    fx.run(&["perplexity", "--model", fx.tiny(), "--file", &missing]).fails_with(&["cannot read", &missing]);
    let binary = fx.write("binary.txt", &[0xff, 0xfe, 0x00, 0x80, 0xc3]);
    fx.run(&["perplexity", "--model", fx.tiny(), "--file", &binary]).fails_with(&["UTF-8", &binary]);
}

#[test]
fn perplexity_ctx_out_of_range_states_the_range() {
    let fx = Fx::new();
    let path = fx.write("prose.txt", PROSE.as_bytes());
    let range = "--ctx must be between 4 and the model's context length 256";
    fx.run(&["perplexity", "--model", fx.tiny(), "--file", &path, "--ctx", "2"]).fails_with(&[range, "got 2"]);
    fx.run(&["perplexity", "--model", fx.tiny(), "--file", &path, "--ctx", "100000"]).fails_with(&[range, "got 100000"]);
}

// ---------------------------------------------------------------------------------------------
// 5. chat
// ---------------------------------------------------------------------------------------------

#[test]
fn chat_answers_piped_input_then_exits() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    let run = fx.run_with_stdin(&["chat", "--model", &model, "-t", "1", "-n", "8"], Some("hello\n/exit\n"));
    run.ok();
    assert!(!run.stdout.trim().is_empty(), "no answer on stdout; stderr:\n{}", run.stderr);
    assert_eq!(run.stderr.matches("[prompt:").count(), 1, "one turn, one stats line:\n{}", run.stderr);
}

#[test]
fn chat_with_closed_stdin_exits_cleanly() {
    let fx = Fx::new();
    let run = fx.run(&["chat", "--model", fx.tiny(), "-t", "1", "-n", "4"]);
    run.ok();
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn chat_turn_too_long_for_ctx_is_refused_and_chat_goes_on() {
    let fx = Fx::new();
    let input = format!("{}\nhi\n", "word ".repeat(40));
    let run = fx.run_with_stdin(&["chat", "--model", fx.tiny(), "-t", "1", "-n", "2", "--ctx", "32"], Some(&input));
    run.ok();
    assert!(run.stderr.contains("no longer fits the context of 32"), "{}", run.stderr);
    // The short second turn still gets an answer.
    assert_eq!(run.stderr.matches("[prompt:").count(), 1, "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// 6. info and usage
// ---------------------------------------------------------------------------------------------

#[test]
fn info_describes_the_tiny_model() {
    let fx = Fx::new();
    let run = fx.run(&["info", "--model", fx.tiny()]);
    run.ok();
    let field = |name: &str| -> String {
        let line = run.stdout.lines().find(|l| l.starts_with(&format!("{name}:"))).unwrap_or_else(|| panic!("no {name} line:\n{}", run.stdout));
        line[name.len() + 1..].trim().to_string()
    };
    assert_eq!(field("architecture"), "llama");
    assert_eq!(field("layers"), "2");
    assert_eq!(field("embedding"), "64");
    assert_eq!(field("context"), "256");
    assert_eq!(field("name"), "tiny-test-llama");
    assert_eq!(field("chat template"), "present");
    assert!(field("tokenizer").starts_with("gpt2 (265 tokens), pre-tokenizer SmolLm"), "{}", field("tokenizer"));
    assert!(run.stdout.contains("Q4_1") && run.stdout.contains("Q8_0") && run.stdout.contains("F32"), "{}", run.stdout);
}

#[test]
fn no_subcommand_is_a_usage_error_not_a_panic() {
    let fx = Fx::new();
    let run = fx.run(&[]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(!run.stderr.contains("panicked"));
    assert!(run.stderr.contains("Usage"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// 7. Edge cases, and known bugs (ignored tests state the correct behaviour)
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_stop_string_is_ignored() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    let plain = fx.generate(&model, &["-p", "the", "--temperature", "0", "-n", "6"]);
    plain.ok();
    let with_empty_stop = fx.generate(&model, &["-p", "the", "--temperature", "0", "-n", "6", "--stop", ""]);
    with_empty_stop.ok();
    assert_eq!(with_empty_stop.stdout, plain.stdout);
}

#[test]
fn chat_with_a_broken_template_fails_clearly() {
    let fx = Fx::new();
    let broken = rewrite_tiny(|key, v| {
        Some(if key == "tokenizer.chat_template" { Value::String("{% for message in messages %}{{ message".into()) } else { v.clone() })
    });
    let path = fx.write("broken-template.gguf", &broken);
    fx.run_with_stdin(&["chat", "--model", &path, "-t", "1", "-n", "2"], Some("hello\n")).fails_with(&["chat template does not compile"]);
}

#[test]
fn huge_ctx_on_a_model_claiming_a_huge_context_fails_cleanly() {
    // Regression: a model claiming 2^62 positions let `--ctx` size the KV cache unchecked
    // ("memory allocation of ... bytes failed" abort, or an overflow panic). Such a context length
    // is now a bad model file; a KV cache that does not fit in memory is a clean error too
    // (`model/src/cache.rs`, `kv_cache_too_large_for_memory_is_an_error`).
    let fx = Fx::new();
    let huge = rewrite_tiny(|key, v| Some(if key == "llama.context_length" { Value::U64(1 << 62) } else { v.clone() }));
    let path = fx.write("huge-ctx.gguf", &huge);
    for ctx in ["1000000000000", "4611686018427387903"] {
        fx.generate(&path, &["-p", "hi", "-n", "2", "--ctx", ctx]).fails_with(&["context_length"]);
    }
}

#[test]
fn model_with_zero_context_length_is_reported_as_a_bad_model() {
    // Today: "error: --ctx must be between 1 and the model's context length 0, got 0".
    let fx = Fx::new();
    let zero = rewrite_tiny(|key, v| Some(if key == "llama.context_length" { Value::U32(0) } else { v.clone() }));
    let path = fx.write("zero-ctx.gguf", &zero);
    let run = fx.generate(&path, &["-p", "hi", "-n", "2"]);
    run.fails_with(&["context_length", &path]);
    assert!(!run.stderr.contains("--ctx must"), "the user passed no --ctx:\n{}", run.stderr);
}

#[test]
fn model_file_error_names_the_path_once() {
    let fx = Fx::new();
    let path = fx.write("bad-magic.gguf", b"GGML and then some");
    let run = fx.run(&["info", "--model", &path]);
    run.fails_with(&["not a GGUF file"]);
    assert_eq!(run.stderr.matches(path.as_str()).count(), 1, "{}", run.stderr);
}

#[test]
fn closed_stdout_ends_generation_quietly() {
    let fx = Fx::new();
    let args = ["generate", "--model", fx.tiny(), "-t", "1", "-p", "hi", "-n", "50", "--temperature", "0"];
    let mut child = fx.command(&args, false).spawn().expect("spawn ferrolm");
    // Close the read end before the first token is written, like a pager that quit.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for ferrolm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("error:"), "a closed pipe is not an error worth reporting:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn banning_the_greedy_token_with_logit_bias_changes_the_output() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    let greedy = ["-p", "the weather", "--temperature", "0", "-n", "1"];
    let first = fx.generate(&model, &greedy);
    first.ok();
    let ids = fx.run(&["tokenize", "--model", &model, "--text", generated_text(&first)]);
    ids.ok();
    let id: u32 = serde_json::from_str::<Vec<u32>>(&ids.stdout).unwrap()[0];
    let ban = format!("{id}=-inf");
    let banned = fx.generate(&model, &["-p", "the weather", "--temperature", "0", "-n", "1", "--logit-bias", &ban]);
    banned.ok();
    assert_ne!(banned.stdout, first.stdout, "token {id} was banned");
}

#[test]
fn repetition_penalty_changes_greedy_output_and_bad_penalties_are_refused() {
    // The default tiny model repeats the last token it read, so greedy output is one token over
    // and over: a repetition penalty must break that.
    let fx = Fx::new();
    let base = ["-p", "hello", "--temperature", "0", "-n", "16"];
    let plain = fx.generate(fx.tiny(), &base);
    plain.ok();
    let mut with = base.to_vec();
    with.extend_from_slice(&["--repeat-penalty", "3", "--penalty-window", "0"]);
    let penalised = fx.generate(fx.tiny(), &with);
    penalised.ok();
    assert_ne!(penalised.stdout, plain.stdout);
    let mut bad = vec!["-p", "hi", "-n", "2"];
    bad.extend_from_slice(&["--typical-p", "0"]);
    fx.generate(fx.tiny(), &bad).fails_with(&["typical_p"]);
    fx.generate(fx.tiny(), &["-p", "hi", "-n", "2", "--repeat-penalty", "0"]).fails_with(&["repeat_penalty"]);
    let usage = fx.run(&["generate", "--model", fx.tiny(), "-p", "hi", "--logit-bias", "nonsense"]);
    assert_eq!(usage.code, Some(2), "a malformed flag is a usage error: {}", usage.stderr);
    assert!(usage.stderr.contains("TOKEN=BIAS"), "{}", usage.stderr);
}

#[test]
fn hugging_face_sampler_order_is_selectable() {
    let fx = Fx::new();
    let model = fx.write("varied.gguf", varied_bytes());
    for order in ["llama-cpp", "hf"] {
        let run = fx.generate(&model, &["-p", "once", "--temperature", "1.5", "--top-p", "0.5", "--seed", "3", "-n", "6", "--sampler-order", order]);
        run.ok();
    }
    let usage = fx.run(&["generate", "--model", fx.tiny(), "-p", "hi", "--sampler-order", "vllm"]);
    assert_eq!(usage.code, Some(2), "an unknown order is a usage error: {}", usage.stderr);
    assert!(usage.stderr.contains("llama-cpp, hf"), "{}", usage.stderr);
}
