//! End-to-end tests of the `ferrolm` binary against a tiny random Llama written to a temp dir.
//!
//! Every run passes `--model` and points `FERROLM_CACHE_DIR` at a temp dir, so no test touches
//! the network, the real model or the user's cache. Failures must be clean: exit code 1 (not 101,
//! a panic, nor a signal), stderr starting with `error:` and naming the problem.

use gguf::{GgmlType, GgufFile, GgufWriter, Value};
use model::testing::{tiny_llama_gguf, TinySpec};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The tiny model's bytes, built once per test process.
fn tiny_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| tiny_llama_gguf(&TinySpec::default()))
}

/// The tiny model with its own random output head instead of the tied embedding table.
///
/// With tied embeddings a random model mostly predicts the token it just read ("nnnn..."), so
/// every seed and every stop string look alike; an untied head of small random weights gives a
/// flatter, position-dependent distribution that sampling tests can tell apart.
fn varied_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let file = GgufFile::from_bytes(tiny_bytes().to_vec()).expect("tiny model parses");
        let embd = file.tensor("token_embd.weight").expect("embedding table");
        let (d, v) = (embd.dims[0], embd.dims[1]);
        let mut state = 42u64;
        let head: Vec<u8> = (0..d * v)
            .flat_map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let uniform = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                (HEAD_SCALE * uniform).to_le_bytes()
            })
            .collect();
        let mut w = copy_gguf(&file, |_, v| Some(v.clone()));
        w.add_tensor("output.weight", &[d, v], GgmlType::F32, head);
        w.to_bytes().expect("varied model is valid")
    })
}

/// Scale of the random output head of [`varied_bytes`]: logits of a few units, so temperature
/// 0.9 spreads probability over many tokens.
const HEAD_SCALE: f32 = 0.5;

/// A writer holding `file`'s metadata mapped through `edit` (`None` drops an entry) and all its
/// tensors unchanged.
fn copy_gguf(file: &GgufFile, edit: impl Fn(&str, &Value) -> Option<Value>) -> GgufWriter {
    let mut w = GgufWriter::new();
    for (key, value) in &file.metadata {
        if let Some(v) = edit(key, value) {
            w.add_kv(key, v);
        }
    }
    for t in &file.tensors {
        w.add_tensor(&t.name, &t.dims, t.ggml_type, file.tensor_data(t).to_vec());
    }
    w
}

/// The tiny model with its metadata mapped through `edit`.
fn rewrite_tiny(edit: impl Fn(&str, &Value) -> Option<Value>) -> Vec<u8> {
    let file = GgufFile::from_bytes(tiny_bytes().to_vec()).expect("tiny model parses");
    copy_gguf(&file, edit).to_bytes().expect("rewritten model is valid")
}

/// One test's temp dir: the tiny model, an empty cache folder and any files the test writes.
/// Dropping it removes everything.
struct Fx {
    dir: tempfile::TempDir,
    tiny: String,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("cache")).expect("cache dir");
        let path = dir.path().join("tiny.gguf");
        std::fs::write(&path, tiny_bytes()).expect("write tiny model");
        let tiny = path.to_str().expect("utf-8 temp path").to_string();
        Fx { dir, tiny }
    }

    fn tiny(&self) -> &str {
        &self.tiny
    }

    /// Writes `bytes` to `name` in the temp dir and returns its path.
    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write fixture file");
        path.to_str().expect("utf-8 temp path").to_string()
    }

    /// A path in the temp dir that nothing has been written to.
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().expect("utf-8 temp path").to_string()
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrolm"));
        cmd.args(args)
            .env("FERROLM_CACHE_DIR", self.dir.path().join("cache"))
            .env_remove("FERROLM_MODEL")
            // A pip call would mean a test tried to fetch the default model: make it fail fast.
            .env("FERROLM_PYTHON", "/nonexistent/python-for-tests")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ferrolm");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait for ferrolm");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    /// `generate` on `model` with one thread (tests run in parallel on few cores).
    fn generate(&self, model: &str, extra: &[&str]) -> Run {
        let mut args = vec!["generate", "--model", model, "-t", "1"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// The ids `tokenize --text` prints for `text` with the tiny model.
    fn tokenize(&self, text: &str, extra: &[&str]) -> Vec<u32> {
        let mut args = vec!["tokenize", "--model", self.tiny(), "--text", text];
        args.extend_from_slice(extra);
        let run = self.run(&args);
        run.ok();
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "tokenize --text must print exactly one line:\n{}", run.stdout);
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not a JSON array of ids ({e}): {}", lines[0]))
    }
}

