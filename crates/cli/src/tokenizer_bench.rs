//! `ferrolm tokenizer-bench`: single-thread encode throughput of a model's tokenizer, in MB/s.
//!
//! The corpus is a list of documents, each encoded on its own with `Tokenizer::encode(text,
//! false)` (special-token spellings stay plain text), the way `benches/tokenizer_vs_peers.py`
//! drives Hugging Face `tokenizers` (`encode` per document) and tiktoken (`encode_ordinary`), so
//! the three numbers are comparable. One warm-up pass, then `reps` timed passes; the median is
//! reported. MB is 10^6 bytes of UTF-8 input.
//!
//! `--pathological` times inputs that make a naive BPE quadratic (one letter repeated; long runs
//! without whitespace, which the pre-tokenizer cannot split) at three sizes, so that linear time
//! shows as a constant ns/byte.

use anyhow::{bail, Context, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokenizer::Tokenizer;

/// The default corpus is grown from the golden fixture's texts to at least this many bytes
/// (1 MiB, so it is over 1 MB either way one counts).
const DEFAULT_CORPUS_BYTES: usize = 1 << 20;

/// Sizes of each pathological input, in bytes.
const PATHOLOGICAL_SIZES: [usize; 3] = [100_000, 300_000, 1_000_000];

/// Settings of one tokenizer-bench run.
pub struct TokenizerBenchArgs {
    /// A corpus: `.jsonl` of `{"text": ...}` documents, or any other file as one document.
    pub file: Option<PathBuf>,
    pub reps: usize,
    pub json: bool,
    pub pathological: bool,
}

/// Documents to encode, and where they came from.
struct Corpus {
    docs: Vec<String>,
    source: String,
}

impl Corpus {
    fn bytes(&self) -> usize {
        self.docs.iter().map(String::len).sum()
    }
}

/// xorshift64: a fixed, dependency-free stream so the default corpus and the pathological inputs
/// are the same on every run and machine.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn read_jsonl_texts(path: &Path) -> Result<Vec<String>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut texts = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: cannot read the line as UTF-8", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("{}:{}: not valid JSON", path.display(), n + 1))?;
        let text = value
            .get("text")
            .and_then(|t| t.as_str())
            .with_context(|| format!("{}:{}: expected an object with a string field \"text\"", path.display(), n + 1))?;
        texts.push(text.to_string());
    }
    Ok(texts)
}

fn load_corpus(file: Option<&Path>) -> Result<Corpus> {
    if let Some(path) = file {
        let docs = if path.extension().is_some_and(|e| e == "jsonl") {
            read_jsonl_texts(path)?
        } else {
            vec![std::fs::read_to_string(path).with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?]
        };
        return Ok(Corpus { docs, source: path.display().to_string() });
    }
    // The fixture lives in the source tree: a bench is run from a checkout, and this keeps 1.3 MB
    // of test data out of the binary.
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizer_golden.jsonl");
    let golden = golden.canonicalize().unwrap_or(golden);
    let texts = read_jsonl_texts(&golden).context("the default corpus comes from the source tree; pass --file CORPUS elsewhere")?;
    Ok(Corpus {
        docs: grow_corpus(texts, DEFAULT_CORPUS_BYTES),
        source: format!("{} (distinct texts, repeated in shuffled order to >= {} bytes)", golden.display(), DEFAULT_CORPUS_BYTES),
    })
}

/// The distinct non-empty texts in file order, then shuffled copies of them until the corpus
/// holds at least `min_bytes`. Each copy has its own order so that no pass repeats the previous
/// sequence of documents.
fn grow_corpus(texts: Vec<String>, min_bytes: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let distinct: Vec<String> = texts.into_iter().filter(|t| !t.is_empty() && seen.insert(t.clone())).collect();
    let mut docs = distinct.clone();
    let mut total: usize = docs.iter().map(String::len).sum();
    if total == 0 {
        return docs;
    }
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    while total < min_bytes {
        let mut copy = distinct.clone();
        for i in (1..copy.len()).rev() {
            copy.swap(i, rng.below(i + 1));
        }
        total += copy.iter().map(String::len).sum::<usize>();
        docs.extend(copy);
    }
    docs
}

