//! Pre-tokenizers: cut text into the pieces that BPE then encodes one at a time.
//!
//! Both supported schemes are the GPT-2 pattern
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
//! run as a hand-written single pass over the characters instead of a regex: the regex is where
//! published tokenizers spend most of their time (HF tokenizers ~2-4 MB/s, a scanner 100+ MB/s).
//! SmolLM2 (`smollm`) first cuts out every `\p{N}` character as a piece of its own, and runs the
//! pattern on the spans in between; the end of a span then acts as the end of the text for the
//! `(?!\S)` lookahead, exactly as llama.cpp and Hugging Face `tokenizers` do.
//!
//! Character classes follow the peers: `\p{L}` and `\p{N}` are Unicode general categories
//! L* and N*, `\s` is the Unicode White_Space property.

use unicode_general_category::{get_general_category, GeneralCategory};

/// The class of a character, as the GPT-2 pattern sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CharClass {
    /// `\p{L}`: any letter.
    Letter,
    /// `\p{N}`: any number (decimal digits of every script, letter numbers, other numbers).
    Number,
    /// `\s`: White_Space.
    Whitespace,
    /// Everything else: punctuation, symbols, marks, controls, emoji, unassigned.
    Other,
}

const fn build_ascii_classes() -> [CharClass; 128] {
    let mut table = [CharClass::Other; 128];
    let mut b = 0usize;
    while b < 128 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphabetic() {
            CharClass::Letter
        } else if c.is_ascii_digit() {
            CharClass::Number
        } else if matches!(c, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ') {
            // White_Space in ASCII; note that 0x1C-0x1F are not White_Space.
            CharClass::Whitespace
        } else {
            CharClass::Other
        };
        b += 1;
    }
    table
}

const ASCII_CLASSES: [CharClass; 128] = build_ascii_classes();

/// Classify one character for the GPT-2 pattern.
pub fn classify(c: char) -> CharClass {
    if c.is_ascii() {
        return ASCII_CLASSES[c as usize];
    }
    if c.is_whitespace() {
        return CharClass::Whitespace;
    }
    use GeneralCategory as G;
    match get_general_category(c) {
        G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter => CharClass::Letter,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => CharClass::Number,
        _ => CharClass::Other,
    }
}

/// A pre-tokenization scheme, named as GGUF's `tokenizer.ggml.pre` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `gpt2` (and llama.cpp's `gpt-2`, `mpt`, ...): the GPT-2 pattern alone.
    Gpt2,
    /// `smollm` (and `starcoder`, `refact`, `command-r`, ...): every `\p{N}` character is its own
    /// piece, then the GPT-2 pattern in between.
    SmolLm,
    /// `llama-bpe` (Llama 3): numbers in runs of up to three digits (see [`crate::scan`]).
    Llama3,
    /// `qwen2`: as Llama 3 with single digits.
    Qwen2,
    /// A chain of regexes run one after the other (`deepseek-llm`, `deepseek-coder`, `falcon`,
    /// `qwen35`); see [`crate::scan::Chain`].
    Chain(crate::scan::Chain),
}