/// The outcome of one run of the binary.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success; stderr:\n{}\nstdout:\n{}", self.stderr, self.stdout);
        assert!(!self.stderr.contains("panicked"), "panic in a successful run:\n{}", self.stderr);
        self
    }

    /// A clean failure: exit 1, stderr starting with `error:`, no panic, and each of `needles`
    /// (case-insensitive) in the message.
    fn fails_with(&self, needles: &[&str]) -> &Self {
        assert!(!self.stderr.contains("panicked"), "panicked instead of a clean error:\n{}", self.stderr);
        assert_eq!(self.code, Some(1), "expected exit code 1 (101 is a panic, None a signal); stderr:\n{}", self.stderr);
        assert!(self.stderr.starts_with("error:"), "stderr does not start with \"error:\":\n{}", self.stderr);
        let lower = self.stderr.to_lowercase();
        for needle in needles {
            assert!(lower.contains(&needle.to_lowercase()), "stderr lacks {needle:?}:\n{}", self.stderr);
        }
        self
    }
}

/// The generated text: stdout minus the newline `generate` adds after it.
fn generated_text(run: &Run) -> &str {
    run.stdout.strip_suffix('\n').unwrap_or_else(|| panic!("stdout should end with a newline: {:?}", run.stdout))
}

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
fn all_commands_fail(path: &Path, needles: &[&str]) {
    let p = path.to_str().unwrap();
    ferrolm(&["info", "--model", p]).fails_with(needles);
    ferrolm(&["tokenize", "--model", p, "--text", "hi"]).fails_with(needles);
    ferrolm(&["generate", "--model", p, "-t", "1", "-p", "hi", "-n", "2"]).fails_with(needles);
}

#[test]
fn truncated_model_files_fail_cleanly_at_every_length() {
    let tiny = &fixtures().tiny;
    for len in [8, 100, tiny.len() / 2, tiny.len() - 1] {
        let path = write_file(&format!("truncated-{len}.gguf"), &tiny[..len]);
        let p = path.to_str().unwrap();
        let run = ferrolm(&["info", "--model", p]);
        run.fails_with(&[p]);
        assert!(
            run.stderr.contains("truncated") || run.stderr.contains("past the end") || run.stderr.contains("left"),
            "length {len}: the message should say the file is cut short:\n{}",
            run.stderr
        );
        ferrolm(&["tokenize", "--model", p, "--text", "hi"]).fails_with(&[p]);
        ferrolm(&["generate", "--model", p, "-t", "1", "-p", "hi", "-n", "2"]).fails_with(&[p]);
    }
}

#[test]
fn bad_magic_says_not_a_gguf_file() {
    let mut bytes = fixtures().tiny.clone();
    bytes[..4].copy_from_slice(b"GGML");
    let path = write_file("bad-magic.gguf", &bytes);
    all_commands_fail(&path, &["not a GGUF file", path.to_str().unwrap()]);
}

#[test]
fn empty_model_file_fails_cleanly() {
    let path = write_file("empty.gguf", b"");
    all_commands_fail(&path, &[path.to_str().unwrap()]);
}

#[test]
fn random_bytes_model_file_fails_cleanly() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    assert_ne!(&bytes[..4], b"GGUF");
    let path = write_file("random.gguf", &bytes);
    all_commands_fail(&path, &["not a GGUF file"]);
}

#[test]
fn nonexistent_model_path_fails_without_fetching() {
    let path = fixtures().dir.path().join("does-not-exist.gguf");
    all_commands_fail(&path, &["no model file", path.to_str().unwrap()]);
}