/// Median of a non-empty sample.
fn median(xs: &[f64]) -> f64 {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// One pass over the corpus: elapsed time and tokens produced.
fn encode_pass(tok: &Tokenizer, docs: &[String]) -> (Duration, usize) {
    let start = Instant::now();
    let mut tokens = 0;
    for doc in docs {
        // black_box keeps the ids observable, so the encode cannot be optimized away.
        tokens += std::hint::black_box(tok.encode(doc, false)).len();
    }
    (start.elapsed(), tokens)
}

/// One pathological input kind: a name and a generator of an input of (about) n bytes.
struct Pathology {
    name: &'static str,
    make: fn(usize) -> String,
}

/// Random ASCII from `alphabet`, n bytes, with a fixed seed.
fn random_ascii(alphabet: &[u8], n: usize) -> String {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    (0..n).map(|_| alphabet[rng.below(alphabet.len())] as char).collect()
}

const PATHOLOGIES: [Pathology; 3] = [
    // One piece of n identical bytes: the classic quadratic case for a merge loop that rescans
    // the whole piece after each merge.
    Pathology { name: "repeat-a", make: |n| "a".repeat(n) },
    // One piece of n random letters: no whitespace or digit cuts it, and the merges are varied.
    Pathology { name: "letters", make: |n| random_ascii(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", n) },
    // Letters, digits and punctuation without any whitespace.
    Pathology {
        name: "no-spaces",
        make: |n| random_ascii(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`", n),
    },
];

/// Timing of one pathological input.
struct PathologyTiming {
    name: &'static str,
    bytes: usize,
    tokens: usize,
    seconds: f64,
}

fn time_pathologies(tok: &Tokenizer, reps: usize) -> Vec<PathologyTiming> {
    // Each size is encoded a few times and the median kept; three is enough to drop an outlier
    // while keeping a run that turned out quadratic from taking much longer.
    let reps = reps.clamp(1, 3);
    let mut timings = Vec::new();
    for pathology in &PATHOLOGIES {
        for &bytes in &PATHOLOGICAL_SIZES {
            let text = (pathology.make)(bytes);
            let mut tokens = 0;
            let seconds: Vec<f64> = (0..reps)
                .map(|_| {
                    let start = Instant::now();
                    tokens = std::hint::black_box(tok.encode(&text, false)).len();
                    start.elapsed().as_secs_f64()
                })
                .collect();
            timings.push(PathologyTiming { name: pathology.name, bytes: text.len(), tokens, seconds: median(&seconds) });
        }
    }
    timings
}

/// Runs the benchmark and prints a summary or one JSON object.
pub fn run(tok: &Tokenizer, args: &TokenizerBenchArgs, model_name: &str) -> Result<()> {
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let corpus = load_corpus(args.file.as_deref())?;
    let bytes = corpus.bytes();
    if bytes == 0 {
        bail!("the corpus {} has no text to encode", corpus.source);
    }
    encode_pass(tok, &corpus.docs);
    let mut seconds = Vec::with_capacity(args.reps);
    let mut tokens = 0;
    for _ in 0..args.reps {
        let (elapsed, n) = encode_pass(tok, &corpus.docs);
        seconds.push(elapsed.as_secs_f64());
        tokens = n;
    }
    let mb_per_s: Vec<f64> = seconds.iter().map(|s| bytes as f64 / s / 1e6).collect();
    let median_seconds = median(&seconds);
    let pathologies = if args.pathological { time_pathologies(tok, args.reps) } else { Vec::new() };

    if args.json {
        let patho: Vec<serde_json::Value> = pathologies
            .iter()
            .map(|p| serde_json::json!({"input": p.name, "bytes": p.bytes, "tokens": p.tokens, "seconds": p.seconds, "ns_per_byte": p.seconds * 1e9 / p.bytes as f64}))
            .collect();
        let mut out = serde_json::json!({
            "model": model_name,
            "corpus": corpus.source,
            "documents": corpus.docs.len(),
            "bytes": bytes,
            "tokens": tokens,
            "reps": args.reps,
            "threads": 1,
            "seconds": seconds,
            "mb_per_s": mb_per_s,
            "mb_per_s_median": bytes as f64 / median_seconds / 1e6,
            "tokens_per_s_median": tokens as f64 / median_seconds,
        });
        if args.pathological {
            out["pathological"] = serde_json::Value::Array(patho);
        }
        println!("{out}");
        return Ok(());
    }

    println!("model:   {model_name}");
    println!("corpus:  {}", corpus.source);
    println!("         {} documents, {bytes} bytes, {tokens} tokens ({:.2} bytes/token)", corpus.docs.len(), bytes as f64 / tokens.max(1) as f64);
    let runs: Vec<String> = mb_per_s.iter().map(|r| format!("{r:.1}")).collect();
    println!(
        "encode:  {:.1} MB/s, {:.2} M tokens/s (median of {} single-thread passes after one warm-up; runs: {} MB/s)",
        bytes as f64 / median_seconds / 1e6,
        tokens as f64 / median_seconds / 1e6,
        args.reps,
        runs.join(" ")
    );
    if args.pathological {
        println!();
        println!("{:<10} {:>10} {:>9} {:>10} {:>8}", "input", "bytes", "tokens", "ms", "ns/byte");
        for p in &pathologies {
            println!("{:<10} {:>10} {:>9} {:>10.2} {:>8.2}", p.name, p.bytes, p.tokens, p.seconds * 1e3, p.seconds * 1e9 / p.bytes as f64);
        }
        println!("(linear time shows as the same ns/byte at each size)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_corpus_reaches_the_size_with_distinct_texts_first() {
        let texts = vec!["abc".to_string(), "de".to_string(), "abc".to_string(), String::new()];
        let docs = grow_corpus(texts, 20);
        assert_eq!(&docs[..2], &["abc".to_string(), "de".to_string()]);
        let total: usize = docs.iter().map(String::len).sum();
        assert!(total >= 20, "grew to {total} bytes");
        assert_eq!(docs.len() % 2, 0, "whole copies only: {docs:?}");
    }

    #[test]
    fn grow_corpus_of_nothing_terminates() {
        assert!(grow_corpus(vec![String::new()], 100).is_empty());
    }

    #[test]
    fn pathological_inputs_have_the_requested_size_and_no_whitespace() {
        for p in &PATHOLOGIES {
            let text = (p.make)(1000);
            assert_eq!(text.len(), 1000, "{}", p.name);
            assert!(!text.chars().any(char::is_whitespace), "{}", p.name);
        }
    }

    #[test]
    fn median_of_even_and_odd_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
