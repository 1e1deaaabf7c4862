//! WordPiece: greedy longest-match-first subwords, as in BERT and Hugging Face.
//!
//! A word is spelled from the left: at each position the longest vocabulary entry that matches
//! is taken (after the first, entries are looked up with the `##` prefix), then the search goes
//! on after it. A word that cannot be spelled this way, or that is longer than
//! `max_input_chars_per_word` characters, becomes a single unknown token covering the whole word.
//!
//! Hugging Face tries every end position from the end of the word down; we start at the longest
//! vocabulary entry instead, which finds the same match without building the longer strings that
//! cannot match (each try allocates `##` + the candidate in Hugging Face).

use std::collections::HashMap;
use std::ops::Range;

use super::HfError;

/// One token of a word: its id and its byte span within the word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub id: u32,
    pub span: (usize, usize),
}

/// A WordPiece vocabulary.
#[derive(Clone, Debug)]
pub(crate) struct WordPiece {
    /// Every token -> id: what the first piece of a word is looked up in.
    vocab: HashMap<String, u32>,
    /// Tokens that start with the prefix, keyed without it: what later pieces are looked up in.
    continuations: HashMap<String, u32>,
    /// Longest key of `vocab` and of `continuations`, in bytes.
    longest: usize,
    longest_continuation: usize,
    /// id -> token text.
    id_to_token: HashMap<u32, String>,
    unk_id: u32,
    max_input_chars_per_word: usize,
}

impl WordPiece {
    /// Build from a vocabulary; the unknown token must be in it (Hugging Face would fail on the
    /// first word it cannot spell instead).
    pub fn new(vocab: HashMap<String, u32>, unk_token: &str, prefix: &str, max_input_chars_per_word: usize) -> Result<WordPiece, HfError> {
        let unk_id = *vocab
            .get(unk_token)
            .ok_or_else(|| HfError::Invalid { path: "model.unk_token".into(), message: format!("{unk_token:?} is not in the vocabulary") })?;
        let continuations: HashMap<String, u32> =
            vocab.iter().filter_map(|(token, &id)| Some((token.strip_prefix(prefix)?.to_string(), id))).collect();
        let mut id_to_token = HashMap::with_capacity(vocab.len());
        // When two tokens share an id, keep the smaller text so the choice does not depend on
        // hash order.
        for (token, &id) in &vocab {
            id_to_token
                .entry(id)
                .and_modify(|old: &mut String| {
                    if token < old {
                        *old = token.clone();
                    }
                })
                .or_insert_with(|| token.clone());
        }
        Ok(WordPiece {
            longest: vocab.keys().map(String::len).max().unwrap_or(0),
            longest_continuation: continuations.keys().map(String::len).max().unwrap_or(0),
            vocab,
            continuations,
            id_to_token,
            unk_id,
            max_input_chars_per_word,
        })
    }

    /// Id of a token text.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// Text of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.id_to_token.get(&id).map(String::as_str)
    }

    /// Number of entries in the vocabulary.
    pub fn len(&self) -> usize {
        self.vocab.len()
    }

    /// Push the pieces of `word` to `out`.
    pub fn tokenize(&self, word: &str, out: &mut Vec<Piece>) {
        if word.is_empty() {
            return;
        }
        let whole = Piece { id: self.unk_id, span: (0, word.len()) };
        // Count characters only up to the limit: a 1 MB word must not cost a full count.
        if word.chars().nth(self.max_input_chars_per_word).is_some() {
            out.push(whole);
            return;
        }
        let first = out.len();
        let mut start = 0;
        while start < word.len() {
            let (table, longest) = if start == 0 { (&self.vocab, self.longest) } else { (&self.continuations, self.longest_continuation) };
            match longest_match(word, start..word.len(), table, longest) {
                Some((end, id)) => {
                    out.push(Piece { id, span: (start, end) });
                    start = end;
                }
                None => {
                    out.truncate(first);
                    out.push(whole);
                    return;
                }
            }
        }
    }
}

/// The longest `word[range.start..end]` in `table`, trying ends from the longest possible down
/// by whole characters: `(end, id)`.
fn longest_match(word: &str, range: Range<usize>, table: &HashMap<String, u32>, longest: usize) -> Option<(usize, u32)> {
    let mut end = range.end.min(range.start.saturating_add(longest));
    while !word.is_char_boundary(end) {
        end -= 1;
    }
    while end > range.start {
        if let Some(&id) = word.get(range.start..end).and_then(|s| table.get(s)) {
            return Some((end, id));
        }
        end -= 1;
        while !word.is_char_boundary(end) {
            end -= 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(tokens: &[&str], max_chars: usize) -> WordPiece {
        let vocab = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        WordPiece::new(vocab, "[UNK]", "##", max_chars).unwrap()
    }

    fn spell(model: &WordPiece, word: &str) -> Vec<String> {
        let mut out = Vec::new();
        model.tokenize(word, &mut out);
        out.iter().map(|p| model.id_to_token(p.id).unwrap().to_string()).collect()
    }

    #[test]
    fn greedy_longest_first_with_continuations() {
        let m = model(&["[UNK]", "un", "una", "##aff", "##able", "##ffable", "##a"], 100);
        // "una" is longer than "un" and wins, even though "un" + "##affable" would also spell it.
        assert_eq!(spell(&m, "unaffable"), ["una", "##ffable"]);
    }

    #[test]
    fn a_word_that_cannot_be_spelled_is_one_unknown() {
        let m = model(&["[UNK]", "a", "##b"], 100);
        assert_eq!(spell(&m, "abc"), ["[UNK]"]);
        assert_eq!(spell(&m, "ab"), ["a", "##b"]);
    }

    #[test]
    fn over_long_word_is_unknown_even_when_spellable() {
        let m = model(&["[UNK]", "a", "##a"], 3);
        assert_eq!(spell(&m, "aaa"), ["a", "##a", "##a"]);
        assert_eq!(spell(&m, "aaaa"), ["[UNK]"]);
    }

    #[test]
    fn missing_unknown_token_is_an_error() {
        let vocab = HashMap::from([("a".to_string(), 0)]);
        assert!(WordPiece::new(vocab, "[UNK]", "##", 100).is_err());
    }
}