/// llama.cpp's `tokenizer.ggml.pre` names, by scheme (its `src/llama-vocab.cpp`).
const NAMES: &[(&str, PreTokenizer)] = {
    use crate::scan::Chain;
    use PreTokenizer as P;
    &[
        ("gpt2", P::Gpt2),
        ("gpt-2", P::Gpt2),
        ("phi-2", P::Gpt2),
        ("mpt", P::Gpt2),
        ("olmo", P::Gpt2),
        ("jais", P::Gpt2),
        ("jina-es", P::Gpt2),
        ("jina-de", P::Gpt2),
        ("jina-v2-es", P::Gpt2),
        ("jina-v2-de", P::Gpt2),
        ("jina-v1-en", P::Gpt2),
        ("jina-v2-code", P::Gpt2),
        ("roberta-bpe", P::Gpt2),
        ("gigachat", P::Gpt2),
        ("a.x-4.0", P::Gpt2),
        ("mellum", P::Gpt2),
        ("modern-bert", P::Gpt2),
        ("exaone4", P::Gpt2),
        ("trillion", P::Gpt2),
        ("granite-docling", P::Gpt2),
        ("smollm", P::SmolLm),
        ("starcoder", P::SmolLm),
        ("refact", P::SmolLm),
        ("command-r", P::SmolLm),
        ("codeshell", P::SmolLm),
        ("exaone", P::SmolLm),
        ("minerva-7b", P::SmolLm),
        ("mellum2", P::SmolLm),
        ("llama-bpe", P::Llama3),
        ("llama3", P::Llama3),
        ("llama-v3", P::Llama3),
        ("falcon3", P::Llama3),
        ("falcon-h1", P::Llama3),
        ("pixtral", P::Llama3),
        ("midm-2.0", P::Llama3),
        ("lfm2", P::Llama3),
        ("jina-v5-nano", P::Llama3),
        ("dbrx", P::Llama3),
        ("smaug-bpe", P::Llama3),
        ("chatglm-bpe", P::Llama3),
        ("glm4", P::Llama3),
        ("glm5", P::Llama3),
        ("qwen2", P::Qwen2),
        ("deepseek-r1-qwen", P::Qwen2),
        ("kormo", P::Qwen2),
        ("f2llmv2", P::Qwen2),
        ("megrez", P::Qwen2),
        ("stablelm2", P::Qwen2),
        ("hunyuan", P::Qwen2),
        ("solar-open", P::Qwen2),
        ("qwen35", P::Chain(Chain::Qwen35)),
        ("deepseek-llm", P::Chain(Chain::DeepSeekLlm)),
        ("deepseek-coder", P::Chain(Chain::DeepSeekCoder)),
        ("falcon", P::Chain(Chain::Falcon)),
        ("default", P::Chain(Chain::Default)),
    ]
};

/// llama.cpp's names whose vocabulary takes a piece that is a token whole, without merging
/// (`ignore_merges`), among those [`PreTokenizer::from_name`] knows.
const IGNORE_MERGES: &[&str] =
    &["llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano", "glm4", "glm5"];

impl PreTokenizer {
    /// The scheme for a `tokenizer.ggml.pre` name, or `None` when it is not supported.
    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        NAMES.iter().find(|(known, _)| *known == name).map(|&(_, pre)| pre)
    }

    /// Every supported `tokenizer.ggml.pre` name.
    pub fn names() -> impl Iterator<Item = &'static str> {
        NAMES.iter().map(|&(name, _)| name)
    }

    /// Whether llama.cpp gives a piece that is a token that token whole, merges or not
    /// (`ignore_merges`: the Llama 3 family).
    pub fn ignores_merges(name: &str) -> bool {
        IGNORE_MERGES.contains(&name)
    }

    /// Whether llama.cpp adds BOS for this name when the file does not say
    /// (`tokenizer.ggml.add_bos_token` absent): the Llama 3 family.
    pub fn adds_bos_by_default(name: &str) -> bool {
        IGNORE_MERGES.contains(&name) && !name.starts_with("glm")
    }

    /// The pieces of `text`, in order; they concatenate back to `text`.
    pub fn pieces<'a>(&self, text: &'a str) -> Pieces<'a> {
        let scan = match self {
            PreTokenizer::Llama3 => Some(crate::scan::Pattern::Llama3.pieces(text)),
            PreTokenizer::Qwen2 => Some(crate::scan::Pattern::Qwen2.pieces(text)),
            PreTokenizer::Gpt2 | PreTokenizer::SmolLm | PreTokenizer::Chain(_) => None,
        };
        let chain = match self {
            PreTokenizer::Chain(chain) => Some(chain.pieces(text).into_iter()),
            _ => None,
        };
        Pieces { text, pos: 0, digits_cut: *self == PreTokenizer::SmolLm, scan, chain }
    }
}