#[test]
fn directory_as_model_fails_cleanly() {
    let path = fixtures().dir.path().join("a-directory.gguf");
    std::fs::create_dir_all(&path).unwrap();
    all_commands_fail(&path, &["no model file", path.to_str().unwrap()]);
}

#[test]
fn unknown_tensor_type_id_is_named() {
    let mut bytes = fixtures().tiny.clone();
    let at = tensor_type_offset(&bytes, "output_norm.weight");
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), GgmlType::F32.id());
    bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let path = write_file("unknown-type.gguf", &bytes);
    all_commands_fail(&path, &["output_norm.weight", "99"]);
}

#[test]
fn model_without_tokenizer_keys_fails_tokenize_clearly() {
    let bytes = rewrite_tiny(|key, v| (!key.starts_with("tokenizer.")).then(|| v.clone()));
    let path = write_file("no-tokenizer.gguf", &bytes);
    let p = path.to_str().unwrap();
    ferrolm(&["tokenize", "--model", p, "--text", "hi"]).fails_with(&["tokenizer", "tokenizer.ggml.model"]);
    ferrolm(&["detokenize", "--model", p, "1", "2"]).fails_with(&["tokenizer", "tokenizer.ggml.model"]);
    ferrolm(&["generate", "--model", p, "-t", "1", "-p", "hi", "-n", "2"]).fails_with(&["tokenizer", "tokenizer.ggml.model"]);
    // `info` describes what it can: the model is fine, only the tokenizer is missing.
    let run = ferrolm(&["info", "--model", p]);
    run.ok();
    assert!(run.stdout.contains("layers:        2"), "{}", run.stdout);
    assert!(run.stdout.contains("tokenizer:     unsupported") && run.stdout.contains("tokenizer.ggml.model"), "{}", run.stdout);
    assert!(run.stdout.contains("chat template: absent"), "{}", run.stdout);
}

#[test]
fn other_architecture_fails_generate_but_info_describes_it() {
    let bytes = rewrite_tiny(|key, v| Some(if key == "general.architecture" { Value::String("mamba".into()) } else { v.clone() }));
    let path = write_file("mamba.gguf", &bytes);
    let p = path.to_str().unwrap();
    ferrolm(&["generate", "--model", p, "-t", "1", "-p", "hi", "-n", "2"]).fails_with(&["mamba", "architecture"]);
    ferrolm(&["perplexity", "--model", p, "-t", "1", "--file", p]).fails_with(&["mamba"]);
    let run = ferrolm(&["info", "--model", p]);
    run.ok();
    assert!(run.stdout.contains("architecture:  mamba"), "{}", run.stdout);
    assert!(run.stdout.contains("not runnable here") && run.stdout.contains("mamba"), "{}", run.stdout);
    assert!(run.stdout.contains("tensors"), "{}", run.stdout);
    // The tokenizer does not depend on the architecture, so tokenizing still works.
    let run = ferrolm(&["tokenize", "--model", p, "--text", "hi"]);
    run.ok();
    assert_eq!(run.stdout.trim(), serde_json::to_string(&tokenize("hi", &[])).unwrap());
}

// ---------------------------------------------------------------------------------------------
// 2. tokenize / detokenize
// ---------------------------------------------------------------------------------------------

#[test]
fn tokenize_prints_one_json_array_of_ids() {
    let ids = tokenize("hello there", &[]);
    assert!(!ids.is_empty());
    // The tiny vocabulary has 3 control tokens, 256 byte tokens and 6 merges.
    assert!(ids.iter().all(|&id| id < 265), "{ids:?}");
    assert!(ids.len() < "hello there".len(), "the merges (\" t\", \"he\", ...) should shorten it: {ids:?}");
}

#[test]
fn special_tokens_parse_unless_no_special() {
    assert_eq!(tokenize("<|im_start|>", &[]), vec![1]);
    let plain = tokenize("<|im_start|>", &["--no-special"]);
    assert!(plain.len() > 1, "{plain:?}");
    assert!(!plain.contains(&1), "{plain:?}");
}

