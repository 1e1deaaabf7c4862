//! BPE `tokenizer.json` files through [`HfTokenizer`] against Hugging Face `tokenizers` 0.23.3:
//! ids, offsets and decodes on held-out text. The fixtures' offsets come from the Python
//! binding, which reports characters: ours (bytes) are converted as it converts them (see
//! [`UnderTest`]).
//!
//! - tests/fixtures/trained_bpe/{gpt2,llama3,qwen2}.json (GPT-2 `ByteLevel`, Llama-3 and Qwen2
//!   `Split` + `ByteLevel`) must give the ids of heldout_ids.jsonl.
//! - tests/fixtures/hf/bpe/ (made by tools/make_hf_bpe_fixtures.py, whose docstring describes
//!   the files): a Llama-2-style SentencePiece BPE (Prepend/Replace normalizer, byte fallback,
//!   Replace/ByteFallback/Fuse/Strip decoder), a SmolLM2-style byte-level BPE (Digits then
//!   ByteLevel, bytes without a token), and variants of these and of the trained files (Metaspace
//!   with each prepend scheme, unknown tokens fused or not, `ignore_merges`, a prefix space with
//!   offset trimming, a step after ByteLevel, a Split regex without a scanner).
//! - Malformed BPE files are errors, never panics.

use std::collections::HashMap;
use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::Value;
use tokenizer::hf::HfTokenizer;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(fixtures().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn jsonl(path: &str) -> Vec<Value> {
    read(path).lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn load(path: &str) -> HfTokenizer {
    HfTokenizer::from_json(read(path).as_bytes()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

/// Undo the delta coding of spans: [start0, end0 - start0, start1 - end0, ...].
fn spans(value: &Value) -> Vec<(usize, usize)> {
    let mut flat = Vec::new();
    let mut previous = 0i64;
    for delta in value.as_array().unwrap() {
        previous += delta.as_i64().unwrap();
        flat.push(previous as usize);
    }
    flat.chunks(2).map(|pair| (pair[0], pair[1])).collect()
}

fn fnv1a(bytes: &[u8]) -> String {
    let mut hash = 0xcbf29ce484222325u64;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("{hash:016x}")
}

fn fnv_u32(values: impl IntoIterator<Item = u32>) -> String {
    let bytes: Vec<u8> = values.into_iter().flat_map(u32::to_le_bytes).collect();
    fnv1a(&bytes)
}

/// Hugging Face's BytesToCharOffsetConverter: each byte offset becomes the index of the
/// character it falls in; an end at the end of the text becomes the character count; a pair
/// whose start is not inside the text stays as it is.
fn to_chars(text: &str, offsets: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut char_of_byte = vec![0; text.len()];
    for (index, (at, c)) in text.char_indices().enumerate() {
        char_of_byte[at..at + c.len_utf8()].fill(index);
    }
    let char_at = |byte: usize| char_of_byte.get(byte).copied();
    offsets
        .iter()
        .map(|&(start, end)| match (char_at(start), char_at(end)) {
            (Some(s), Some(e)) => (s, e),
            (Some(s), None) => (s, end.checked_sub(1).and_then(char_at).map_or(s + 1, |c| c + 1)),
            _ => (start, end),
        })
        .collect()
}

/// Hugging Face's `process_offsets` (ByteLevel offset trimming), on character offsets.
fn trim_chars(tokens: &[&str], offsets: &mut [(usize, usize)], add_prefix_space: bool) {
    let is_space = |c: &char| *c == '\u{120}' || c.is_whitespace();
    for (i, (token, offsets)) in tokens.iter().zip(offsets.iter_mut()).enumerate() {
        let mut leading = token.chars().take_while(is_space).count();
        let trailing = token.chars().rev().take_while(is_space).count();
        if leading > 0 {
            if (i == 0 || offsets.0 == 0) && add_prefix_space && leading == 1 {
                leading = 0;
            }
            offsets.0 = (offsets.0 + leading).min(offsets.1);
        }
        if trailing > 0 && offsets.1 >= trailing {
            offsets.1 = (offsets.1 - trailing).max(offsets.0);
        }
    }
}

/// A tokenizer under test, and what the fixtures need to compare its offsets: they come from
/// Hugging Face's Python binding, which turns byte offsets into character offsets before the
/// post-processor runs, so that ByteLevel trimming counts in characters there (in bytes in
/// Hugging Face's Rust `encode`, as here). For a tokenizer that trims, offsets are compared
/// before trimming, converted, then trimmed in characters as Python does.
struct UnderTest {
    tok: HfTokenizer,
    /// The same tokenizer without offset trimming, and the trimming's `add_prefix_space`.
    untrimmed: Option<(HfTokenizer, bool)>,
}

impl UnderTest {
    /// Offsets of `text` as the Python binding reports them.
    fn reported_offsets(&self, text: &str) -> Vec<(usize, usize)> {
        let Some((untrimmed, add_prefix_space)) = &self.untrimmed else {
            return to_chars(text, &self.tok.encode_with_offsets(text, false).offsets);
        };
        let encoding = untrimmed.encode_with_offsets(text, false);
        let tokens: Vec<&str> = encoding.ids.iter().map(|&id| untrimmed.id_to_token(id).unwrap()).collect();
        let mut offsets = to_chars(text, &encoding.offsets);
        trim_chars(&tokens, &mut offsets, *add_prefix_space);
        offsets
    }
}

/// The longest prefix of `text` of at most `max` bytes.
fn cut(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn short(text: &str) -> String {
    text.chars().take(60).collect()
}

#[test]
fn trained_byte_level_files_give_the_held_out_ids() {
    let lines = jsonl("trained_bpe/heldout_ids.jsonl");
    let mut report = Vec::new();
    for name in ["gpt2", "llama3", "qwen2"] {
        let tok = load(&format!("trained_bpe/{name}.json"));
        let (mut same, mut tokens, mut failures) = (0, 0, Vec::new());
        for line in &lines {
            let text = line["text"].as_str().unwrap();
            let expected = ids(&line[name]);
            tokens += expected.len();
            let got = tok.encode(text, true);
            // All 256 bytes have a token, so decoding gives the text back, as in Hugging Face.
            let decoded = tok.decode(&got, false);
            if got == expected && decoded == text {
                same += 1;
            } else {
                failures.push(format!("{name} {:?}: decoded {:?}", short(text), short(&decoded)));
            }
        }
        assert!(failures.is_empty(), "{name}: {same} of {} texts identical:\n{}", lines.len(), failures[..failures.len().min(5)].join("\n"));
        report.push(format!("{name}: {same}/{} texts, {tokens} ids", lines.len()));
    }
    assert!(lines.len() > 280, "fixture too small");
    println!("{}", report.join("; "));
}

/// The held-out texts: the unique texts of tokenizer_golden.jsonl, then the extra ones.
fn held_out_texts(meta: &Value) -> Vec<String> {
    let mut texts: Vec<String> = Vec::new();
    for line in jsonl("tokenizer_golden.jsonl") {
        let text = line["text"].as_str().unwrap().to_string();
        if !texts.contains(&text) {
            texts.push(text);
        }
    }
    texts.extend(meta["extra_texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()));
    texts
}

/// A tokenizer of meta.json: its file with the patch applied.
fn variant(meta: &Value, name: &str) -> UnderTest {
    let entry = &meta["tokenizers"][name];
    let mut spec: Value = serde_json::from_str(&read(entry["file"].as_str().unwrap())).unwrap();
    for (key, value) in entry["patch"].as_object().unwrap() {
        if key == "model" {
            for (k, v) in value.as_object().unwrap() {
                spec["model"][k] = v.clone();
            }
        } else {
            spec[key] = value.clone();
        }
    }
    let build = |spec: &Value| HfTokenizer::from_json(spec.to_string().as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let tok = build(&spec);
    let post = spec["post_processor"].clone();
    let untrimmed = (post["type"] == "ByteLevel" && post["trim_offsets"] == true).then(|| {
        let add_prefix_space = post["add_prefix_space"] == true;
        spec["post_processor"]["trim_offsets"] = Value::Bool(false);
        (build(&spec), add_prefix_space)
    });
    UnderTest { tok, untrimmed }
}

/// The decoded text stored for `key`: absent when equal to the text, else verbatim or hashed.
fn decoded_matches(line: &Value, key: &str, text: &str, got: &str) -> bool {
    match (line.get(key), line.get(format!("{key}_fnv"))) {
        (Some(expected), _) => expected.as_str() == Some(got),
        (None, Some(hash)) => hash.as_str() == Some(&fnv1a(got.as_bytes())),
        (None, None) => got == text,
    }
}

/// Compare one golden line; returns what differs.
fn check_line(under_test: &UnderTest, text: &str, line: &Value, meta: &Value, name: &str) -> Vec<String> {
    let tok = &under_test.tok;
    let mut problems = Vec::new();
    let plain = tok.encode_with_offsets(text, false);
    if plain.ids.len() as u64 != line["n"].as_u64().unwrap() || fnv_u32(plain.ids.iter().copied()) != line["ids_fnv"].as_str().unwrap() {
        problems.push(format!("ids differ ({} ids, HF {})", plain.ids.len(), line["n"]));
    }
    let reported = under_test.reported_offsets(text);
    let offsets = reported.iter().flat_map(|&(s, e)| [s as u32, e as u32]);
    if fnv_u32(offsets) != line["offsets_fnv"].as_str().unwrap() {
        problems.push("offsets differ".into());
    }
    let head = cut(text, meta["head_bytes"].as_u64().unwrap() as usize);
    let head_encoding = tok.encode_with_offsets(head, false);
    if head_encoding.ids != ids(&line["head_ids"]) {
        problems.push(format!("head ids {:?}\n     HF {:?}", head_encoding.ids, ids(&line["head_ids"])));
    } else if under_test.reported_offsets(head) != spans(&line["head_spans"]) {
        problems.push(format!("head offsets {:?}\n          HF {:?} (characters)", under_test.reported_offsets(head), spans(&line["head_spans"])));
    }
    for (key, skip) in [("decoded", false), ("decoded_skip", true)] {
        let decoded = tok.decode(&plain.ids, skip);
        if !decoded_matches(line, key, text, &decoded) {
            problems.push(format!("{key} {:?}", short(&decoded)));
        }
    }
    let entry = &meta["tokenizers"][name];
    let (prefix, suffix) = (ids(&entry["special_prefix"]), ids(&entry["special_suffix"]));
    let special = tok.encode_with_offsets(text, true);
    let expected: Vec<u32> = [&prefix[..], &plain.ids, &suffix].concat();
    let zeros = |n: usize| vec![(0, 0); n];
    let expected_offsets = [zeros(prefix.len()), plain.offsets.clone(), zeros(suffix.len())].concat();
    if special.ids != expected || special.offsets != expected_offsets {
        problems.push("encoding with special tokens differs".into());
    }
    problems
}

/// Every held-out text through tokenizer `name` of meta.json, against Hugging Face.
fn check_tokenizer(name: &str) {
    let meta: Value = serde_json::from_str(&read("hf/bpe/meta.json")).unwrap();
    let texts = held_out_texts(&meta);
    let tok = variant(&meta, name);
    let (mut same, mut tokens, mut failures) = (0, 0, Vec::new());
    let lines: Vec<Value> = jsonl("hf/bpe/golden.jsonl").into_iter().filter(|line| line["tok"] == name).collect();
    for line in &lines {
        let text = &texts[line["doc"].as_u64().unwrap() as usize];
        tokens += line["n"].as_u64().unwrap();
        let problems = check_line(&tok, text, line, &meta, name);
        if problems.is_empty() {
            same += 1;
        } else {
            failures.push(format!("doc {} {:?}:\n  {}", line["doc"], short(text), problems.join("\n  ")));
        }
    }
    assert_eq!(lines.len(), texts.len(), "{name}: one golden line per text");
    assert!(
        failures.is_empty(),
        "{name}: {same} of {} texts identical ({tokens} HF tokens); first differences:\n{}",
        lines.len(),
        failures[..failures.len().min(4)].join("\n")
    );
}

#[test]
fn golden_file_lists_exactly_the_tokenizers_tested_here() {
    let meta: Value = serde_json::from_str(&read("hf/bpe/meta.json")).unwrap();
    let mut names: Vec<&str> = meta["tokenizers"].as_object().unwrap().keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut tested = TESTED.to_vec();
    tested.sort_unstable();
    assert_eq!(names, tested);
}

const TESTED: [&str; 9] = [
    "llama2",
    "smollm2",
    "llama2_metaspace_first",
    "llama2_metaspace_unk",
    "llama2_unk_unfused",
    "llama3_ignore_merges",
    "gpt2_prefix_space_trimmed",
    "gpt2_byte_level_then_digits",
    "qwen2_split_whitespace",
];

#[test]
fn llama2_sentencepiece_bpe_matches_hugging_face() {
    check_tokenizer("llama2");
}

#[test]
fn smollm2_byte_level_with_missing_bytes_matches_hugging_face() {
    check_tokenizer("smollm2");
}

#[test]
fn metaspace_prepend_first_matches_hugging_face() {
    check_tokenizer("llama2_metaspace_first");
}

#[test]
fn metaspace_split_with_fused_unknowns_matches_hugging_face() {
    check_tokenizer("llama2_metaspace_unk");
}

#[test]
fn unfused_unknowns_match_hugging_face() {
    check_tokenizer("llama2_unk_unfused");
}

#[test]
fn ignore_merges_matches_hugging_face() {
    check_tokenizer("llama3_ignore_merges");
}

#[test]
fn prefix_space_and_trimmed_offsets_match_hugging_face() {
    check_tokenizer("gpt2_prefix_space_trimmed");
}

#[test]
fn step_after_byte_level_matches_hugging_face() {
    check_tokenizer("gpt2_byte_level_then_digits");
}

#[test]
fn split_regex_without_scanner_matches_hugging_face() {
    check_tokenizer("qwen2_split_whitespace");
}

#[test]
fn malformed_bpe_files_are_errors_not_panics() {
    let good: Value = serde_json::from_str(&read("hf/bpe/llama2.json")).unwrap();
    let first_merge = good["model"]["merges"][0].clone();
    let left = first_merge[0].as_str().unwrap().to_string();

    let mut missing = good.clone();
    missing["model"]["vocab"].as_object_mut().unwrap().remove(&left);
    let error = HfTokenizer::from_json(missing.to_string().as_bytes()).unwrap_err();
    assert!(error.to_string().starts_with("model.merges[0]: token") && error.to_string().contains("is not in the vocabulary"), "{error}");

    let mut dropout = good.clone();
    dropout["model"]["dropout"] = serde_json::json!(0.1);
    let error = HfTokenizer::from_json(dropout.to_string().as_bytes()).unwrap_err();
    assert!(error.to_string().starts_with("model.dropout"), "{error}");

    let mut bad_merge = good.clone();
    bad_merge["model"]["merges"][3] = serde_json::json!(["only one"]);
    assert!(HfTokenizer::from_json(bad_merge.to_string().as_bytes()).is_err());

    let bytes = read("hf/bpe/llama2.json").into_bytes();
    for end in (0..bytes.len()).step_by(997) {
        assert!(HfTokenizer::from_json(&bytes[..end]).is_err(), "cut at {end}");
    }
}

#[test]
fn pre_tokenize_str_shows_the_spelled_words() {
    let smollm2 = load("hf/bpe/smollm2.json");
    let words = smollm2.pre_tokenize_str("Hi 42é");
    let expected: Vec<(String, (usize, usize))> = [("Hi", (0, 2)), ("\u{120}", (2, 3)), ("4", (3, 4)), ("2", (4, 5)), ("\u{c3}\u{a9}", (5, 7))]
        .iter()
        .map(|(s, o)| (s.to_string(), *o))
        .collect();
    assert_eq!(words, expected);
}

fn shared(path: &'static str) -> &'static HfTokenizer {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<HashMap<&'static str, &'static HfTokenizer>>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap();
    cache.entry(path).or_insert_with(|| Box::leak(Box::new(load(path))))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Every byte has a token (or byte-fallback token), so decoding gives the text back.
    #[test]
    fn decode_of_encode_is_the_text(text in "[a-zA-Z0-9 ,.!?'\t\n\u{e9}\u{4e2d}\u{1F600}\u{0}-\u{7f}]{0,40}") {
        for path in ["trained_bpe/gpt2.json", "trained_bpe/qwen2.json", "hf/bpe/llama2.json"] {
            let tok = shared(path);
            let ids = tok.encode(&text, false);
            prop_assert_eq!(tok.decode(&ids, false), text.clone(), "{}", path);
        }
    }

    /// Offsets lie in the text, on character boundaries, with starts in order.
    #[test]
    fn offsets_stay_in_the_text(text in "[a-z \u{4}\u{0}\u{e9}\u{4e2d}1-9\u{2581}<>|]{0,40}") {
        for path in ["hf/bpe/smollm2.json", "hf/bpe/llama2.json", "trained_bpe/llama3.json"] {
            let encoding = shared(path).encode_with_offsets(&text, false);
            let mut previous = 0;
            for &(start, end) in &encoding.offsets {
                prop_assert!(start <= end && end <= text.len(), "{}: {}..{}", path, start, end);
                prop_assert!(text.is_char_boundary(start) && text.is_char_boundary(end));
                prop_assert!(start >= previous, "{}: starts out of order", path);
                previous = start;
            }
        }
    }
}
