//! The Llama-3 and Qwen2 patterns as a single pass. Llama-3 (also DBRX, Smaug, ChatGLM-4,
//! tiktoken's cl100k_base):
//! `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
//! Qwen2 (also Qwen2.5, Qwen3, StableLM-2) is the same with `\p{N}` for `\p{N}{1,3}`: one digit
//! per piece.
//!
//! The regex tries its alternatives in order, and each is decided by the first one or two
//! characters, so the scanner reads them once and picks:
//! 1. an apostrophe and a contraction ending, in any case. Case-insensitive means Unicode simple
//!    case folding, under which U+017F LATIN SMALL LETTER LONG S is an `s`: Hugging Face
//!    (Oniguruma) and fancy-regex both cut `"'ſ"` as a contraction. llama.cpp does not: its
//!    rewrite of the pattern spells the contraction `'[sS]`, and its hand-written splitter
//!    compares the lower case of the letter with `s` (U+017F is already lower case).
//! 2. a letter run, after at most one character that is not a line break, letter or number (so
//!    `" word"`, `"\tword"`, `".word"` and `"'word"` are single pieces);
//! 3. a run of up to three numbers (one for Qwen2);
//! 4. a run of "other" characters, after at most one space, then any line breaks;
//! 5. a whitespace run that holds a line break, up to and including its last line break;
//! 6. a whitespace run less its last character when something follows it, else the whole run.

use super::classes::{Class, Table};

/// End of the piece that starts at byte `start` (< `bytes.len()`, a character boundary);
/// `max_digits` is 3 for Llama-3 and 1 for Qwen2.
#[inline]
pub(crate) fn piece_end(bytes: &[u8], start: usize, table: Table, max_digits: usize) -> usize {
    let Some((class0, len0)) = table.at(bytes, start) else {
        return start;
    };
    if bytes[start] == b'\'' {
        if let Some(len) = contraction_len(bytes, start + 1) {
            return start + 1 + len;
        }
    }
    match class0 {
        Class::Letter => return table.run_end(bytes, start + len0, Class::Letter),
        Class::Number => return digits_end(bytes, start + len0, max_digits - 1, table),
        _ => {}
    }

    let next = table.at(bytes, start + len0);
    // [^\r\n\p{L}\p{N}]?\p{L}+ with the optional character present.
    if class0 != Class::LineBreak {
        if let Some((Class::Letter, len1)) = next {
            return table.run_end(bytes, start + len0 + len1, Class::Letter);
        }
    }

    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    let others = match (class0, next) {
        (Class::Other, _) => Some(start),
        (Class::Space, Some((Class::Other, _))) => Some(start + len0),
        _ => None,
    };
    if let Some(others) = others {
        let end = table.run_end(bytes, others, Class::Other);
        return table.run_end(bytes, end, Class::LineBreak);
    }

    // \s*[\r\n]+ : a whitespace run holding a line break ends after its last line break.
    let mut pos = start;
    let mut after_line_break = None;
    while let Some((class, len)) = table.at(bytes, pos) {
        if !class.is_whitespace() {
            break;
        }
        pos += len;
        if class == Class::LineBreak {
            after_line_break = Some(pos);
        }
    }
    if let Some(end) = after_line_break {
        return end;
    }

    // \s+(?!\S) | \s+
    table.space_run_end(bytes, start)
}

/// End of a number run that may take `more` numbers after the one before `pos`.
#[inline]
fn digits_end(bytes: &[u8], mut pos: usize, more: usize, table: Table) -> usize {
    for _ in 0..more {
        match table.at(bytes, pos) {
            Some((Class::Number, len)) => pos += len,
            _ => break,
        }
    }
    pos
}

/// UTF-8 of U+017F LATIN SMALL LETTER LONG S, whose simple case folding is `s`.
const LONG_S: [u8; 2] = [0xC5, 0xBF];

/// Length in bytes of the contraction ending at `pos`, matched case-insensitively: `s t m d`
/// (and `ſ`), or `re ve ll`.
#[inline]
fn contraction_len(bytes: &[u8], pos: usize) -> Option<usize> {
    let first = *bytes.get(pos)?;
    let second = bytes.get(pos + 1).map(u8::to_ascii_lowercase);
    match (first.to_ascii_lowercase(), second) {
        (b's' | b't' | b'm' | b'd', _) => Some(1),
        (b'r' | b'v', Some(b'e')) | (b'l', Some(b'l')) => Some(2),
        _ if bytes.get(pos..pos + 2) == Some(&LONG_S[..]) => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::scan::Pattern;

    fn pieces(pattern: Pattern, text: &str) -> Vec<&str> {
        pattern.pieces(text).map(|range| &text[range]).collect()
    }

    fn llama3(text: &str) -> Vec<&str> {
        pieces(Pattern::Llama3, text)
    }

    #[test]
    fn contractions_ignore_case() {
        assert_eq!(llama3("IT'S"), ["IT", "'S"]);
        assert_eq!(llama3("we'LL you'rE"), ["we", "'LL", " you", "'rE"]);
        assert_eq!(llama3("'ſ"), ["'ſ"]);
        assert_eq!(llama3("'ſs"), ["'ſ", "s"]);
    }

    #[test]
    fn one_non_letter_joins_the_next_word() {
        assert_eq!(llama3(".hello"), [".hello"]);
        assert_eq!(llama3("'sup"), ["'s", "up"]);
        assert_eq!(llama3("'xyz"), ["'xyz"]);
        assert_eq!(llama3("\tword"), ["\tword"]);
        assert_eq!(llama3("\u{a0}word"), ["\u{a0}word"]);
        assert_eq!(llama3("\nword"), ["\n", "word"]);
        assert_eq!(llama3("..hello"), ["..", "hello"]);
    }

    #[test]
    fn digits_come_in_threes_for_llama3_and_alone_for_qwen2() {
        assert_eq!(llama3("1234567"), ["123", "456", "7"]);
        assert_eq!(llama3(" 12"), [" ", "12"]);
        assert_eq!(pieces(Pattern::Qwen2, "2024"), ["2", "0", "2", "4"]);
    }

    #[test]
    fn punctuation_keeps_the_line_breaks_after_it() {
        assert_eq!(llama3("end.\n\nNext"), ["end", ".\n\n", "Next"]);
        assert_eq!(llama3("x = {};\r\n"), ["x", " =", " {};\r\n"]);
    }

    #[test]
    fn whitespace_with_a_line_break_ends_after_the_last_one() {
        assert_eq!(llama3("a \n\n  b"), ["a", " \n\n", " ", " b"]);
        assert_eq!(llama3("\n \n x"), ["\n \n", " x"]);
        assert_eq!(llama3("\r\n"), ["\r\n"]);
    }

    #[test]
    fn whitespace_without_a_line_break_gives_its_last_character_away() {
        assert_eq!(llama3("a   b"), ["a", "  ", " b"]);
        assert_eq!(llama3("a   "), ["a", "   "]);
        assert_eq!(llama3("a \t1"), ["a", " ", "\t", "1"]);
    }
}
