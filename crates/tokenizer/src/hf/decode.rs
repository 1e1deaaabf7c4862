//! Decoders: tokens back to text. Without a decoder, tokens are joined with spaces (Hugging
//! Face's fallback).
//!
//! As in Hugging Face, each decoder maps a list of token texts to a new list (`decode_chain`), a
//! `Sequence` runs them in turn, and the result is the concatenation of the last list. Where
//! Hugging Face would panic (a `Strip` longer than its token), the token here becomes empty.

use super::pattern::TextPattern;
use super::spec::DecoderSpec;
use super::HfError;

/// A decoder ready to run.
#[derive(Clone, Debug)]
pub(crate) enum Decoder {
    /// Join with spaces, except that a token starting with `prefix` (not the first) is glued to
    /// the one before it, prefix removed; `cleanup` then undoes BERT's spacing of punctuation and
    /// contractions, token by token.
    WordPiece { prefix: String, cleanup: bool },
    /// Byte-level alphabet to bytes; one string for all tokens.
    ByteLevel,
    /// `replacement` to space; none at all in the first token when `strip_first`.
    Metaspace { replacement: char, strip_first: bool },
    /// Runs of `<0xNN>` to text.
    ByteFallback,
    /// One string for all tokens.
    Fuse,
    /// Up to `start` copies of `content` off the start of each token, `stop` off the end.
    Strip { content: char, start: usize, stop: usize },
    /// Every match replaced in each token.
    Replace { pattern: TextPattern, content: String },
    /// Each in turn.
    Sequence(Vec<Decoder>),
}

impl Decoder {
    /// The decoder for a spec: an unknown Metaspace prepend scheme or a Replace regex that does
    /// not compile is an error.
    pub fn new(spec: &DecoderSpec) -> Result<Decoder, HfError> {
        Decoder::at(spec, "decoder".to_string())
    }

    fn at(spec: &DecoderSpec, path: String) -> Result<Decoder, HfError> {
        Ok(match spec {
            DecoderSpec::WordPiece { prefix, cleanup } => Decoder::WordPiece { prefix: prefix.clone(), cleanup: *cleanup },
            DecoderSpec::ByteLevel => Decoder::ByteLevel,
            DecoderSpec::Metaspace { replacement, prepend_scheme } => Decoder::Metaspace {
                replacement: *replacement,
                strip_first: match prepend_scheme.as_str() {
                    "always" | "first" => true,
                    "never" => false,
                    other => {
                        return Err(HfError::Invalid { path: format!("{path}.prepend_scheme"), message: format!("unknown prepend scheme {other:?}") })
                    }
                },
            },
            DecoderSpec::ByteFallback => Decoder::ByteFallback,
            DecoderSpec::Fuse => Decoder::Fuse,
            DecoderSpec::Strip { content, start, stop } => Decoder::Strip { content: *content, start: *start, stop: *stop },
            DecoderSpec::Replace { pattern, content } => {
                Decoder::Replace { pattern: TextPattern::new(pattern, &format!("{path}.pattern"))?, content: content.clone() }
            }
            DecoderSpec::Sequence(parts) => Decoder::Sequence(
                parts.iter().enumerate().map(|(i, part)| Decoder::at(part, format!("{path}.decoders[{i}]"))).collect::<Result<_, _>>()?,
            ),
        })
    }

    /// The text of `tokens`.
    pub fn decode(&self, tokens: Vec<String>) -> String {
        self.decode_chain(tokens).concat()
    }

    /// Hugging Face's `decode_chain`: token texts to new token texts.
    fn decode_chain(&self, tokens: Vec<String>) -> Vec<String> {
        match self {
            Decoder::WordPiece { prefix, cleanup } => tokens
                .into_iter()
                .enumerate()
                .map(|(i, token)| {
                    let piece = if i == 0 {
                        token
                    } else if let Some(rest) = token.strip_prefix(prefix.as_str()) {
                        rest.to_string()
                    } else {
                        format!(" {token}")
                    };
                    if *cleanup {
                        clean_up_spacing(&piece)
                    } else {
                        piece
                    }
                })
                .collect(),
            Decoder::ByteLevel => {
                let mut bytes = Vec::new();
                for token in &tokens {
                    match crate::byte_level::decode_spelling(token) {
                        Some(raw) => bytes.extend_from_slice(&raw),
                        // A token outside the alphabet (an added token with a space) is taken
                        // as it is written.
                        None => bytes.extend_from_slice(token.as_bytes()),
                    }
                }
                vec![String::from_utf8_lossy(&bytes).into_owned()]
            }
            Decoder::Metaspace { replacement, strip_first } => tokens
                .into_iter()
                .enumerate()
                .map(|(i, token)| {
                    let drop = i == 0 && *strip_first;
                    token
                        .chars()
                        .filter_map(|c| match c == *replacement {
                            true if drop => None,
                            true => Some(' '),
                            false => Some(c),
                        })
                        .collect()
                })
                .collect(),
            Decoder::ByteFallback => byte_fallback(tokens),
            Decoder::Fuse => vec![tokens.concat()],
            Decoder::Strip { content, start, stop } => tokens.into_iter().map(|token| strip(&token, *content, *start, *stop)).collect(),
            Decoder::Replace { pattern, content } => tokens.into_iter().map(|token| pattern.replace_all(&token, content)).collect(),
            Decoder::Sequence(parts) => parts.iter().fold(tokens, |tokens, part| part.decode_chain(tokens)),
        }
    }
}

