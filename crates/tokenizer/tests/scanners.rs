//! The hand-written scanners of `tokenizer::scan` must cut text exactly where their regex does,
//! and the general `Split` path must do what Hugging Face's does.
//!
//! The reference for a scanner is fancy-regex running the very regex the scanner implements
//! (`Pattern::regex`, Hugging Face's spelling), its matches and the gaps between them taken as
//! pieces, as Hugging Face's `Split` with `Isolated` takes them. Three kinds of input:
//! - every string of up to four characters over one representative of each class of character
//!   the patterns tell apart (the wordchipper method), with two alphabets of 20: one for the
//!   structure of pieces, one for contractions;
//! - random strings (proptest), from those representatives and from all of Unicode;
//! - the mixed corpus of tests/fixtures/tokenizer_golden.jsonl.
//!
//! Hugging Face itself is checked through fixtures made by tools/make_trained_bpe_fixtures.py:
//! its character classes for every code point, and its `Split` on short traps.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::LazyLock;

use fancy_regex::Regex;
use proptest::prelude::*;
use serde_json::Value;
use tokenizer::scan::{classify, Class, Pattern, RegexSplit, SplitBehavior};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

/// One representative per class of what the patterns test, with every UTF-8 length where the
/// class has several: letters (ASCII, a contraction ending, Lm, Lo, a supplementary-plane Lu),
/// numbers (ASCII Nd, Arabic-Indic Nd, Nl, No), the apostrophe and its typographic cousin,
/// space, tab, `\r`, `\n`, no-break space, punctuation, emoji, a combining mark, ZWJ.
const STRUCTURE_ALPHABET: [char; 20] =
    ['a', 's', 'ʰ', '中', '𝐀', '7', '٣', 'Ⅻ', '½', '\'', '’', ' ', '\t', '\r', '\n', '\u{a0}', '.', '😀', '\u{301}', '\u{200d}'];

/// The apostrophe, every contraction letter in both cases (and U+017F LONG S, an `s` under
/// case folding), a space and a punctuation mark.
const CONTRACTION_ALPHABET: [char; 20] = ['\'', 's', 'S', 'ſ', 't', 'T', 'r', 'R', 'e', 'E', 'v', 'V', 'm', 'M', 'l', 'L', 'd', 'D', ' ', '.'];

/// Further characters for the random tests: more whitespace kinds (U+0085, U+2028, U+3000, and
/// 0x1C-0x1F, which are *not* White_Space), controls, symbols, other scripts.
const EXTRA_CHARS: [char; 16] = [
    '\u{0b}',
    '\u{0c}',
    '\u{85}',
    '\u{2028}',
    '\u{3000}',
    '\u{1c}',
    '\u{1f}',
    '\0',
    '\u{7f}',
    '$',
    '\u{fffd}',
    'Ж',
    'ह',
    '\u{1F1FA}',
    '𝟙',
    '\u{feff}',
];

static REFERENCES: LazyLock<Vec<(Pattern, Regex)>> = LazyLock::new(|| {
    Pattern::ALL
        .into_iter()
        .map(|pattern| {
            let regex = Regex::new(pattern.regex()).expect("the pattern compiles");
            (pattern, regex)
        })
        .collect()
});

/// The regex's matches and the gaps between them, in order.
fn regex_pieces(regex: &Regex, text: &str) -> Vec<Range<usize>> {
    let mut pieces = Vec::new();
    let mut previous_end = 0;
    for found in regex.find_iter(text) {
        let found = found.expect("short texts stay under the backtracking limit");
        if found.start() > previous_end {
            pieces.push(previous_end..found.start());
        }
        pieces.push(found.start()..found.end());
        previous_end = found.end();
    }
    if previous_end < text.len() {
        pieces.push(previous_end..text.len());
    }
    pieces
}

fn scanner_pieces(pattern: Pattern, text: &str) -> Vec<Range<usize>> {
    pattern.pieces(text).collect()
}

fn show(text: &str, pieces: &[Range<usize>]) -> Vec<String> {
    pieces.iter().map(|range| text.get(range.clone()).unwrap_or("<not a str range>").to_string()).collect()
}

/// `None` when all three scanners agree with their regex on `text`, else a description.
fn disagreement(text: &str) -> Option<String> {
    for (pattern, regex) in REFERENCES.iter() {
        let expected = regex_pieces(regex, text);
        let got = scanner_pieces(*pattern, text);
        if got != expected {
            return Some(format!("{pattern:?} on {text:?}: scanner {:?}, regex {:?}", show(text, &got), show(text, &expected)));
        }
    }
    None
}