#[test]
fn tokenize_jsonl_prints_one_array_per_line_in_order() {
    let texts = ["first line", "<|im_end|>", "the end", "ünïcödé ✓"];
    let jsonl: String = texts.iter().map(|t| format!("{}\n", serde_json::json!({ "text": t }))).collect();
    let path = write_file("texts.jsonl", jsonl.as_bytes());
    let run = ferrolm(&["tokenize", "--model", tiny(), "--jsonl", path.to_str().unwrap()]);
    run.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), texts.len(), "{}", run.stdout);
    for (line, text) in lines.iter().zip(texts) {
        let ids: Vec<u32> = serde_json::from_str(line).expect("JSON array");
        assert_eq!(ids, tokenize(text, &[]), "line for {text:?}");
    }
}

#[test]
fn tokenize_jsonl_malformed_line_names_the_line_number() {
    let path = write_file("bad.jsonl", b"{\"text\": \"ok\"}\n{\"text\": \"fine\"}\nnot json at all\n");
    let p = path.to_str().unwrap();
    ferrolm(&["tokenize", "--model", tiny(), "--jsonl", p]).fails_with(&[&format!("{p}:3"), "not valid JSON"]);

    let path = write_file("no-text-field.jsonl", b"{\"text\": \"ok\"}\n{\"txt\": \"typo\"}\n");
    let p = path.to_str().unwrap();
    ferrolm(&["tokenize", "--model", tiny(), "--jsonl", p]).fails_with(&[&format!("{p}:2"), "\"text\""]);

    let missing = fixtures().dir.path().join("missing.jsonl");
    ferrolm(&["tokenize", "--model", tiny(), "--jsonl", missing.to_str().unwrap()]).fails_with(&["cannot open", "missing.jsonl"]);
}

#[test]
fn detokenize_round_trips_tokenize() {
    for text in ["hello there, the inner water", "<|im_start|>user\nhi<|im_end|>", "ünïcödé ✓ 😀"] {
        let ids = tokenize(text, &[]);
        let args: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let mut argv = vec!["detokenize", "--model", tiny()];
        argv.extend(args.iter().map(String::as_str));
        let run = ferrolm(&argv);
        run.ok();
        assert_eq!(run.stdout, format!("{text}\n"), "ids {ids:?}");
    }
}

#[test]
fn detokenize_out_of_range_id_fails_clearly() {
    ferrolm(&["detokenize", "--model", tiny(), "5", "100000"]).fails_with(&["100000", "outside the vocabulary", "265"]);
}

// ---------------------------------------------------------------------------------------------
// 3. generate
// ---------------------------------------------------------------------------------------------

#[test]
fn greedy_generation_is_deterministic_and_stats_go_to_stderr() {
    let first = generate(&["-p", "the weather", "--temperature", "0", "-n", "8"]);
    first.ok();
    let second = generate(&["-p", "the weather", "--temperature", "0", "-n", "8"]);
    second.ok();
    assert_eq!(first.stdout, second.stdout);
    assert!(first.stderr.contains("tok/s"), "stats belong on stderr:\n{}", first.stderr);
    assert!(!first.stdout.contains("tok/s") && !first.stdout.contains("prompt:"), "stdout holds only the text:\n{}", first.stdout);
    assert_eq!(first.stdout.matches('\n').count(), generated_text(&first).matches('\n').count() + 1);
    // A different thread count must not change greedy output.
    let threaded = ferrolm(&["generate", "--model", tiny(), "-t", "2", "-p", "the weather", "--temperature", "0", "-n", "8"]);
    threaded.ok();
    assert_eq!(threaded.stdout, first.stdout);
}

#[test]
fn sampling_same_seed_repeats_and_other_seeds_differ() {
    let sample = |seed: &str| {
        let run = generate(&["-p", "once upon", "--temperature", "0.9", "--seed", seed, "-n", "12"]);
        run.ok();
        run.stdout
    };
    let seven = sample("7");
    assert_eq!(seven, sample("7"), "the same seed must reproduce the same text");
    assert!(["8", "9", "10", "11"].iter().any(|s| sample(s) != seven), "four other seeds all gave {seven:?}");
}

