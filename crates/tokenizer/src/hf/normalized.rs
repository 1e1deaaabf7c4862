//! Normalized text that remembers where each of its bytes came from in the original text.
//!
//! This is Hugging Face's `NormalizedString`, reduced to what encoding needs, with the same
//! alignment rules so that offsets come out identical: every byte of the normalized text carries
//! the original byte span of the character it came from. When a transformation replaces a
//! character, the new character takes the span of the character it replaces; when it inserts one,
//! the new character takes the span of the byte just before it; removed characters simply vanish.
//! So after NFD `é` gives `e` and U+0301 that both point at the 2 bytes of `é`, and after NFC
//! `e` + U+0301 gives an `é` that points at the `e` only (Hugging Face does exactly this).

use std::ops::Range;

use unicode_normalization_alignments::{is_nfc_quick, is_nfd_quick, is_nfkc_quick, is_nfkd_quick, IsNormalized, UnicodeNormalization};

/// A byte span `(start, end)` of the original text.
pub(crate) type Span = (usize, usize);

/// Text after normalization, with the original span of each of its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NormalizedText {
    text: String,
    /// One span per byte of `text`: the original bytes of the character it belongs to.
    spans: Vec<Span>,
    /// Where the original text starts: the span of a character inserted before everything.
    base: usize,
}

impl NormalizedText {
    /// `text` unchanged, as found at byte `base` of the original.
    pub fn new(text: &str, base: usize) -> NormalizedText {
        let mut spans = Vec::with_capacity(text.len());
        for (at, c) in text.char_indices() {
            let span = (base + at, base + at + c.len_utf8());
            spans.extend(std::iter::repeat_n(span, c.len_utf8()));
        }
        NormalizedText { text: text.to_string(), spans, base }
    }

