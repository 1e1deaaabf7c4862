//! Pre-tokenizer patterns: hand-written single-pass scanners for the patterns real models ship,
//! and a general regex path for any other `Split`.
//!
//! A byte-level BPE tokenizer first cuts text into pieces with a regex, and BPE never merges
//! across a cut. The regexes are where published tokenizers spend much of their time (Hugging
//! Face runs Oniguruma, tiktoken fancy-regex; both backtrack), yet the three patterns almost
//! every model uses decide each piece from its first one or two characters. [`Pattern`] runs them
//! as plain loops over the bytes with a class table: no backtracking, no allocation.
//!
//! | [`Pattern`] | models | regex (Hugging Face `tokenizer.json` spelling) |
//! |---|---|---|
//! | `Gpt2` | GPT-2, RoBERTa, GPT-NeoX, Phi-2 (`ByteLevel` with `use_regex`) | [`GPT2_REGEX`] |
//! | `Llama3` | Llama 3.x, DBRX, ChatGLM-4 (`Split`, `Isolated`) | [`LLAMA3_REGEX`] |
//! | `Qwen2` | Qwen 2, 2.5, 3, StableLM-2 (`Split`, `Isolated`) | [`QWEN2_REGEX`] |
//!
//! The SmolLM / StarCoder family (GGUF `smollm`, `starcoder`) is `Digits(individual_digits)`
//! followed by the GPT-2 pattern, which [`crate::PreTokenizer::SmolLm`] scans in one pass.
//!
//! llama.cpp's pre-tokenizers that chain several regexes (`deepseek-llm`, `deepseek-coder`,
//! `falcon`, `qwen35`) run on a regex engine as [`Chain`].
//!
//! Any other pattern goes through [`RegexSplit`], which also implements the five `Split`
//! behaviours of Hugging Face and its `invert` flag, and hands the three known patterns (when
//! isolated, not inverted) to the scanners.
//!
//! Semantics are those of Hugging Face `tokenizers` (Oniguruma): `\p{L}`, `\p{N}` are general
//! categories from Unicode [`UNICODE_VERSION`], `\s` is White_Space, and `(?i:...)` uses Unicode
//! simple case folding (see [`Pattern::Llama3`] for the one place that matters). Each scanner is
//! tested against fancy-regex running the very same regex (exhaustively on short strings over
//! one character of each class, on random strings, on a mixed corpus) and against Hugging Face's
//! own output (tests/scanners.rs, tests/trained_bpe.rs).

mod chain;
pub mod classes;
mod gpt2;
mod llama3;
mod regex_split;

use std::ops::Range;

pub use chain::Chain;
pub use classes::{classify, Class, UNICODE_VERSION};
pub use regex_split::{RegexSplit, SplitBehavior, SplitError};

use classes::Table;

/// GPT-2's pattern, as Hugging Face's `ByteLevel` pre-tokenizer runs it.
pub const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama-3's `Split` pattern, as its `tokenizer.json` spells it.
pub const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's `Split` pattern, as its `tokenizer.json` spells it.
pub const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A pre-tokenizer pattern with a hand-written scanner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// [`GPT2_REGEX`]: contractions in lower case only, runs of letters, numbers or other
    /// characters after at most one space.
    Gpt2,
    /// [`LLAMA3_REGEX`]: contractions in any case, a word may start with one non-letter (`" x"`,
    /// `"\tx"`, `".x"`), numbers by threes, punctuation keeps the line breaks after it.
    ///
    /// Hugging Face reads `(?i:'s)` with Unicode case folding, so `"'ſ"` (U+017F) is a
    /// contraction and `"'ſx"` is cut `"'ſ"`, `"x"`; llama.cpp matches `'[sS]` instead and
    /// keeps `"'ſx"` whole (an apostrophe and a word). The scanners follow Hugging Face.
    Llama3,
    /// [`QWEN2_REGEX`]: [`Pattern::Llama3`] with one number per piece.
    Qwen2,
}