/// Iterator over the pieces of a text; see [`PreTokenizer::pieces`].
#[derive(Clone, Debug)]
pub struct Pieces<'a> {
    text: &'a str,
    pos: usize,
    /// Whether every number character is a hard cut (a piece of its own and a span end).
    digits_cut: bool,
    /// The scanner of the Llama 3 family, when it is one of those patterns.
    scan: Option<crate::scan::Pieces<'a>>,
    /// The pieces of a regex chain, cut in advance.
    chain: Option<std::vec::IntoIter<std::ops::Range<usize>>>,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if let Some(scan) = self.scan.as_mut() {
            return scan.next().map(|range| &self.text[range]);
        }
        if let Some(chain) = self.chain.as_mut() {
            return chain.next().and_then(|range| self.text.get(range));
        }
        let start = self.pos;
        let (c0, class0, len0) = decode_at(self.text, start)?;
        let end = if self.digits_cut && class0 == CharClass::Number { start + len0 } else { self.match_end(start, c0, class0, len0) };
        self.pos = end;
        // `end` is a char boundary by construction: every step advances by whole characters.
        self.text.get(start..end)
    }
}

impl Pieces<'_> {
    /// The character at byte offset `pos` if it lies inside the current span: `None` at the end
    /// of the text, and at a number character when numbers are hard cuts.
    #[inline]
    fn peek(&self, pos: usize) -> Option<(char, CharClass, usize)> {
        let found = decode_at(self.text, pos)?;
        if self.digits_cut && found.1 == CharClass::Number {
            return None;
        }
        Some(found)
    }

    /// Byte offset just past the run of characters of class `class` that starts at `pos`.
    /// `class` is never `Number` when numbers are hard cuts, so a digit always ends the run.
    #[inline]
    fn run_end(&self, mut pos: usize, class: CharClass) -> usize {
        let bytes = self.text.as_bytes();
        loop {
            // ASCII fast path: one table lookup per byte, no UTF-8 decoding (3x faster on prose).
            while let Some(&byte) = bytes.get(pos) {
                if byte >= 0x80 {
                    break;
                }
                if ASCII_CLASSES[byte as usize] != class {
                    return pos;
                }
                pos += 1;
            }
            match self.peek(pos) {
                Some((_, found, len)) if found == class => pos += len,
                _ => return pos,
            }
        }
    }

    /// End of the GPT-2 pattern's match at `start`, whose character is `c0` (inside the span).
    fn match_end(&self, start: usize, c0: char, class0: CharClass, len0: usize) -> usize {
        // 's|'t|'re|'ve|'m|'ll|'d  (case-sensitive: "'S" is not a contraction)
        if c0 == '\'' {
            if let Some((c1, _, _)) = self.peek(start + 1) {
                if matches!(c1, 's' | 't' | 'm' | 'd') {
                    return start + 2;
                }
                if let Some((c2, _, _)) = self.peek(start + 2) {
                    if matches!((c1, c2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                        return start + 3;
                    }
                }
            }
        }

        //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+  : an optional leading space, then a run.
        let (body, body_class) = if c0 == ' ' { (start + 1, self.peek(start + 1).map(|(_, class, _)| class)) } else { (start, Some(class0)) };
        if let Some(class @ (CharClass::Letter | CharClass::Number | CharClass::Other)) = body_class {
            return self.run_end(body, class);
        }

        // \s+(?!\S) | \s+ : a whitespace run. When non-space follows inside the span, the
        // lookahead makes the regex give the run's last character to the next piece
        // ("a  b" -> "a", " ", " b"); a lone whitespace character stays a piece of its own.
        let mut pos = start;
        let mut last_start = start;
        let mut count = 0usize;
        while let Some((_, CharClass::Whitespace, len)) = self.peek(pos) {
            last_start = pos;
            pos += len;
            count += 1;
        }
        if count > 1 && self.peek(pos).is_some() {
            return last_start;
        }
        if count > 0 {
            return pos;
        }
        // Unreachable for a character inside the span, kept so the scan always advances.
        start + len0
    }
}

