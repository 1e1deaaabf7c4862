//! Cutting special tokens (`<|im_start|>`, `<|endoftext|>`, ...) out of text before BPE.
//!
//! At each position the longest special token that matches wins, scanning left to right (what
//! Hugging Face's added-vocabulary matcher does; llama.cpp tries tokens longest first, which gives
//! the same cuts unless special tokens overlap each other in the text).
//! Which tokens are cut follows both peers: control and unknown tokens only when special parsing
//! is on; user-defined tokens always (llama.cpp never treats them as plain text, and HF's
//! `split_special_tokens` only affects tokens marked special).

/// A part of the text: plain text for BPE, or a special token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    Text(&'a str),
    Special(u32),
}

#[derive(Clone, Debug)]
struct Special {
    text: Box<[u8]>,
    id: u32,
    /// Cut even when special parsing is off (user-defined tokens).
    always: bool,
}

/// The special tokens of a vocabulary, indexed by first byte.
#[derive(Clone, Debug)]
pub(crate) struct SpecialTokens {
    /// For each first byte, the tokens starting with it, longest first (ties: lower id first).
    by_first_byte: Vec<Vec<Special>>,
    /// Whether any token starts with this byte: lets the scan skip plain text in a tight loop.
    is_first_byte: [bool; 256],
}

impl SpecialTokens {
    /// Index `(text, id, always)` triples; empty texts are ignored (they would match everywhere).
    pub fn new(tokens: impl IntoIterator<Item = (String, u32, bool)>) -> SpecialTokens {
        let mut by_first_byte: Vec<Vec<Special>> = vec![Vec::new(); 256];
        for (text, id, always) in tokens {
            if let Some(&first) = text.as_bytes().first() {
                by_first_byte[first as usize].push(Special { text: text.into_bytes().into(), id, always });
            }
        }
        let mut is_first_byte = [false; 256];
        for (candidates, is_first) in by_first_byte.iter_mut().zip(&mut is_first_byte) {
            candidates.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
            *is_first = !candidates.is_empty();
        }
        SpecialTokens { by_first_byte, is_first_byte }
    }

    /// Call `f` on the segments of `text`, in order. Empty text segments are not reported.
    pub fn split<'a>(&self, text: &'a str, parse_special: bool, f: impl FnMut(Segment<'a>)) {
        self.split_where(text, |_| parse_special, f)
    }

    /// Like [`SpecialTokens::split`], with special parsing decided per match: a control token
    /// whose bytes are `range` of `text` is cut only if `parse(range)`.
    pub fn split_where<'a>(&self, text: &'a str, parse: impl Fn(std::ops::Range<usize>) -> bool, mut f: impl FnMut(Segment<'a>)) {
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut i = 0;
        loop {
            while i < bytes.len() && !self.is_first_byte[bytes[i] as usize] {
                i += 1;
            }
            if i == bytes.len() {
                break;
            }
            let found = self.by_first_byte[bytes[i] as usize]
                .iter()
                .find(|special| bytes[i..].starts_with(&special.text) && (special.always || parse(i..i + special.text.len())));
            // A special token's first byte starts a character, so `i` and the end of the match
            // are char boundaries.
            match found {
                Some(special) if text.is_char_boundary(i) => {
                    if start < i {
                        f(Segment::Text(&text[start..i]));
                    }
                    f(Segment::Special(special.id));
                    i += special.text.len();
                    start = i;
                }
                _ => i += 1,
            }
        }
        if start < bytes.len() {
            f(Segment::Text(&text[start..]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(specials: &SpecialTokens, text: &str, parse_special: bool) -> Vec<String> {
        let mut out = Vec::new();
        specials.split(text, parse_special, |segment| {
            out.push(match segment {
                Segment::Text(t) => format!("text:{t}"),
                Segment::Special(id) => format!("special:{id}"),
            })
        });
        out
    }

    fn sample() -> SpecialTokens {
        SpecialTokens::new([("<|im_start|>".to_string(), 1, false), ("<|im".to_string(), 5, false), ("<tool>".to_string(), 7, true)])
    }

    #[test]
    fn longest_special_token_wins() {
        assert_eq!(segments(&sample(), "a<|im_start|>b<|imx", true), ["text:a", "special:1", "text:b", "special:5", "text:x"]);
    }

    #[test]
    fn parse_special_off_keeps_control_tokens_as_text_but_cuts_user_defined() {
        assert_eq!(segments(&sample(), "<|im_start|><tool>x", false), ["text:<|im_start|>", "special:7", "text:x"]);
    }

    #[test]
    fn adjacent_and_edge_specials_give_no_empty_text() {
        assert_eq!(segments(&sample(), "<|im_start|><|im_start|>", true), ["special:1", "special:1"]);
        assert!(segments(&sample(), "", true).is_empty());
    }
}
