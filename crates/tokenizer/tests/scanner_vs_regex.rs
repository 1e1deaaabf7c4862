//! The hand-written pre-tokenizer must cut text exactly where the real GPT-2 regex does.

use std::sync::LazyLock;

use fancy_regex::Regex;
use proptest::prelude::*;
use tokenizer::PreTokenizer;

const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Characters chosen to hit every branch: contraction letters in both cases, letters of several
/// scripts, digits of several scripts and other numbers, every kind of whitespace (including
/// U+0085, U+00A0 and the 0x1C-0x1F separators that are *not* White_Space), apostrophes,
/// punctuation, combining marks, ZWJ, emoji, regional indicators, controls, unassigned.
const ALPHABET: &[char] = &[
    'a',
    's',
    't',
    'r',
    'e',
    'v',
    'm',
    'l',
    'd',
    'S',
    'T',
    'R',
    'E',
    'V',
    'M',
    'L',
    'D',
    'x',
    'é',
    'ß',
    'Ж',
    'я',
    'α',
    'Ω',
    'ש',
    'ع',
    'ह',
    '中',
    '日',
    'ก',
    '한',
    'ー',
    'ǅ',
    '0',
    '7',
    '٣',
    '४',
    '７',
    '½',
    'Ⅻ',
    '²',
    '𝟙',
    ' ',
    ' ',
    ' ',
    ' ',
    '\t',
    '\n',
    '\n',
    '\r',
    '\u{0b}',
    '\u{0c}',
    '\u{85}',
    '\u{a0}',
    '\u{1680}',
    '\u{2009}',
    '\u{2028}',
    '\u{3000}',
    '\u{1c}',
    '\u{1f}',
    '\'',
    '\'',
    '\'',
    '’',
    '!',
    '.',
    '-',
    '_',
    '{',
    '"',
    '$',
    '\u{301}',
    '\u{200b}',
    '\u{200d}',
    '😀',
    '👍',
    '🏽',
    '\u{1F1FA}',
    '\u{04}',
    '\0',
    '\u{7f}',
    '\u{fffd}',
    '\u{e000}',
    '\u{0378}',
    '\u{feff}',
];

static GPT2: LazyLock<Regex> = LazyLock::new(|| Regex::new(GPT2_PATTERN).expect("the GPT-2 pattern compiles"));
static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\p{N}").expect("\\p{N} compiles"));

fn regex_pieces(pre: PreTokenizer, text: &str) -> Vec<String> {
    let (gpt2, number) = (&*GPT2, &*NUMBER);
    let mut spans: Vec<(&str, bool)> = Vec::new();
    match pre {
        PreTokenizer::Gpt2 => spans.push((text, false)),
        PreTokenizer::SmolLm => {
            let mut last = 0;
            for found in number.find_iter(text) {
                let found = found.expect("no backtrack limit on \\p{N}");
                spans.push((&text[last..found.start()], false));
                spans.push((found.as_str(), true));
                last = found.end();
            }
            spans.push((&text[last..], false));
        }
        // Checked against their own regexes in tests/scanners.rs.
        PreTokenizer::Llama3 | PreTokenizer::Qwen2 | PreTokenizer::Chain(_) => unreachable!("only the GPT-2 family is compared here"),
    }
    let mut out = Vec::new();
    for (span, is_cut) in spans {
        if is_cut {
            out.push(span.to_string());
            continue;
        }
        for found in gpt2.find_iter(span) {
            out.push(found.expect("no backtrack limit on short text").as_str().to_string());
        }
    }
    out
}

fn scanner_pieces(pre: PreTokenizer, text: &str) -> Vec<String> {
    pre.pieces(text).map(str::to_string).collect()
}

fn mixed_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET), 0..48).prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn smollm_scanner_agrees_with_regex(text in mixed_text()) {
        prop_assert_eq!(scanner_pieces(PreTokenizer::SmolLm, &text), regex_pieces(PreTokenizer::SmolLm, &text));
    }

    #[test]
    fn gpt2_scanner_agrees_with_regex(text in mixed_text()) {
        prop_assert_eq!(scanner_pieces(PreTokenizer::Gpt2, &text), regex_pieces(PreTokenizer::Gpt2, &text));
    }

    #[test]
    fn scanner_agrees_with_regex_on_any_unicode(text in "\\PC{0,24}|[\\s\\S]{0,24}") {
        prop_assert_eq!(scanner_pieces(PreTokenizer::SmolLm, &text), regex_pieces(PreTokenizer::SmolLm, &text));
        prop_assert_eq!(scanner_pieces(PreTokenizer::Gpt2, &text), regex_pieces(PreTokenizer::Gpt2, &text));
    }
}

#[test]
fn named_cases_agree_with_regex() {
    let cases = [
        "a  b",
        "Hello, world!  It's 2024.\n\n\tdef f(x):\r\n    return x**2",
        "I'M HERE, YOU'RE THERE, WE'LL SEE, they've",
        "١٢٣ ४५६ １２３ ½ Ⅻ",
        "👨‍👩‍👧 🇺🇸  \u{3000}x\u{85}y\u{a0}z",
        "   ",
        "x   ",
        " 'sup",
    ];
    for text in cases {
        for pre in [PreTokenizer::SmolLm, PreTokenizer::Gpt2] {
            assert_eq!(scanner_pieces(pre, text), regex_pieces(pre, text), "{pre:?} on {text:?}");
        }
    }
}
