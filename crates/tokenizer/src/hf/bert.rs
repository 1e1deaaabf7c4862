//! BERT's character classes and the pre-tokenizers that only cut (BertPreTokenizer, Whitespace,
//! WhitespaceSplit, Digits, Punctuation); `pretok.rs` runs them with the others.
//!
//! The classes follow Hugging Face `tokenizers` exactly, tables included: control characters
//! (`Cc`, `Cf`, `Co`) and punctuation (`P*`) come from the `unicode_categories` crate, which has
//! Unicode 9 tables, because that is what Hugging Face uses; with today's tables ~130 code points
//! would be classed differently (U+2E43..U+2E5D are punctuation only since Unicode 10, U+0890 is a
//! format character only since Unicode 14, ...). Whitespace, numbers and `\w` come from Rust's own
//! tables, as in Hugging Face. `tests/hf_wordpiece.rs` checks every code point against it.

use std::ops::Range;

use unicode_categories::UnicodeCategories;
use unicode_general_category::{get_general_category, GeneralCategory};

use super::spec::{PreTokenizerSpec, SplitBehavior};

/// BERT whitespace: tab, newline, carriage return and White_Space.
pub(crate) fn is_bert_whitespace(c: char) -> bool {
    c.is_whitespace()
}

/// BERT control characters: `Cc`, `Cf` and `Co` (Unicode 9) except tab, newline and carriage
/// return, which count as whitespace. Note that `\x0B`, `\x0C` and `\x85` are controls here even
/// though they are also White_Space: cleaning removes them rather than making them spaces.
pub(crate) fn is_bert_control(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r');
    }
    c.is_other()
}

/// The CJK ideograph blocks that BERT puts spaces around (the table of Hugging Face and of the
/// original BERT; it leaves out U+2B820..U+2B91F, and Hangul, kana and CJK punctuation).
pub(crate) fn is_chinese_char(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

/// BERT punctuation: every ASCII punctuation character (which includes symbols such as `$`, `+`,
/// `^` and `` ` ``) and the Unicode `P*` categories (Unicode 9).
pub(crate) fn is_bert_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    c.is_punctuation()
}

/// `\w` of the Rust `regex` crate (Unicode): Alphabetic, marks, decimal digits, connector
/// punctuation and the joiners U+200C/U+200D. Hugging Face's `regex` has Unicode 16 tables and
/// Rust's `char::is_alphabetic` may be newer, so characters that Unicode 16 leaves unassigned
/// (per `unicode-general-category`, pinned at 16.0) are not word characters.
pub(crate) fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    if matches!(c, '\u{200C}' | '\u{200D}') {
        return true;
    }
    use GeneralCategory as G;
    match get_general_category(c) {
        G::Unassigned => false,
        G::NonspacingMark | G::SpacingMark | G::EnclosingMark | G::DecimalNumber | G::ConnectorPunctuation => true,
        _ => c.is_alphabetic(),
    }
}

/// A pre-tokenizer that only cuts, never changes the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Splitter {
    Bert,
    Whitespace,
    WhitespaceSplit,
    Digits { individual_digits: bool },
    Punctuation { behavior: SplitBehavior },
}

impl Splitter {
    /// The splitter for a spec, or `None` for the pre-tokenizers that are not simple cutters.
    pub fn from_spec(spec: &PreTokenizerSpec) -> Option<Splitter> {
        Some(match spec {
            PreTokenizerSpec::Bert => Splitter::Bert,
            PreTokenizerSpec::Whitespace => Splitter::Whitespace,
            PreTokenizerSpec::WhitespaceSplit => Splitter::WhitespaceSplit,
            PreTokenizerSpec::Digits { individual_digits } => Splitter::Digits { individual_digits: *individual_digits },
            PreTokenizerSpec::Punctuation { behavior } => Splitter::Punctuation { behavior: *behavior },
            PreTokenizerSpec::Sequence(_)
            | PreTokenizerSpec::ByteLevel { .. }
            | PreTokenizerSpec::Split { .. }
            | PreTokenizerSpec::Metaspace { .. } => return None,
        })
    }

    /// Cut `text[range]` into non-empty pieces, pushed to `out` in order as byte ranges of
    /// `text`.
    pub fn split(&self, text: &str, range: Range<usize>, out: &mut Vec<Range<usize>>) {
        let Some(slice) = text.get(range.clone()) else {
            return;
        };
        let base = range.start;
        match self {
            Splitter::Bert => split_bert(slice, base, out),
            Splitter::Whitespace => split_whitespace(slice, base, out),
            Splitter::WhitespaceSplit => split_by(slice, base, char::is_whitespace, SplitBehavior::Removed, out),
            Splitter::Digits { individual_digits } => {
                let behavior = if *individual_digits { SplitBehavior::Isolated } else { SplitBehavior::Contiguous };
                split_by(slice, base, char::is_numeric, behavior, out)
            }
            Splitter::Punctuation { behavior } => split_by(slice, base, is_bert_punctuation, *behavior, out),
        }
    }
}

/// Whitespace ends a word and is dropped; each punctuation character is a word of its own.
/// One pass does what Hugging Face does in two (split on whitespace, then isolate punctuation).
fn split_bert(text: &str, base: usize, out: &mut Vec<Range<usize>>) {
    let mut word_start = None;
    for (at, c) in text.char_indices() {
        let whitespace = is_bert_whitespace(c);
        if whitespace || is_bert_punctuation(c) {
            if let Some(start) = word_start.take() {
                out.push(base + start..base + at);
            }
            if !whitespace {
                out.push(base + at..base + at + c.len_utf8());
            }
        } else if word_start.is_none() {
            word_start = Some(at);
        }
    }
    if let Some(start) = word_start {
        out.push(base + start..base + text.len());
    }
}

