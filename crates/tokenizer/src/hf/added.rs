//! Added tokens: found in the text before normalization (or after it, for `normalized` ones)
//! and emitted whole, as Hugging Face's `AddedVocabulary` does.
//!
//! Matching is leftmost-longest over all tokens of one kind (what Hugging Face's Aho-Corasick
//! automaton does), scanning left to right without overlaps. A match is then checked and widened
//! by the token's flags: `single_word` drops a match that touches a word character (`\w`) on
//! either side, and the scan does not retry a shorter token there; `lstrip`/`rstrip` swallow the
//! whitespace before/after it (never past the previous match).
//!
//! Ids follow Hugging Face rather than the file: a token whose text is in the model's vocabulary
//! takes the model's id, any other takes the next id after the vocabulary and the added tokens
//! before it (the two agree on every file Hugging Face writes).

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use super::bert::is_word_char;
use super::model::Model;
use super::normalize::Normalizer;
use super::spec::AddedTokenSpec;

/// An added token with the id it ended up with.
#[derive(Clone, Debug)]
struct Added {
    spec: AddedTokenSpec,
    id: u32,
}

/// A set of patterns matched leftmost-longest; ties in length go to the earlier pattern.
#[derive(Clone, Debug, Default)]
struct Matcher {
    /// For each first byte, indices into `patterns`, longest first (then earlier first).
    by_first_byte: HashMap<u8, Vec<usize>>,
    /// (pattern text, index into `AddedVocabulary::tokens`).
    patterns: Vec<(String, usize)>,
}

impl Matcher {
    fn new(patterns: Vec<(String, usize)>) -> Matcher {
        let mut by_first_byte: HashMap<u8, Vec<usize>> = HashMap::new();
        for (i, (text, _)) in patterns.iter().enumerate() {
            // An empty pattern would match everywhere; Hugging Face's automaton would report
            // empty matches, which cut nothing. Leaving it out cuts nothing either.
            if let Some(&first) = text.as_bytes().first() {
                by_first_byte.entry(first).or_default().push(i);
            }
        }
        for list in by_first_byte.values_mut() {
            list.sort_by(|&a, &b| patterns[b].0.len().cmp(&patterns[a].0.len()).then(a.cmp(&b)));
        }
        Matcher { by_first_byte, patterns }
    }

    /// The leftmost-longest matches in `text`, without overlaps: (byte range, token index).
    fn find_all(&self, text: &str) -> Vec<(Range<usize>, usize)> {
        let mut found = Vec::new();
        if self.patterns.is_empty() {
            return found;
        }
        let bytes = text.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            let hit = self
                .by_first_byte
                .get(&bytes[at])
                .and_then(|list| list.iter().map(|&i| &self.patterns[i]).find(|(pattern, _)| bytes[at..].starts_with(pattern.as_bytes())));
            match hit {
                Some((pattern, token)) => {
                    found.push((at..at + pattern.len(), *token));
                    at += pattern.len();
                }
                None => at += 1,
            }
        }
        found
    }
}

/// A part of a text after added tokens are cut out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Plain text, to be normalized/pre-tokenized/modelled.
    Text(Range<usize>),
    /// An added token, with the text it matched (including stripped whitespace).
    Token { id: u32, range: Range<usize> },
}

/// The added tokens of a tokenizer.
#[derive(Clone, Debug, Default)]
pub(crate) struct AddedVocabulary {
    tokens: Vec<Added>,
    /// Matched against the original text.
    raw: Matcher,
    /// Matched against the normalized text, with normalized contents.
    normalized: Matcher,
    content_to_id: HashMap<String, u32>,
    id_to_content: HashMap<u32, String>,
    special: HashSet<String>,
}