/// Check every string of 1 to 4 characters over `alphabet`, on two threads; returns how many
/// strings were checked.
fn check_all_short_strings(alphabet: &[char]) -> usize {
    let n = alphabet.len();
    let mut jobs: Vec<(usize, usize)> = Vec::new();
    for length in 1..=4u32 {
        // Strings are numbered 0..n^length in base n; n jobs per length keep both threads busy.
        let per_job = n.pow(length - 1);
        for job in 0..n {
            jobs.push((length as usize, job * per_job));
        }
    }
    let workers = 2;
    let results: Vec<(Vec<String>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let jobs = &jobs;
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    let mut checked = 0usize;
                    let mut text = String::new();
                    for &(length, first_index) in jobs.iter().skip(worker).step_by(workers) {
                        let count = n.pow(length as u32 - 1);
                        for index in first_index..first_index + count {
                            text.clear();
                            let mut rest = index;
                            for _ in 0..length {
                                text.push(alphabet[rest % n]);
                                rest /= n;
                            }
                            if let Some(failure) = disagreement(&text) {
                                failures.push(failure);
                            }
                            checked += 1;
                        }
                    }
                    (failures, checked)
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("worker finished")).collect()
    });
    let checked = results.iter().map(|(_, checked)| checked).sum();
    let failures: Vec<String> = results.into_iter().flat_map(|(failures, _)| failures).collect();
    assert!(failures.is_empty(), "{} disagreements, first ones:\n{}", failures.len(), failures[..failures.len().min(10)].join("\n"));
    checked
}

#[test]
fn every_short_string_over_the_structure_classes_agrees_with_regex() {
    assert_eq!(check_all_short_strings(&STRUCTURE_ALPHABET), 168_420);
}

#[test]
fn every_short_string_over_the_contraction_letters_agrees_with_regex() {
    assert_eq!(check_all_short_strings(&CONTRACTION_ALPHABET), 168_420);
}

fn any_text() -> impl Strategy<Value = String> {
    let chars: Vec<char> = STRUCTURE_ALPHABET.iter().chain(&CONTRACTION_ALPHABET).chain(&EXTRA_CHARS).copied().collect();
    let one = prop_oneof![
        4 => prop::sample::select(chars),
        1 => any::<char>(),
    ];
    prop::collection::vec(one, 0..40).prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn scanners_agree_with_regex_on_random_text(text in any_text()) {
        prop_assert_eq!(disagreement(&text), None);
    }

    #[test]
    fn scanners_agree_with_regex_on_any_unicode(text in "\\PC{0,24}|[\\s\\S]{0,24}") {
        prop_assert_eq!(disagreement(&text), None);
    }
}

fn read_jsonl(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{path}: {error}"))).collect()
}

#[test]
fn scanners_agree_with_regex_on_the_golden_corpus() {
    let mut texts = Vec::new();
    for file in ["tokenizer_golden.jsonl", "trained_bpe/heldout_ids.jsonl"] {
        for record in read_jsonl(&format!("{FIXTURES}/{file}")) {
            let text = record["text"].as_str().expect("text is a string");
            texts.push(text.to_string());
        }
    }
    let texts: HashSet<String> = texts.into_iter().collect();
    let total: usize = texts.iter().map(String::len).sum();
    assert!(total > 300_000, "only {total} bytes of corpus");
    for text in &texts {
        if let Some(failure) = disagreement(text) {
            panic!("{failure}");
        }
    }
}

/// The class that the fixture's Oniguruma ranges give `code`.
fn onig_class(classes: &Value, code: u32) -> Option<&'static str> {
    for name in ["L", "N", "s"] {
        let ranges = classes[name].as_array().expect("ranges");
        // Ranges are sorted: binary search on the first code point.
        let at = ranges.partition_point(|range| range[0].as_u64().expect("first") <= code as u64);
        if at > 0 && code as u64 <= ranges[at - 1][1].as_u64().expect("last") {
            return Some(name);
        }
    }
    None
}