#[test]
fn stop_string_is_never_printed_and_output_is_the_prefix_before_it() {
    let free = generate(&["-p", "the", "--temperature", "0", "-n", "24"]);
    free.ok();
    let text = generated_text(&free);
    // Pick two printable ASCII characters from the second half so there is a prefix to keep.
    let chars: Vec<char> = text.chars().collect();
    let stop: String = (chars.len() / 2..chars.len().saturating_sub(1))
        .map(|i| [chars[i], chars[i + 1]])
        .find(|pair| pair.iter().all(|c| c.is_ascii_graphic()))
        .map(|pair| pair.iter().collect())
        .unwrap_or_else(|| panic!("no printable pair in the greedy output {text:?}"));
    let expected = &text[..text.find(&stop).unwrap()];
    let stopped = generate(&["-p", "the", "--temperature", "0", "-n", "24", "--stop", &stop]);
    stopped.ok();
    assert!(!stopped.stdout.contains(&stop), "stop text {stop:?} printed: {:?}", stopped.stdout);
    assert_eq!(generated_text(&stopped), expected, "stop {stop:?} in {text:?}");
    assert!(stopped.stderr.contains("stop: stop string"), "{}", stopped.stderr);
}

#[test]
fn zero_max_tokens_prints_an_empty_line_and_succeeds() {
    let run = generate(&["-p", "hello", "-n", "0"]);
    run.ok();
    assert_eq!(run.stdout, "\n");
    assert!(run.stderr.contains("generated: 0 tokens"), "{}", run.stderr);
}

#[test]
fn absurd_sampling_parameters_state_the_allowed_range() {
    let cases: [(&[&str], &[&str]); 4] = [
        (&["--top-p", "0"], &["top_p", "(0, 1]"]),
        (&["--top-p", "1.5"], &["top_p", "(0, 1]", "1.5"]),
        (&["--temperature=-1"], &["temperature", ">= 0", "-1"]),
        (&["--min-p", "2"], &["min_p", "[0, 1]", "2"]),
    ];
    for (flags, needles) in cases {
        let mut args = vec!["-p", "hi", "-n", "2"];
        args.extend_from_slice(flags);
        generate(&args).fails_with(needles);
    }
}