    /// An empty text, to be filled with [`NormalizedText::push_slice`] and
    /// [`NormalizedText::push_char`], for an original that starts at byte `base`.
    pub fn empty(base: usize, capacity: usize) -> NormalizedText {
        NormalizedText { text: String::with_capacity(capacity), spans: Vec::with_capacity(capacity), base }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Where the original text starts.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The original span of the character that byte `at` belongs to.
    pub fn span_at(&self, at: usize) -> Option<Span> {
        self.spans.get(at).copied()
    }

    /// Append `from[range]` with its spans. A range that is not on character boundaries of
    /// `from` appends nothing.
    pub fn push_slice(&mut self, from: &NormalizedText, range: Range<usize>) {
        if let (Some(text), Some(spans)) = (from.text.get(range.clone()), from.spans.get(range)) {
            self.text.push_str(text);
            self.spans.extend_from_slice(spans);
        }
    }

    /// Append one character with the given original span.
    pub fn push_char(&mut self, c: char, span: Span) {
        self.text.push(c);
        self.spans.extend(std::iter::repeat_n(span, c.len_utf8()));
    }

    /// Put `prefix` before a non-empty text (Hugging Face's `prepend`): the new characters take
    /// the span of the first character. An empty text stays empty.
    pub fn prepend(&mut self, prefix: &str) {
        let Some(&first) = self.spans.first() else {
            return;
        };
        let mut text = String::with_capacity(prefix.len() + self.text.len());
        text.push_str(prefix);
        text.push_str(&self.text);
        let mut spans = Vec::with_capacity(text.len());
        spans.extend(std::iter::repeat_n(first, prefix.len()));
        spans.extend_from_slice(&self.spans);
        self.text = text;
        self.spans = spans;
    }

    /// Replace each of `matches` (byte ranges in order, not overlapping, on character
    /// boundaries) by `content` (Hugging Face's `replace`). The new characters all take the span
    /// of the byte just before the end of the range they replace, i.e. of the last replaced
    /// character, or for an empty match of the character before it (the start of the original
    /// when there is none).
    pub fn replace_ranges(&mut self, matches: &[Range<usize>], content: &str) {
        if matches.is_empty() {
            return;
        }
        let mut text = String::with_capacity(self.text.len());
        let mut spans = Vec::with_capacity(self.spans.len());
        let mut done = 0;
        for range in matches {
            if range.start < done || !self.text.is_char_boundary(range.start) {
                continue;
            }
            let Some(kept) = self.text.get(done..range.start) else {
                continue;
            };
            if !self.text.is_char_boundary(range.end) {
                continue;
            }
            text.push_str(kept);
            spans.extend_from_slice(&self.spans[done..range.start]);
            let span = match range.end.checked_sub(1) {
                Some(last) => self.spans[last],
                None => (self.base, self.base),
            };
            text.push_str(content);
            spans.extend(std::iter::repeat_n(span, content.len()));
            done = range.end;
        }
        text.push_str(&self.text[done..]);
        spans.extend_from_slice(&self.spans[done..]);
        self.text = text;
        self.spans = spans;
    }

    /// The normalized text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The original span covered by the normalized bytes `range`: from the start of its first
    /// byte's span to the end of its last byte's span (Hugging Face's `expand_alignments`).
    /// An empty or out-of-range `range` gives `None`.
    pub fn original_span(&self, range: Range<usize>) -> Option<Span> {
        let spans = self.spans.get(range)?;
        Some((spans.first()?.0, spans.last()?.1))
    }

    /// Keep the characters for which `keep` is true; each keeps its own span.
    pub fn filter(&mut self, keep: impl Fn(char) -> bool) {
        if self.text.chars().all(&keep) {
            return;
        }
        let mut text = String::with_capacity(self.text.len());
        let mut spans = Vec::with_capacity(self.spans.len());
        for (at, c) in self.text.char_indices() {
            if keep(c) {
                text.push(c);
                spans.extend_from_slice(&self.spans[at..at + c.len_utf8()]);
            }
        }
        self.text = text;
        self.spans = spans;
    }

    /// Replace each character by `map(c)`, which takes over its span.
    pub fn map(&mut self, map: impl Fn(char) -> char) {
        if self.text.chars().all(|c| map(c) == c) {
            return;
        }
        self.replace_each(|c, out| out.push(map(c)));
    }

    /// Replace each character by the characters `expand` pushes (none removes it); all of them
    /// take over its span. This is what Hugging Face's `transform` gives for a replacement
    /// followed by insertions, the way `lowercase` and the CJK spacing use it.
    pub fn replace_each(&mut self, mut expand: impl FnMut(char, &mut Vec<char>)) {
        let mut text = String::with_capacity(self.text.len() + self.text.len() / 4);
        let mut spans = Vec::with_capacity(self.spans.len() + self.spans.len() / 4);
        let mut buffer = Vec::with_capacity(4);
        for (at, c) in self.text.char_indices() {
            buffer.clear();
            expand(c, &mut buffer);
            let span = self.spans[at];
            for &new in &buffer {
                text.push(new);
                spans.extend(std::iter::repeat_n(span, new.len_utf8()));
            }
        }
        self.text = text;
        self.spans = spans;
    }

    /// Unicode lower-casing (Rust's `char::to_lowercase`, as Hugging Face uses).
    pub fn lowercase(&mut self) {
        if !self.text.chars().any(|c| c.is_uppercase() || !c.is_ascii()) {
            return;
        }
        self.replace_each(|c, out| out.extend(c.to_lowercase()));
    }

    /// Canonical decomposition.
    pub fn nfd(&mut self) {
        if is_nfd_quick(self.text.chars()) != IsNormalized::Yes {
            let dest: Vec<(char, isize)> = self.text.as_str().nfd().collect();
            self.transform(dest);
        }
    }

    /// Compatibility decomposition.
    pub fn nfkd(&mut self) {
        if is_nfkd_quick(self.text.chars()) != IsNormalized::Yes {
            let dest: Vec<(char, isize)> = self.text.as_str().nfkd().collect();
            self.transform(dest);
        }
    }

    /// Canonical composition.
    pub fn nfc(&mut self) {
        if is_nfc_quick(self.text.chars()) != IsNormalized::Yes {
            let dest: Vec<(char, isize)> = self.text.as_str().nfc().collect();
            self.transform(dest);
        }
    }

    /// Compatibility composition.
    pub fn nfkc(&mut self) {
        if is_nfkc_quick(self.text.chars()) != IsNormalized::Yes {
            let dest: Vec<(char, isize)> = self.text.as_str().nfkc().collect();
            self.transform(dest);
        }
    }

    /// Hugging Face's `transform` over the whole text: `dest` lists the new characters, each with
    /// a change: 0 replaces the next old character, 1 inserts, -n replaces the next old character
    /// and removes the n after it. Spans follow the rules in the module doc. A `dest` that runs
    /// past the old text (never produced by the normalizers here) gets empty spans at the end
    /// instead of a panic.
    fn transform(&mut self, dest: Vec<(char, isize)>) {
        let mut old = self.text.chars();
        let end = self.text.len();
        let end_span = self.spans.last().map_or((0, 0), |s| (s.1, s.1));
        let mut offset = 0usize;
        let mut text = String::with_capacity(self.text.len());
        let mut spans = Vec::with_capacity(self.spans.len());
        for (c, change) in dest {
            let span = if change > 0 {
                match offset.checked_sub(1) {
                    Some(prev) => self.spans.get(prev).copied().unwrap_or(end_span),
                    None => (0, 0),
                }
            } else {
                self.spans.get(offset).copied().unwrap_or(end_span)
            };
            if change <= 0 {
                offset += old.next().map_or(0, char::len_utf8);
            }
            if change < 0 {
                for _ in 0..change.unsigned_abs() {
                    offset += old.next().map_or(0, char::len_utf8);
                }
            }
            offset = offset.min(end);
            text.push(c);
            spans.extend(std::iter::repeat_n(span, c.len_utf8()));
        }
        self.text = text;
        self.spans = spans;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans_of(n: &NormalizedText) -> Vec<Span> {
        n.as_str().char_indices().map(|(at, _)| n.spans[at]).collect()
    }

    #[test]
    fn nfd_gives_each_part_the_span_of_the_composed_character() {
        let mut n = NormalizedText::new("élé", 0);
        n.nfd();
        assert_eq!(n.as_str(), "e\u{301}le\u{301}");
        assert_eq!(spans_of(&n), [(0, 2), (0, 2), (2, 3), (3, 5), (3, 5)]);
    }

    #[test]
    fn nfc_gives_the_composed_character_the_span_of_its_first_part_only() {
        let mut n = NormalizedText::new("e\u{301}x", 10);
        n.nfc();
        assert_eq!(n.as_str(), "éx");
        assert_eq!(spans_of(&n), [(10, 11), (13, 14)]);
    }

    #[test]
    fn filter_keeps_own_spans_and_drops_the_rest() {
        let mut n = NormalizedText::new("a\u{0}b", 0);
        n.filter(|c| c != '\u{0}');
        assert_eq!(n.as_str(), "ab");
        assert_eq!(spans_of(&n), [(0, 1), (2, 3)]);
        assert_eq!(n.original_span(0..2), Some((0, 3)));
        assert_eq!(n.original_span(1..1), None);
    }

    #[test]
    fn lowercase_expansion_shares_the_span() {
        let mut n = NormalizedText::new("İx", 0);
        n.lowercase();
        assert_eq!(n.as_str(), "i\u{307}x");
        assert_eq!(spans_of(&n), [(0, 2), (0, 2), (2, 3)]);
    }
}