/// `\w+|[^\w\s]+`, keeping the matches: runs of word characters and runs of other non-space
/// characters; whitespace is dropped.
fn split_whitespace(text: &str, base: usize, out: &mut Vec<Range<usize>>) {
    #[derive(PartialEq)]
    enum Class {
        Word,
        Other,
        Space,
    }
    let class = |c: char| {
        if is_word_char(c) {
            Class::Word
        } else if c.is_whitespace() {
            Class::Space
        } else {
            Class::Other
        }
    };
    let mut run: Option<(usize, Class)> = None;
    for (at, c) in text.char_indices() {
        let kind = class(c);
        if run.as_ref().is_some_and(|(_, k)| *k == kind) {
            continue;
        }
        if let Some((start, k)) = run.take() {
            if k != Class::Space {
                out.push(base + start..base + at);
            }
        }
        run = Some((at, kind));
    }
    if let Some((start, k)) = run {
        if k != Class::Space {
            out.push(base + start..base + text.len());
        }
    }
}

/// Hugging Face's `NormalizedString::split` with a character predicate: every matching
/// character is a delimiter of its own (runs of non-matching characters are one piece), then
/// `behavior` decides what becomes of the delimiters. Empty pieces are dropped.
pub(crate) fn split_by(text: &str, base: usize, is_delimiter: impl Fn(char) -> bool, behavior: SplitBehavior, out: &mut Vec<Range<usize>>) {
    // (range, is_delimiter), covering the text.
    let mut parts: Vec<(Range<usize>, bool)> = Vec::new();
    let mut last = 0;
    for (at, c) in text.char_indices() {
        if is_delimiter(c) {
            if last < at {
                parts.push((last..at, false));
            }
            parts.push((at..at + c.len_utf8(), true));
            last = at + c.len_utf8();
        }
    }
    if last < text.len() {
        parts.push((last..text.len(), false));
    }

    let mut pieces: Vec<Range<usize>> = Vec::with_capacity(parts.len());
    match behavior {
        SplitBehavior::Removed => {
            pieces.extend(parts.into_iter().filter(|(_, d)| !d).map(|(r, _)| r));
        }
        SplitBehavior::Isolated => pieces.extend(parts.into_iter().map(|(r, _)| r)),
        SplitBehavior::Contiguous => {
            let mut previous = false;
            for (range, delimiter) in parts {
                match pieces.last_mut() {
                    Some(last) if delimiter == previous => last.end = range.end,
                    _ => pieces.push(range),
                }
                previous = delimiter;
            }
        }
        SplitBehavior::MergedWithPrevious => {
            let mut previous = false;
            for (range, delimiter) in parts {
                match pieces.last_mut() {
                    Some(last) if delimiter && !previous => last.end = range.end,
                    _ => pieces.push(range),
                }
                previous = delimiter;
            }
        }
        SplitBehavior::MergedWithNext => {
            let mut previous = false;
            for (range, delimiter) in parts.into_iter().rev() {
                match pieces.last_mut() {
                    Some(last) if delimiter && !previous => last.start = range.start,
                    _ => pieces.push(range),
                }
                previous = delimiter;
            }
            pieces.reverse();
        }
    }
    out.extend(pieces.into_iter().filter(|r| !r.is_empty()).map(|r| base + r.start..base + r.end));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(splitter: &Splitter, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        splitter.split(text, 0..text.len(), &mut out);
        out.into_iter().map(|r| text[r].to_string()).collect()
    }

    #[test]
    fn bert_isolates_ascii_symbols_as_punctuation() {
        assert_eq!(pieces(&Splitter::Bert, " a$b+c  d^e`f。"), ["a", "$", "b", "+", "c", "d", "^", "e", "`", "f", "。"]);
    }

    #[test]
    fn whitespace_keeps_runs_of_word_and_of_other_characters() {
        assert_eq!(pieces(&Splitter::Whitespace, "Hey  man!! x_1-2"), ["Hey", "man", "!!", "x_1", "-", "2"]);
    }

    #[test]
    fn split_behaviors_match_the_documented_examples() {
        let run = |behavior| {
            let mut out = Vec::new();
            split_by("the-final--countdown", 0, |c| c == '-', behavior, &mut out);
            out.into_iter().map(|r| "the-final--countdown"[r].to_string()).collect::<Vec<_>>()
        };
        assert_eq!(run(SplitBehavior::Removed), ["the", "final", "countdown"]);
        assert_eq!(run(SplitBehavior::Isolated), ["the", "-", "final", "-", "-", "countdown"]);
        assert_eq!(run(SplitBehavior::MergedWithPrevious), ["the-", "final-", "-", "countdown"]);
        assert_eq!(run(SplitBehavior::MergedWithNext), ["the", "-final", "-", "-countdown"]);
        assert_eq!(run(SplitBehavior::Contiguous), ["the", "-", "final", "--", "countdown"]);
    }

    #[test]
    fn vertical_tab_is_a_control_not_a_space_for_cleaning() {
        assert!(is_bert_control('\x0B'));
        assert!(is_bert_control('\u{85}'));
        assert!(!is_bert_control('\t'));
        assert!(is_bert_whitespace('\x0B'));
    }
}
