//! llama.cpp's pre-tokenizers that are a chain of regexes rather than one pattern.
//!
//! llama.cpp runs each regex of a chain on each piece the previous ones left: the matches and
//! the gaps between them are all pieces (Hugging Face's `Isolated`), and a regex only sees its
//! piece (its end is the end of the text for `$` and `(?!\S)`). The chains and their regexes are
//! those of llama.cpp's `src/llama-vocab.cpp` for each `tokenizer.ggml.pre` name.
//!
//! Character classes are Unicode's (`\p{L}`, `\p{N}`, `\p{P}`, `\p{M}`: general categories; `\s`:
//! White_Space), which is what llama.cpp's category-collapsed `std::regex` reproduces.
//!
//! Non-ASCII characters in the patterns are written as `\x{...}` escapes: text tools apply
//! Unicode normalization (U+212A KELVIN SIGN becomes `K`, U+1F7D becomes U+03CE), which would
//! silently change deepseek-llm's letter class or make a range invalid.

use std::ops::Range;
use std::sync::OnceLock;

use fancy_regex::Regex;

/// A chain of regexes, run one after the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Chain {
    /// `deepseek-llm`.
    DeepSeekLlm,
    /// `deepseek-coder`.
    DeepSeekCoder,
    /// `falcon`.
    Falcon,
    /// `qwen35`: one regex (Qwen2's, with marks joining letters).
    Qwen35,
    /// `default`: what llama.cpp runs for a byte-level vocabulary without `tokenizer.ggml.pre`.
    Default,
}

const DEEPSEEK_LLM: &[&str] = &[
    r"[\r\n]",
    r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+",
    r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
    r"\s+$",
    r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
    r"\p{N}+",
];

const DEEPSEEK_CODER: &[&str] = &[r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+", r"\p{N}"];

const FALCON: &[&str] = &[r"[\p{P}\$\+<=>\^~\|`]+", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)", r"[0-9][0-9][0-9]"];

const DEFAULT: &[&str] =
    &[r"[\p{P}\$\+<=>\^~\|]+", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)", r"\p{N}+", r"[0-9][0-9][0-9]"];

const QWEN35: &[&str] = &[
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
];

impl Chain {
    /// The regexes, in the order they run.
    pub fn regexes(self) -> &'static [&'static str] {
        match self {
            Chain::DeepSeekLlm => DEEPSEEK_LLM,
            Chain::DeepSeekCoder => DEEPSEEK_CODER,
            Chain::Falcon => FALCON,
            Chain::Qwen35 => QWEN35,
            Chain::Default => DEFAULT,
        }
    }

    fn compiled(self) -> &'static [Regex] {
        static CELLS: [OnceLock<Vec<Regex>>; 5] = [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let index = match self {
            Chain::DeepSeekLlm => 0,
            Chain::DeepSeekCoder => 1,
            Chain::Falcon => 2,
            Chain::Qwen35 => 3,
            Chain::Default => 4,
        };
        // The patterns are constants, compiled in the tests: a failure here is a bug.
        CELLS[index].get_or_init(|| self.regexes().iter().map(|r| Regex::new(r).expect("a chain regex compiles")).collect())
    }

    /// The byte ranges of the pieces of `text`: in order, non-empty, covering it exactly.
    pub fn pieces(self, text: &str) -> Vec<Range<usize>> {
        let mut pieces: Vec<Range<usize>> = Vec::new();
        if !text.is_empty() {
            pieces.push(0..text.len());
        }
        let mut next = Vec::new();
        for regex in self.compiled() {
            next.clear();
            for piece in &pieces {
                split_one(regex, text, piece.clone(), &mut next);
            }
            std::mem::swap(&mut pieces, &mut next);
        }
        pieces
    }
}

/// Cut `range` of `text` into the matches of `regex` and the gaps between them.
///
/// As llama.cpp does, the regex sees every non-ASCII whitespace character as U+000B (its
/// `std::regex` matches `\s` only in ASCII): `\s` still matches it, but an explicit range such as
/// deepseek's `[\x{800}-\x{4E00}]` no longer does.
fn split_one(regex: &Regex, text: &str, range: Range<usize>, out: &mut Vec<Range<usize>>) {
    let piece = &text[range.clone()];
    let substituted;
    // For each byte offset of the text the regex runs on, the offset in `piece`.
    let mut origin: Vec<usize> = Vec::new();
    let haystack = if piece.chars().any(|c| !c.is_ascii() && c.is_whitespace()) {
        let mut s = String::with_capacity(piece.len());
        for (at, c) in piece.char_indices() {
            let c = if !c.is_ascii() && c.is_whitespace() { '\u{b}' } else { c };
            origin.extend(std::iter::repeat_n(at, c.len_utf8()));
            s.push(c);
        }
        origin.push(piece.len());
        substituted = s;
        substituted.as_str()
    } else {
        piece
    };
    let to_piece = |at: usize| origin.get(at).copied().unwrap_or(at);
    let base = range.start;
    let mut at = 0;
    for found in regex.find_iter(haystack) {
        // A match that gives up (fancy-regex's backtracking limit) leaves the rest as one gap.
        let Ok(found) = found else { break };
        if found.start() == found.end() {
            continue;
        }
        let (start, end) = (to_piece(found.start()), to_piece(found.end()));
        if start > at {
            out.push(base + at..base + start);
        }
        out.push(base + start..base + end);
        at = end;
    }
    if at < piece.len() {
        out.push(base + at..range.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(chain: Chain, text: &str) -> Vec<&str> {
        chain.pieces(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn every_chain_compiles_and_covers_the_text() {
        let text = "Hello, world! 12345 ½ 中文字 한국어 Ωμέγα\r\n  \t x'S y's $+<=>^`|~ 😀 ";
        for chain in [Chain::DeepSeekLlm, Chain::DeepSeekCoder, Chain::Falcon, Chain::Qwen35, Chain::Default] {
            let pieces = chain.pieces(text);
            assert_eq!(pieces.first().map(|r| r.start), Some(0));
            assert_eq!(pieces.last().map(|r| r.end), Some(text.len()));
            assert!(pieces.windows(2).all(|w| w[0].end == w[1].start));
            assert!(pieces.iter().all(|r| !r.is_empty()));
            assert!(chain.pieces("").is_empty());
        }
    }

    #[test]
    fn falcon_cuts_punctuation_then_numbers_by_threes() {
        assert_eq!(cut(Chain::Falcon, "a, b 12345"), ["a", ",", " b", " ", "123", "45"]);
    }

    #[test]
    fn non_ascii_whitespace_is_no_member_of_explicit_ranges() {
        // U+2009 lies in deepseek's CJK range U+0800..U+4E00, but llama.cpp's regex sees U+000B.
        assert_eq!(cut(Chain::DeepSeekCoder, "through\u{2009}same"), ["through", "\u{2009}same"]);
        assert_eq!(cut(Chain::DeepSeekLlm, "a/  \u{3000}::"), ["a", "/", "  ", "\u{3000}::"]);
    }

    #[test]
    fn deepseek_coder_keeps_each_digit_and_line_break() {
        assert_eq!(cut(Chain::DeepSeekCoder, "ab 12\nc"), ["ab", " ", "1", "2", "\n", "c"]);
    }
}
