//! The test fixture shared by the CLI test files: a tiny random Llama written to a temp dir,
//! and helpers to run the `ferrolm` binary against it.
//!
//! Every run passes `--model` and points `FERROLM_CACHE_DIR` at a temp dir, so no test touches
//! the network, the real model or the user's cache. Failures must be clean: exit code 1 (not 101,
//! a panic, nor a signal), stderr starting with `error:` and naming the problem.

// Each test file uses a different part of the fixture.
#![allow(dead_code)]

use gguf::{GgmlType, GgufFile, GgufWriter, Value};
use model::testing::{tiny_llama_gguf, TinySpec};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The tiny model's bytes, built once per test process.
pub fn tiny_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| tiny_llama_gguf(&TinySpec::default()))
}

/// The tiny model with its own random output head instead of the tied embedding table.
///
/// With tied embeddings a random model mostly predicts the token it just read ("nnnn..."), so
/// every seed and every stop string look alike; an untied head of small random weights gives a
/// flatter, position-dependent distribution that sampling tests can tell apart.
pub fn varied_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let file = GgufFile::from_bytes(tiny_bytes().to_vec()).expect("tiny model parses");
        let embd = file.tensor("token_embd.weight").expect("embedding table");
        let (d, v) = (embd.dims[0], embd.dims[1]);
        let uniform = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / u32::MAX as f32 * 2.0 - 1.0;
        let head: Vec<u8> = lcg_bytes(42, 4 * (d * v) as usize).chunks_exact(4).flat_map(|b| (HEAD_SCALE * uniform(b)).to_le_bytes()).collect();
        let mut w = copy_gguf(&file, |_, v| Some(v.clone()));
        w.add_tensor("output.weight", &[d, v], GgmlType::F32, head);
        w.to_bytes().expect("varied model is valid")
    })
}

/// `n` pseudo-random bytes (a 64-bit LCG, top byte of each step).
pub fn lcg_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// Scale of the random output head of [`varied_bytes`]: logits of a few units, so temperature
/// 0.9 spreads probability over many tokens.
pub const HEAD_SCALE: f32 = 0.5;

/// A writer holding `file`'s metadata mapped through `edit` (`None` drops an entry) and all its
/// tensors unchanged.
pub fn copy_gguf(file: &GgufFile, edit: impl Fn(&str, &Value) -> Option<Value>) -> GgufWriter {
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
pub fn rewrite_tiny(edit: impl Fn(&str, &Value) -> Option<Value>) -> Vec<u8> {
    let file = GgufFile::from_bytes(tiny_bytes().to_vec()).expect("tiny model parses");
    copy_gguf(&file, edit).to_bytes().expect("rewritten model is valid")
}

/// One test's temp dir: the tiny model, an empty cache folder and any files the test writes.
/// Dropping it removes everything.
pub struct Fx {
    pub dir: tempfile::TempDir,
    pub tiny: String,
}

impl Fx {
    pub fn new() -> Fx {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("cache")).expect("cache dir");
        let path = dir.path().join("tiny.gguf");
        std::fs::write(&path, tiny_bytes()).expect("write tiny model");
        let tiny = path.to_str().expect("utf-8 temp path").to_string();
        Fx { dir, tiny }
    }

    pub fn tiny(&self) -> &str {
        &self.tiny
    }

    /// Writes `bytes` to `name` in the temp dir and returns its path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write fixture file");
        path.to_str().expect("utf-8 temp path").to_string()
    }

    /// A path in the temp dir that nothing has been written to.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().expect("utf-8 temp path").to_string()
    }

    /// The binary with `args`, isolated from the user's cache and environment; stdout and
    /// stderr piped, stdin null unless `stdin_piped`.
    pub fn command(&self, args: &[&str], stdin_piped: bool) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrolm"));
        cmd.args(args)
            .env("FERROLM_CACHE_DIR", self.dir.path().join("cache"))
            .env_remove("FERROLM_MODEL")
            .env_remove("FERROLM_KERNELS")
            .env_remove("FERROLM_SUM_ORDER")
            // A pip call would mean a test tried to fetch the default model: make it fail fast.
            .env("FERROLM_PYTHON", "/nonexistent/python-for-tests")
            .stdin(if stdin_piped { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut child = self.command(args, stdin.is_some()).spawn().expect("spawn ferrolm");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            // A process that fails before reading stdin closes it: a broken pipe here is fine.
            if let Err(e) = pipe.write_all(input.as_bytes()) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
            }
        }
        let out = child.wait_with_output().expect("wait for ferrolm");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    /// `generate` on `model` with one thread (tests run in parallel on few cores).
    pub fn generate(&self, model: &str, extra: &[&str]) -> Run {
        let mut args = vec!["generate", "--model", model, "-t", "1"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// The ids `tokenize --text` prints for `text` with the tiny model.
    pub fn tokenize(&self, text: &str, extra: &[&str]) -> Vec<u32> {
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
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success; stderr:\n{}\nstdout:\n{}", self.stderr, self.stdout);
        assert!(!self.stderr.contains("panicked"), "panic in a successful run:\n{}", self.stderr);
        self
    }

    /// A usage error, as clap's own (exit 2, no panic), whose first line is exactly `line`.
    pub fn usage_error(&self, line: &str) -> &Self {
        assert!(!self.stderr.contains("panicked"), "panicked instead of a clean error:\n{}", self.stderr);
        assert_eq!(self.code, Some(2), "expected a usage error (exit code 2); stderr:\n{}", self.stderr);
        assert_eq!(self.stderr.lines().next(), Some(line), "first line of stderr:\n{}", self.stderr);
        self
    }

    /// A clean failure: exit 1, stderr starting with `error:`, no panic, and each of `needles`
    /// (case-insensitive) in the message.
    pub fn fails_with(&self, needles: &[&str]) -> &Self {
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
