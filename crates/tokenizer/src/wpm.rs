//! WordPiece as llama.cpp runs it for GGUF `bert` vocabularies.
//!
//! The GGUF spelling differs from Hugging Face's: a token that starts a word carries `▁`
//! (U+2581) in front, a continuation has no mark (HF's `##`). Encoding:
//! 1. the text is cut into words: optional NFD with accents (`M*`) dropped, optional simple
//!    lower-casing, whitespace ends a word, NUL, U+FFFD and `C*` characters are dropped, and
//!    each punctuation character (`P*`, or an ASCII symbol) and each CJK ideograph is a word;
//! 2. each word, with `▁` in front, is cut greedily into the longest tokens from the left; when
//!    some position has no token, the word is the unknown token instead.

use std::collections::HashMap;

use unicode_general_category::{get_general_category, GeneralCategory as G};
use unicode_normalization_alignments::char::decompose_canonical;

/// How a `bert` vocabulary reads text.
#[derive(Clone, Debug)]
pub(crate) struct Wpm {
    /// The longest token, in bytes.
    max_token_len: usize,
    unk_id: Option<u32>,
    lowercase: bool,
    strip_accents: bool,
}

impl Wpm {
    pub fn new(tokens: &[String], unk_id: Option<u32>, lowercase: bool, strip_accents: bool) -> Wpm {
        let max_token_len = tokens.iter().map(String::len).max().unwrap_or(0);
        Wpm { max_token_len, unk_id, lowercase, strip_accents }
    }

    /// Append the ids of `text` (a stretch without special tokens) to `out`; `text_to_id` maps
    /// every token's spelling to its id.
    pub fn encode(&self, text: &str, text_to_id: &HashMap<String, u32>, out: &mut Vec<u32>) {
        for word in self.words(text) {
            let word = format!("\u{2581}{word}");
            let before = out.len();
            let mut i = 0;
            while i < word.len() {
                let longest = (i + 1..=word.len().min(i + self.max_token_len))
                    .rev()
                    .find_map(|j| word.get(i..j).and_then(|s| text_to_id.get(s)).map(|&id| (j, id)));
                match longest {
                    Some((j, id)) => {
                        out.push(id);
                        i = j;
                    }
                    None => {
                        out.truncate(before);
                        break;
                    }
                }
            }
            if out.len() == before {
                out.extend(self.unk_id);
            }
        }
    }

    /// The words of `text`, normalized.
    fn words(&self, text: &str) -> Vec<String> {
        let mut words = vec![String::new()];
        for c in text.chars() {
            // llama.cpp's "NFD": each character becomes the first character of its canonical
            // decomposition, the rest dropped (a Hangul syllable keeps its leading consonant).
            let c = if self.strip_accents { first_of_nfd(c) } else { c };
            if c.is_whitespace() {
                if !words.last().is_some_and(String::is_empty) {
                    words.push(String::new());
                }
                continue;
            }
            let category = get_general_category(c);
            let is_control = matches!(category, G::Control | G::Format | G::PrivateUse | G::Surrogate);
            if c == '\0' || c == '\u{fffd}' || is_control {
                continue;
            }
            let is_mark = matches!(category, G::NonspacingMark | G::SpacingMark | G::EnclosingMark);
            if self.strip_accents && is_mark {
                continue;
            }
            // Simple lower-casing: one character for one (the first of a longer mapping, which
            // for U+0130 is the simple mapping's `i`).
            let c = if self.lowercase { c.to_lowercase().next().unwrap_or(c) } else { c };
            let is_punctuation = matches!(
                category,
                G::ConnectorPunctuation
                    | G::DashPunctuation
                    | G::OpenPunctuation
                    | G::ClosePunctuation
                    | G::InitialPunctuation
                    | G::FinalPunctuation
                    | G::OtherPunctuation
            );
            let is_symbol = matches!(category, G::MathSymbol | G::CurrencySymbol | G::ModifierSymbol | G::OtherSymbol);
            let Some(last) = words.last_mut() else { continue };
            if is_punctuation || (c < '\u{7f}' && is_symbol) || is_cjk(c) {
                if last.is_empty() {
                    last.push(c);
                } else {
                    words.push(c.to_string());
                }
                words.push(String::new());
            } else {
                last.push(c);
            }
        }
        words.retain(|w| !w.is_empty());
        words
    }
}

/// The first character of `c`'s canonical decomposition (`c` itself when it has none).
fn first_of_nfd(c: char) -> char {
    let mut first = None;
    decompose_canonical(c, |d| {
        first.get_or_insert(d);
    });
    first.unwrap_or(c)
}

/// The CJK ideograph blocks that WordPiece makes one word of each character of (llama.cpp's and
/// Hugging Face's table, with its U+2B920 start).
fn is_cjk(c: char) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[&str]) -> (Vec<String>, HashMap<String, u32>) {
        let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        let map = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        (tokens, map)
    }

    #[test]
    fn longest_tokens_from_the_left_and_unknown_words() {
        let (tokens, map) = vocab(&["[UNK]", "\u{2581}hello", "\u{2581}hel", "lo", "\u{2581},", "\u{2581}cafe"]);
        let wpm = Wpm::new(&tokens, Some(0), true, true);
        let mut out = Vec::new();
        wpm.encode("Hello, CAFÉ xyz", &map, &mut out);
        assert_eq!(out, [1, 4, 5, 0]);
    }

    #[test]
    fn words_cut_at_whitespace_punctuation_and_ideographs() {
        let (tokens, _) = vocab(&["a"]);
        let wpm = Wpm::new(&tokens, None, false, false);
        assert_eq!(wpm.words(" ab\tc$d中文e\u{200b}f "), ["ab", "c", "$", "d", "中", "文", "ef"]);
        let stripping = Wpm::new(&tokens, None, true, true);
        // Only the first character of each decomposition stays, as in llama.cpp: 한 -> ᄒ.
        assert_eq!(stripping.words("Ǖber 한"), ["uber", "\u{1112}"]);
    }
}