#[test]
fn negative_temperature_written_with_a_space_is_rejected_without_panic() {
    // clap reads `-1` after a space as a flag, so this is a usage error (exit 2) rather than a
    // range error; either way it must not run or panic.
    let run = generate(&["-p", "hi", "-n", "2", "--temperature", "-1"]);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(matches!(run.code, Some(1) | Some(2)), "{run:?}");
    assert!(run.stderr.starts_with("error:"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn absurd_run_parameters_state_the_allowed_range() {
    let cases: [(&[&str], &[&str]); 3] = [
        (&["--threads", "0"], &["--threads", "between 1 and", "got 0"]),
        (&["--ctx", "0"], &["--ctx", "between 1 and", "256", "got 0"]),
        (&["--ctx", "100000"], &["--ctx", "between 1 and", "256", "got 100000"]),
    ];
    for (flags, needles) in cases {
        let mut args = vec!["generate", "--model", tiny(), "-p", "hi", "-n", "2"];
        args.extend_from_slice(flags);
        ferrolm(&args).fails_with(needles);
    }
}

#[test]
fn prompt_longer_than_ctx_gives_a_context_error() {
    let prompt = "x".repeat(40);
    generate(&["-p", &prompt, "--ctx", "8", "-n", "2"]).fails_with(&["context", "40", "8"]);
}

#[test]
fn prompt_that_exactly_fills_ctx_generates_one_token_then_stops() {
    let prompt = "xxxxxxxx";
    assert_eq!(tokenize(prompt, &[]).len(), 8);
    let run = generate(&["-p", prompt, "--ctx", "8", "-n", "5", "--temperature", "0"]);
    run.ok();
    assert!(run.stderr.contains("stop: context full") || run.stderr.contains("stop: end of generation"), "{}", run.stderr);
    assert!(run.stderr.contains("generated: 1 tokens"), "{}", run.stderr);
}

#[test]
fn empty_prompt_fails_clearly() {
    generate(&["-p", "", "-n", "2"]).fails_with(&["prompt is empty"]);
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
    let path = write_file("prose.txt", PROSE.as_bytes());
    let run = ferrolm(&["perplexity", "--model", tiny(), "-t", "1", "--file", path.to_str().unwrap(), "--ctx", "16", "--json"]);
    run.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stdout);
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("one JSON object");
    let ppl = v["ppl"].as_f64().expect("ppl is a number");
    assert!(ppl.is_finite() && ppl > 1.0, "ppl {ppl}");
    let tokens = v["tokens"].as_u64().expect("tokens is a number");
    assert_eq!(tokens as usize, tokenize(PROSE, &[]).len());
    assert_eq!(v["chunks"].as_u64(), Some(tokens / 16));
}

#[test]
fn perplexity_text_shorter_than_one_chunk_fails_clearly() {
    let path = write_file("short.txt", b"hi there");
    let p = path.to_str().unwrap();
    ferrolm(&["perplexity", "--model", tiny(), "--file", p, "--ctx", "16"]).fails_with(&["fewer than one chunk", "16"]);
}

#[test]
fn perplexity_missing_or_binary_file_fails_clearly() {
    let missing = fixtures().dir.path().join("no-such-text.txt");
    ferrolm(&["perplexity", "--model", tiny(), "--file", missing.to_str().unwrap()]).fails_with(&["cannot read", "no-such-text.txt"]);
    let binary = write_file("binary.txt", &[0xff, 0xfe, 0x00, 0x80, 0xc3]);
    ferrolm(&["perplexity", "--model", tiny(), "--file", binary.to_str().unwrap()]).fails_with(&["UTF-8", "binary.txt"]);
}

#[test]
fn perplexity_ctx_out_of_range_states_the_range() {
    let path = write_file("prose-ctx.txt", PROSE.as_bytes());
    let p = path.to_str().unwrap();
    ferrolm(&["perplexity", "--model", tiny(), "--file", p, "--ctx", "2"]).fails_with(&["--ctx", "between 4 and", "256", "got 2"]);
    ferrolm(&["perplexity", "--model", tiny(), "--file", p, "--ctx", "100000"]).fails_with(&["--ctx", "between 4 and", "256"]);
}

// ---------------------------------------------------------------------------------------------
// 5. chat
// ---------------------------------------------------------------------------------------------

#[test]
fn chat_answers_piped_input_then_exits() {
    let run = ferrolm_with_stdin(&["chat", "--model", tiny(), "-t", "1", "-n", "8"], Some("hello\n/exit\n"));
    run.ok();
    assert!(!run.stdout.is_empty(), "no answer on stdout; stderr:\n{}", run.stderr);
    assert_eq!(run.stderr.matches("tok/s").count(), 1, "one turn, one stats line:\n{}", run.stderr);
}

#[test]
fn chat_with_closed_stdin_exits_cleanly() {
    let run = ferrolm(&["chat", "--model", tiny(), "-t", "1", "-n", "4"]);
    run.ok();
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn chat_turn_too_long_for_ctx_is_refused_and_chat_goes_on() {
    let input = format!("{}\nhi\n", "word ".repeat(40));
    let run = ferrolm_with_stdin(&["chat", "--model", tiny(), "-t", "1", "-n", "2", "--ctx", "32"], Some(&input));
    run.ok();
    assert!(run.stderr.contains("no longer fits the context of 32"), "{}", run.stderr);
    // The short second turn still gets an answer.
    assert_eq!(run.stderr.matches("tok/s").count(), 1, "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// 6. info
// ---------------------------------------------------------------------------------------------

#[test]
fn info_describes_the_tiny_model() {
    let run = ferrolm(&["info", "--model", tiny()]);
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
    assert!(field("tokenizer").starts_with("265 tokens"), "{}", field("tokenizer"));
    assert!(run.stdout.contains("Q4_1") && run.stdout.contains("Q8_0") && run.stdout.contains("F32"), "{}", run.stdout);
}

#[test]
fn no_subcommand_is_a_usage_error_not_a_panic() {
    let run = ferrolm(&[]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(!run.stderr.contains("panicked"));
    assert!(run.stderr.contains("Usage"), "{}", run.stderr);
}