/// The character at byte offset `pos` of `text`, its class and its UTF-8 length.
#[inline]
fn decode_at(text: &str, pos: usize) -> Option<(char, CharClass, usize)> {
    let bytes = text.as_bytes();
    let first = *bytes.get(pos)?;
    if first < 0x80 {
        return Some((first as char, ASCII_CLASSES[first as usize], 1));
    }
    let c = text.get(pos..)?.chars().next()?;
    Some((c, classify(c), c.len_utf8()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(pre: PreTokenizer, text: &str) -> Vec<&str> {
        pre.pieces(text).collect()
    }

    #[test]
    fn classes_of_sample_characters() {
        assert_eq!(classify('a'), CharClass::Letter);
        assert_eq!(classify('Ж'), CharClass::Letter);
        assert_eq!(classify('中'), CharClass::Letter);
        assert_eq!(classify('٣'), CharClass::Number);
        assert_eq!(classify('½'), CharClass::Number);
        assert_eq!(classify('Ⅻ'), CharClass::Number);
        assert_eq!(classify('\u{3000}'), CharClass::Whitespace);
        assert_eq!(classify('\u{85}'), CharClass::Whitespace);
        assert_eq!(classify('\u{a0}'), CharClass::Whitespace);
        assert_eq!(classify('\u{1c}'), CharClass::Other);
        assert_eq!(classify('\u{301}'), CharClass::Other);
        assert_eq!(classify('\u{200d}'), CharClass::Other);
        assert_eq!(classify('😀'), CharClass::Other);
    }

    #[test]
    fn double_space_gives_its_last_space_to_the_word() {
        assert_eq!(pieces(PreTokenizer::SmolLm, "a  b"), ["a", " ", " b"]);
        assert_eq!(pieces(PreTokenizer::Gpt2, "a   b"), ["a", "  ", " b"]);
    }

    #[test]
    fn trailing_whitespace_run_stays_whole() {
        assert_eq!(pieces(PreTokenizer::SmolLm, "a   "), ["a", "   "]);
        assert_eq!(pieces(PreTokenizer::SmolLm, "\n\n"), ["\n\n"]);
    }

    #[test]
    fn tabs_do_not_join_a_following_word() {
        assert_eq!(pieces(PreTokenizer::SmolLm, "\t\tx"), ["\t", "\t", "x"]);
        assert_eq!(pieces(PreTokenizer::SmolLm, "a \nb"), ["a", " ", "\n", "b"]);
    }

    #[test]
    fn digits_are_hard_cuts_in_smollm() {
        assert_eq!(pieces(PreTokenizer::SmolLm, "abc 1234"), ["abc", " ", "1", "2", "3", "4"]);
        assert_eq!(pieces(PreTokenizer::SmolLm, "x٣٤"), ["x", "٣", "٤"]);
        assert_eq!(pieces(PreTokenizer::Gpt2, "abc 1234"), ["abc", " 1234"]);
    }

    #[test]
    fn span_end_before_a_digit_acts_as_text_end_for_the_lookahead() {
        // In gpt2 the run before " 5" keeps one space for the number; in smollm the digit
        // ends the span, so the whole run is one piece.
        assert_eq!(pieces(PreTokenizer::Gpt2, "a   5"), ["a", "  ", " 5"]);
        assert_eq!(pieces(PreTokenizer::SmolLm, "a   5"), ["a", "   ", "5"]);
    }

    #[test]
    fn contractions_are_case_sensitive() {
        assert_eq!(pieces(PreTokenizer::SmolLm, "it's"), ["it", "'s"]);
        assert_eq!(pieces(PreTokenizer::SmolLm, "IT'S"), ["IT", "'", "S"]);
        assert_eq!(pieces(PreTokenizer::SmolLm, "we'LL we'll"), ["we", "'", "LL", " we", "'ll"]);
        assert_eq!(pieces(PreTokenizer::SmolLm, "they're"), ["they", "'re"]);
        assert_eq!(pieces(PreTokenizer::SmolLm, "'x"), ["'", "x"]);
    }

    #[test]
    fn punctuation_runs_take_one_leading_space() {
        assert_eq!(pieces(PreTokenizer::SmolLm, "x = {};"), ["x", " =", " {};"]);
    }

    #[test]
    fn empty_text_has_no_pieces() {
        assert!(pieces(PreTokenizer::SmolLm, "").is_empty());
    }
}