#[test]
fn classes_equal_hugging_face_oniguruma_for_every_code_point() {
    let path = format!("{FIXTURES}/trained_bpe/onig_classes.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let classes: Value = serde_json::from_str(&text).expect("valid JSON");
    let mut mismatches = Vec::new();
    for code in 0..=0x10FFFFu32 {
        let Some(c) = char::from_u32(code) else {
            continue;
        };
        let ours = match classify(c) {
            Class::Letter => Some("L"),
            Class::Number => Some("N"),
            class if class.is_whitespace() => Some("s"),
            _ => None,
        };
        let theirs = onig_class(&classes, code);
        if ours != theirs {
            mismatches.push(format!("U+{code:04X}: ours {ours:?}, Oniguruma {theirs:?}"));
        }
    }
    assert!(mismatches.is_empty(), "{} code points differ, first ones:\n{}", mismatches.len(), mismatches[..mismatches.len().min(20)].join("\n"));
}

#[test]
fn classes_equal_the_regex_engine_for_every_code_point() {
    let letter = Regex::new(r"^\p{L}$").expect("compiles");
    let number = Regex::new(r"^\p{N}$").expect("compiles");
    let space = Regex::new(r"^\s$").expect("compiles");
    let mut buffer = [0u8; 4];
    for code in 0..=0x10FFFFu32 {
        let Some(c) = char::from_u32(code) else {
            continue;
        };
        let text = c.encode_utf8(&mut buffer);
        let is = |regex: &Regex| regex.is_match(text).expect("no backtracking");
        let theirs = if is(&letter) {
            Some(Class::Letter)
        } else if is(&number) {
            Some(Class::Number)
        } else if is(&space) {
            None
        } else {
            Some(Class::Other)
        };
        let ours = classify(c);
        match theirs {
            None => assert!(ours.is_whitespace(), "U+{code:04X}: {ours:?}, regex \\s"),
            Some(class) => assert_eq!(ours, class, "U+{code:04X}"),
        }
    }
}

#[test]
fn regex_split_equals_hugging_face_split() {
    let cases = read_jsonl(&format!("{FIXTURES}/trained_bpe/split_cases.jsonl"));
    assert!(cases.len() >= 700, "only {} cases", cases.len());
    let mut scanned = 0;
    for case in &cases {
        let behavior_name = case["behavior"].as_str().expect("behavior");
        let behavior = SplitBehavior::from_name(behavior_name).expect("known behaviour");
        let invert = case["invert"].as_bool().expect("invert");
        let split = match (case["pattern"].get("Regex"), case["pattern"].get("String")) {
            (Some(Value::String(regex)), _) => RegexSplit::new(regex, behavior, invert),
            (_, Some(Value::String(literal))) => RegexSplit::literal(literal, behavior, invert),
            _ => panic!("pattern neither Regex nor String: {}", case["pattern"]),
        }
        .expect("the pattern compiles");
        scanned += usize::from(split.scanner().is_some());
        let text = case["text"].as_str().expect("text");
        let expected: Vec<&str> = case["pieces"].as_array().expect("pieces").iter().map(|piece| piece.as_str().expect("piece")).collect();
        let got: Vec<&str> = split.pieces(text).expect("no backtracking limit").into_iter().map(|range| &text[range]).collect();
        assert_eq!(got, expected, "{} {behavior_name} invert={invert} on {text:?}", case["pattern"]);
    }
    // The three known patterns, isolated and not inverted, on each text: the scanners' share.
    assert_eq!(scanned, 3 * 7);
}

#[test]
fn long_s_is_a_contraction_for_hugging_face_but_not_for_gpt2() {
    // Unicode simple case folding maps U+017F to 's', so `(?i:'s)` matches "'ſ" and "'ſs" is
    // cut after the contraction; Hugging Face's Oniguruma does so (split_cases.jsonl holds its
    // answer), and llama.cpp, which matches `'[sS]`, keeps "'ſs" whole as an apostrophe and a
    // word. GPT-2's pattern is case-sensitive.
    let text = "'ſs";
    let cut = |pattern: Pattern| -> Vec<&str> { pattern.pieces(text).map(|range| &text[range]).collect() };
    assert_eq!(cut(Pattern::Llama3), ["'ſ", "s"]);
    assert_eq!(cut(Pattern::Qwen2), ["'ſ", "s"]);
    assert_eq!(cut(Pattern::Gpt2), ["'", "ſs"]);
}

#[test]
fn separators_1c_to_1f_are_not_whitespace() {
    // Python's str.isspace() says they are; White_Space, Rust's regex \s and Oniguruma's \s say
    // they are not. As punctuation, U+001C joins the space before it; as whitespace it would
    // have made " " and "\x1cx".
    for c in ['\u{1c}', '\u{1d}', '\u{1e}', '\u{1f}'] {
        assert_eq!(classify(c), Class::Other, "U+{:04X}", c as u32);
    }
    let text = " \u{1c}x";
    let llama3: Vec<&str> = Pattern::Llama3.pieces(text).map(|r| &text[r]).collect();
    assert_eq!(llama3, [" \u{1c}", "x"]);
}

/// The `Tokenizer`'s pre-tokenizers for the Llama 3 family are the scanners, by their GGUF names.
#[test]
fn gguf_pre_tokenizer_names_reach_the_llama3_and_qwen2_scanners() {
    use tokenizer::PreTokenizer;
    let text = "Hello, world! 12345 tokens\n\n  it's  ＡＢＣ";
    for (name, pattern) in [("llama-bpe", Pattern::Llama3), ("llama3", Pattern::Llama3), ("qwen2", Pattern::Qwen2)] {
        let pre = PreTokenizer::from_name(name).expect("known name");
        let got: Vec<&str> = pre.pieces(text).collect();
        let want: Vec<&str> = pattern.pieces(text).map(|r| &text[r]).collect();
        assert_eq!(got, want, "{name}");
    }
    assert!(PreTokenizer::from_name("viking").is_none());
}