impl Pattern {
    /// All patterns with a scanner.
    pub const ALL: [Pattern; 3] = [Pattern::Gpt2, Pattern::Llama3, Pattern::Qwen2];

    /// The pattern whose regex is exactly `regex` as Hugging Face spells it (a `Split` pattern's
    /// `Regex` string in `tokenizer.json`, after JSON unescaping), or `None`.
    ///
    /// Only exact spellings are recognised: an equivalent-looking rewrite may not be equivalent
    /// (llama.cpp's `'[sS]` for `(?i:'s)` differs on U+017F), so anything else takes the regex
    /// path.
    pub fn from_regex(regex: &str) -> Option<Pattern> {
        Pattern::ALL.into_iter().find(|pattern| pattern.regex() == regex)
    }

    /// The regex this scanner implements, in Hugging Face's spelling.
    pub fn regex(self) -> &'static str {
        match self {
            Pattern::Gpt2 => GPT2_REGEX,
            Pattern::Llama3 => LLAMA3_REGEX,
            Pattern::Qwen2 => QWEN2_REGEX,
        }
    }

    /// The pieces of `text` as byte ranges: in order, non-empty, on character boundaries, and
    /// covering the text exactly (each starts where the previous ended, the last ends at
    /// `text.len()`). These are the regex's matches; the three patterns leave no gaps.
    pub fn pieces<'a>(&self, text: &'a str) -> Pieces<'a> {
        Pieces { bytes: text.as_bytes(), pos: 0, pattern: *self, table: Table::get() }
    }
}

/// Iterator over the byte ranges of the pieces of a text; see [`Pattern::pieces`].
#[derive(Clone, Debug)]
pub struct Pieces<'a> {
    bytes: &'a [u8],
    pos: usize,
    pattern: Pattern,
    table: Table,
}

impl Iterator for Pieces<'_> {
    type Item = Range<usize>;

    #[inline]
    fn next(&mut self) -> Option<Range<usize>> {
        let start = self.pos;
        if start >= self.bytes.len() {
            return None;
        }
        let end = match self.pattern {
            Pattern::Gpt2 => gpt2::piece_end(self.bytes, start, self.table),
            Pattern::Llama3 => llama3::piece_end(self.bytes, start, self.table, 3),
            Pattern::Qwen2 => llama3::piece_end(self.bytes, start, self.table, 1),
        };
        debug_assert!(end > start, "a scanner must advance");
        // Every character starts some alternative, so `end > start`; the guard only makes a
        // broken scanner stop instead of looping.
        if end <= start {
            self.pos = self.bytes.len();
            return None;
        }
        self.pos = end;
        Some(start..end)
    }
}

impl std::iter::FusedIterator for Pieces<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_patterns_are_recognised_by_exact_spelling() {
        for pattern in Pattern::ALL {
            assert_eq!(Pattern::from_regex(pattern.regex()), Some(pattern));
        }
        let llama_cpp_rewrite = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        assert_eq!(Pattern::from_regex(llama_cpp_rewrite), None);
        let gpt2_without_last_alternative = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
        assert_eq!(Pattern::from_regex(gpt2_without_last_alternative), None);
        assert_eq!(Pattern::from_regex(""), None);
    }

    #[test]
    fn pieces_cover_the_text() {
        let text = "Hi  there,\r\n\tit's 12345 \u{4e2d}\u{6587}!  \u{1F600}\u{200d}x  ";
        for pattern in Pattern::ALL {
            let mut end = 0;
            for range in pattern.pieces(text) {
                assert_eq!(range.start, end, "{pattern:?}");
                assert!(range.end > range.start, "{pattern:?}");
                assert!(text.is_char_boundary(range.end), "{pattern:?}");
                end = range.end;
            }
            assert_eq!(end, text.len(), "{pattern:?}");
        }
    }
}