impl AddedVocabulary {
    /// Register `specs` in file order over `model`, with ids as Hugging Face assigns them.
    pub fn new(specs: &[AddedTokenSpec], model: &Model, normalizer: Option<&Normalizer>) -> AddedVocabulary {
        let mut tokens: Vec<Added> = Vec::new();
        let mut content_to_id: HashMap<String, u32> = HashMap::new();
        let mut id_to_content: HashMap<u32, String> = HashMap::new();
        let mut special = HashSet::new();
        for spec in specs {
            if spec.content.is_empty() || tokens.iter().any(|t| t.spec == *spec) {
                continue;
            }
            if spec.special {
                special.insert(spec.content.clone());
            }
            let vocab_size = model.len() as u32;
            let id = match content_to_id.get(&spec.content).copied().or_else(|| model.token_to_id(&spec.content)) {
                Some(id) => id,
                None => match content_to_id.values().max() {
                    Some(&max) if max >= vocab_size || vocab_size == 0 => max.saturating_add(1),
                    _ => vocab_size,
                },
            };
            content_to_id.insert(spec.content.clone(), id);
            // Hugging Face hands out a normalized token as its normalized text (decode and
            // `id_to_token`), so that a decoder sees what the model saw.
            let shown = match normalizer {
                Some(n) if spec.normalized => n.normalize_str(&spec.content),
                _ => spec.content.clone(),
            };
            id_to_content.insert(id, shown);
            // A later entry with the same text replaces the earlier one's flags.
            tokens.retain(|t| t.spec.content != spec.content);
            tokens.push(Added { spec: spec.clone(), id });
        }
        // Hugging Face lists special tokens first, then the others, each in file order; that
        // order breaks ties between patterns of equal length.
        tokens.sort_by_key(|t| !t.spec.special);
        let mut raw = Vec::new();
        let mut normalized = Vec::new();
        for (index, token) in tokens.iter().enumerate() {
            if token.spec.normalized {
                let content = match normalizer {
                    Some(n) => n.normalize_str(&token.spec.content),
                    None => token.spec.content.clone(),
                };
                normalized.push((content, index));
            } else {
                raw.push((token.spec.content.clone(), index));
            }
        }
        AddedVocabulary { tokens, raw: Matcher::new(raw), normalized: Matcher::new(normalized), content_to_id, id_to_content, special }
    }

    /// Whether there are tokens to match in the normalized text.
    pub fn has_normalized(&self) -> bool {
        !self.normalized.patterns.is_empty()
    }

    /// Cut `text` by the tokens matched on the original text (`normalized == false`).
    pub fn cut_raw(&self, text: &str) -> Vec<Cut> {
        self.cut(text, &self.raw)
    }

    /// Cut normalized `text` by the tokens matched after normalization.
    pub fn cut_normalized(&self, text: &str) -> Vec<Cut> {
        self.cut(text, &self.normalized)
    }

    /// Hugging Face's `find_matches`: matches widened by lstrip/rstrip, and the text between.
    fn cut(&self, text: &str, matcher: &Matcher) -> Vec<Cut> {
        let mut cuts = Vec::new();
        let mut done = 0;
        for (range, index) in matcher.find_all(text) {
            let token = &self.tokens[index];
            let (mut start, mut stop) = (range.start, range.end);
            // A match can start before `done` only after an rstrip swallowed its first
            // characters (a token that starts with whitespace); Hugging Face would then emit
            // overlapping pieces. We skip it instead.
            if start < done {
                continue;
            }
            if token.spec.single_word {
                let word_before = text[..start].chars().next_back().is_some_and(is_word_char);
                let word_after = text[stop..].chars().next().is_some_and(is_word_char);
                if word_before || word_after {
                    continue;
                }
            }
            if token.spec.lstrip {
                let trimmed = text[..start].trim_end_matches(char::is_whitespace).len();
                start = trimmed.max(done);
            }
            if token.spec.rstrip {
                stop = text.len() - text[stop..].trim_start_matches(char::is_whitespace).len();
            }
            if done < start {
                cuts.push(Cut::Text(done..start));
            }
            cuts.push(Cut::Token { id: token.id, range: start..stop });
            done = stop;
        }
        if done < text.len() {
            cuts.push(Cut::Text(done..text.len()));
        }
        cuts
    }

    /// Id of an added token's text.
    pub fn token_to_id(&self, content: &str) -> Option<u32> {
        self.content_to_id.get(content).copied()
    }

    /// Text of an added token id.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.id_to_content.get(&id).map(String::as_str)
    }

    /// Whether `content` is the text of a special added token. Like Hugging Face, this looks at
    /// the text as written in the file: a normalized special token whose normalized text differs
    /// (`<Q>` shown as `<q>`) is not skipped by `decode(.., skip_special)`.
    pub fn is_special(&self, content: &str) -> bool {
        self.special.contains(content)
    }
}