/// The byte of a `<0xNN>` token. Hugging Face parses the two characters with
/// `u8::from_str_radix`, so lower-case digits and even `<0x+F>` count.
fn fallback_byte(token: &str) -> Option<u8> {
    if token.len() == 6 && token.starts_with("<0x") && token.ends_with('>') {
        u8::from_str_radix(token.get(3..5)?, 16).ok()
    } else {
        None
    }
}

/// Each run of byte tokens becomes the text its bytes spell, or one U+FFFD per byte when they
/// are not valid UTF-8 (as a whole: one bad byte spoils the run).
fn byte_fallback(tokens: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut pending: Vec<u8> = Vec::new();
    let flush = |pending: &mut Vec<u8>, out: &mut Vec<String>| {
        if pending.is_empty() {
            return;
        }
        match String::from_utf8(std::mem::take(pending)) {
            Ok(text) => out.push(text),
            Err(error) => {
                let count = error.as_bytes().len();
                out.extend(std::iter::repeat_n("\u{FFFD}".to_string(), count));
            }
        }
    };
    for token in tokens {
        match fallback_byte(&token) {
            Some(byte) => pending.push(byte),
            None => {
                flush(&mut pending, &mut out);
                out.push(token);
            }
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Hugging Face's `Strip` on one token, counted in characters.
fn strip(token: &str, content: char, start: usize, stop: usize) -> String {
    let chars: Vec<char> = token.chars().collect();
    let start_cut = chars.iter().take(start).take_while(|&&c| c == content).count();
    let stop_cut = chars.len() - chars.iter().rev().take(stop).take_while(|&&c| c == content).count();
    chars.get(start_cut..stop_cut).map(|kept| kept.iter().collect()).unwrap_or_default()
}

/// Hugging Face's `cleanup`: the replacements in its order (each over the whole token).
fn clean_up_spacing(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" do not", " don't")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn continuation_glues_and_first_token_keeps_its_prefix() {
        let d = Decoder::WordPiece { prefix: "##".into(), cleanup: true };
        assert_eq!(d.decode(tokens(&["##a", "un", "##aff", "##able", "."])), "##a unaffable.");
    }

    #[test]
    fn cleanup_is_per_token_so_it_only_sees_the_space_it_adds() {
        let d = Decoder::WordPiece { prefix: "##".into(), cleanup: true };
        // Each token gets one leading space, so " ' " (space, quote, space) never occurs
        // within a token: "it's" does not come back.
        assert_eq!(d.decode(tokens(&["it", "'", "s"])), "it ' s");
        let raw = Decoder::WordPiece { prefix: "##".into(), cleanup: false };
        assert_eq!(raw.decode(tokens(&["a", ",", "b"])), "a , b");
    }

    // The expected strings below are what Hugging Face `tokenizers` 0.23.3 gives.

    #[test]
    fn byte_fallback_runs_become_text_or_one_replacement_per_byte() {
        let d = Decoder::Sequence(vec![Decoder::ByteFallback, Decoder::Fuse]);
        let input = ["<0xE4>", "<0xB8>", "<0xAD>", "a", "<0xE4>", "b", "<0xe4>", "<0xFF>"];
        assert_eq!(d.decode(tokens(&input)), "中a\u{FFFD}b\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn metaspace_drops_every_replacement_of_the_first_token() {
        let d = |strip_first| Decoder::Metaspace { replacement: '\u{2581}', strip_first };
        let input = ["\u{2581}a\u{2581}b", "\u{2581}c"];
        assert_eq!(d(true).decode(tokens(&input)), "ab c");
        assert_eq!(d(false).decode(tokens(&input)), " a b c");
    }

    #[test]
    fn strip_counts_characters_and_never_panics() {
        let d = Decoder::Strip { content: ' ', start: 2, stop: 1 };
        assert_eq!(d.decode(tokens(&[" a ", "   x  ", "x"])), "a x x");
        // Hugging Face panics here (the cuts cross); the token becomes empty instead.
        let d = Decoder::Strip { content: ' ', start: 1, stop: 5 };
        assert_eq!(d.decode(tokens(&[" ", "ab"])), "ab");
    }

    #[test]
    fn byte_level_takes_tokens_outside_the_alphabet_as_written() {
        assert_eq!(Decoder::ByteLevel.decode(tokens(&["\u{120}a", "a b", "\u{e4}"])), " aa b\u{FFFD}");
    }
}
