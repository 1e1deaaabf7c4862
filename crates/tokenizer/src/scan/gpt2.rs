//! The GPT-2 pattern as a single pass:
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//!
//! Hugging Face's `ByteLevel` pre-tokenizer with `use_regex: true` runs exactly this regex
//! (GPT-2, RoBERTa, GPT-J, GPT-NeoX, Pythia, Phi-2 and many more ship it). Each piece is decided
//! by its first one or two characters:
//! - an apostrophe followed by one of the lower-case endings is a contraction (case-sensitive:
//!   `"'S"` is not one);
//! - otherwise a letter, number or "other" character, optionally after one space, starts a run
//!   of that class;
//! - otherwise (whitespace not followed by such a run) a whitespace run, less its last character
//!   when something follows it.

use super::classes::{Class, Table};

/// End of the piece that starts at byte `start` (< `bytes.len()`, a character boundary).
#[inline]
pub(crate) fn piece_end(bytes: &[u8], start: usize, table: Table) -> usize {
    let Some((class0, len0)) = table.at(bytes, start) else {
        return start;
    };
    if bytes[start] == b'\'' {
        if let Some(len) = contraction_len(bytes, start + 1) {
            return start + 1 + len;
        }
    }

    //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+ : an optional leading space, then a run.
    let (body, body_class) = match (class0, table.at(bytes, start + len0)) {
        (Class::Space, Some((next, _))) => (start + len0, next),
        _ => (start, class0),
    };
    if matches!(body_class, Class::Letter | Class::Number | Class::Other) {
        return table.run_end(bytes, body, body_class);
    }

    // \s+(?!\S) | \s+
    table.space_run_end(bytes, start)
}

/// Length of the contraction ending (`s t m d` or `re ve ll`, lower case only) at `pos`.
#[inline]
fn contraction_len(bytes: &[u8], pos: usize) -> Option<usize> {
    match (bytes.get(pos), bytes.get(pos + 1)) {
        (Some(b's' | b't' | b'm' | b'd'), _) => Some(1),
        (Some(b'r' | b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::scan::Pattern;

    fn pieces(text: &str) -> Vec<&str> {
        Pattern::Gpt2.pieces(text).map(|range| &text[range]).collect()
    }

    #[test]
    fn words_take_one_leading_space() {
        assert_eq!(pieces("Hello world"), ["Hello", " world"]);
        assert_eq!(pieces("x = {};"), ["x", " =", " {};"]);
        assert_eq!(pieces("abc 1234"), ["abc", " 1234"]);
    }

    #[test]
    fn double_space_gives_its_last_space_to_the_word() {
        assert_eq!(pieces("a  b"), ["a", " ", " b"]);
        assert_eq!(pieces("a   5"), ["a", "  ", " 5"]);
    }

    #[test]
    fn trailing_whitespace_run_stays_whole() {
        assert_eq!(pieces("a   "), ["a", "   "]);
        assert_eq!(pieces("\n\n"), ["\n\n"]);
    }

    #[test]
    fn tabs_do_not_join_a_following_word() {
        assert_eq!(pieces("\t\tx"), ["\t", "\t", "x"]);
        assert_eq!(pieces("a \nb"), ["a", " ", "\n", "b"]);
    }

    #[test]
    fn contractions_are_case_sensitive() {
        assert_eq!(pieces("it's"), ["it", "'s"]);
        assert_eq!(pieces("IT'S"), ["IT", "'", "S"]);
        assert_eq!(pieces("we'LL we'll"), ["we", "'", "LL", " we", "'ll"]);
        assert_eq!(pieces("'x"), ["'", "x"]);
        assert_eq!(pieces("'\u{17f}"), ["'", "\u{17f}"]);
    }

    #[test]
    fn empty_text_has_no_pieces() {
        assert!(pieces("").is_empty());
    }
}
