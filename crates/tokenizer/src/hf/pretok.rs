//! Pre-tokenizers: the normalized text cut into words, and for some changed on the way.
//!
//! Hugging Face applies each pre-tokenizer of a `Sequence` to every piece left by the one
//! before. Here the pieces are byte ranges of one buffer: the normalized text itself while the
//! steps only cut (BERT's, `Digits`, `Split`, `ByteLevel` without a prefix space), a new buffer
//! with the original span of every byte when a step changes the text (`Metaspace` turns spaces
//! into `▁`, `ByteLevel` may put a space before a piece). Offsets then come from the buffer.
//!
//! `ByteLevel` spells every byte as a character of the byte-level alphabet. When it is the last
//! step, the spelling is left to the model, which merges raw bytes directly
//! ([`Words::byte_level`]); a step after it sees the spelled text, as in Hugging Face.
//! `Split` runs on [`crate::scan::RegexSplit`], which hands the GPT-2, Llama-3 and Qwen2 patterns
//! to their hand-written scanners; `ByteLevel`'s own regex is the GPT-2 scanner.

use std::borrow::Cow;
use std::ops::Range;

use crate::byte_level;
use crate::scan::{Pattern, RegexSplit, SplitBehavior as ScanBehavior, SplitError};

use super::bert::{split_by, Splitter};
use super::normalized::NormalizedText;
use super::spec::{PreTokenizerSpec, SplitBehavior, SplitPattern};
use super::HfError;

/// When `Metaspace` puts its replacement before a piece that does not start with one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrependScheme {
    Always,
    /// Only before the piece at the very start of the original text.
    First,
    Never,
}

impl PrependScheme {
    fn from_name(name: &str, path: &str) -> Result<PrependScheme, HfError> {
        match name {
            "always" => Ok(PrependScheme::Always),
            "first" => Ok(PrependScheme::First),
            "never" => Ok(PrependScheme::Never),
            other => Err(HfError::Invalid { path: format!("{path}.prepend_scheme"), message: format!("unknown prepend scheme {other:?}") }),
        }
    }
}

/// One step of pre-tokenization.
#[derive(Clone, Debug)]
enum Step {
    Cut(Splitter),
    Split(RegexSplit),
    ByteLevel { add_prefix_space: bool, use_regex: bool },
    Metaspace { replacement: char, prepend: PrependScheme, split: bool },
}

/// A pre-tokenizer ready to run: its steps, nested sequences flattened.
#[derive(Clone, Debug)]
pub(crate) struct PreTokenizer {
    steps: Vec<Step>,
    /// A last `ByteLevel` step leaves the spelling to the model.
    raw_last: bool,
}

/// The words of a text: byte ranges of `text`, in order.
pub(crate) struct Words<'a> {
    pub text: Cow<'a, NormalizedText>,
    pub ranges: Vec<Range<usize>>,
    /// The words are raw text that the model must read in the byte-level alphabet (the last
    /// step was `ByteLevel`).
    pub byte_level: bool,
}

impl PreTokenizer {
    /// Build from a spec; a bad `Split` regex or prepend scheme is an error. With
    /// `model_reads_bytes`, a last `ByteLevel` step leaves the spelling to the model.
    pub fn new(spec: &PreTokenizerSpec, model_reads_bytes: bool) -> Result<PreTokenizer, HfError> {
        let mut steps = Vec::new();
        add_steps(spec, "pre_tokenizer".to_string(), &mut steps)?;
        let raw_last = model_reads_bytes && matches!(steps.last(), Some(Step::ByteLevel { .. }));
        Ok(PreTokenizer { steps, raw_last })
    }

    /// Whether the words come as raw text that the model must read in the byte-level alphabet.
    pub fn ends_byte_level(&self) -> bool {
        self.raw_last
    }

    /// Cut `text[range]` into words. A `Split` regex that gives up on a piece (fancy-regex's
    /// backtracking limit; never the hand-written patterns) is an error, or with `lenient` leaves
    /// that piece whole.
    pub fn run<'a>(&self, text: &'a NormalizedText, range: Range<usize>, lenient: bool) -> Result<Words<'a>, SplitError> {
        let mut words = Words { text: Cow::Borrowed(text), ranges: if range.is_empty() { vec![] } else { vec![range] }, byte_level: false };
        let mut next = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let last = i + 1 == self.steps.len();
            next.clear();
            match step {
                Step::Cut(splitter) => {
                    for range in &words.ranges {
                        splitter.split(words.text.as_str(), range.clone(), &mut next);
                    }
                }
                Step::Split(split) => {
                    let mut found = Vec::new();
                    for range in &words.ranges {
                        found.clear();
                        match split.split(&words.text.as_str()[range.clone()], &mut found) {
                            Ok(()) => next.extend(found.iter().map(|r| range.start + r.start..range.start + r.end)),
                            Err(_) if lenient => next.push(range.clone()),
                            Err(error) => return Err(error),
                        }
                    }
                }
                Step::ByteLevel { add_prefix_space, use_regex } => {
                    if *add_prefix_space {
                        prefix_spaces(&mut words);
                    }
                    if *use_regex {
                        for range in &words.ranges {
                            let piece = &words.text.as_str()[range.clone()];
                            next.extend(Pattern::Gpt2.pieces(piece).map(|r| range.start + r.start..range.start + r.end));
                        }
                    } else {
                        next.append(&mut words.ranges);
                    }
                    if last && self.raw_last {
                        words.byte_level = true;
                    } else {
                        spell_byte_level(&mut words.text, &mut next);
                    }
                }
                Step::Metaspace { replacement, prepend, split } => metaspace(&mut words, *replacement, *prepend, *split, &mut next),
            }
            std::mem::swap(&mut words.ranges, &mut next);
        }
        Ok(words)
    }
}

fn add_steps(spec: &PreTokenizerSpec, path: String, steps: &mut Vec<Step>) -> Result<(), HfError> {
    if let Some(splitter) = Splitter::from_spec(spec) {
        steps.push(Step::Cut(splitter));
        return Ok(());
    }
    match spec {
        PreTokenizerSpec::Sequence(parts) => {
            for (i, part) in parts.iter().enumerate() {
                add_steps(part, format!("{path}.pretokenizers[{i}]"), steps)?;
            }
        }
        PreTokenizerSpec::Split { pattern, behavior, invert } => {
            let behavior = scan_behavior(*behavior);
            let split = match pattern {
                SplitPattern::String(literal) => RegexSplit::literal(literal, behavior, *invert),
                SplitPattern::Regex(regex) => RegexSplit::new(regex, behavior, *invert),
            }
            .map_err(|error| HfError::Invalid { path: format!("{path}.pattern"), message: error.to_string() })?;
            steps.push(Step::Split(split));
        }
        PreTokenizerSpec::ByteLevel { add_prefix_space, use_regex, .. } => {
            steps.push(Step::ByteLevel { add_prefix_space: *add_prefix_space, use_regex: *use_regex })
        }
        PreTokenizerSpec::Metaspace { replacement, prepend_scheme, split } => {
            steps.push(Step::Metaspace { replacement: *replacement, prepend: PrependScheme::from_name(prepend_scheme, &path)?, split: *split })
        }
        // Taken by `Splitter::from_spec` above.
        PreTokenizerSpec::Bert
        | PreTokenizerSpec::Whitespace
        | PreTokenizerSpec::WhitespaceSplit
        | PreTokenizerSpec::Digits { .. }
        | PreTokenizerSpec::Punctuation { .. } => {}
    }
    Ok(())
}

fn scan_behavior(behavior: SplitBehavior) -> ScanBehavior {
    match behavior {
        SplitBehavior::Removed => ScanBehavior::Removed,
        SplitBehavior::Isolated => ScanBehavior::Isolated,
        SplitBehavior::MergedWithPrevious => ScanBehavior::MergedWithPrevious,
        SplitBehavior::MergedWithNext => ScanBehavior::MergedWithNext,
        SplitBehavior::Contiguous => ScanBehavior::Contiguous,
    }
}

/// `ByteLevel`'s `add_prefix_space`: a space before every piece that does not start with one,
/// with the span of the piece's first character (Hugging Face's `prepend`).
fn prefix_spaces(words: &mut Words) {
    let text = words.text.as_str();
    if words.ranges.iter().all(|r| text[r.clone()].starts_with(' ')) {
        return;
    }
    let old = words.text.as_ref();
    let mut buffer = NormalizedText::empty(old.base(), old.len() + words.ranges.len());
    let mut ranges = Vec::with_capacity(words.ranges.len());
    for range in &words.ranges {
        let start = buffer.len();
        if !old.as_str()[range.clone()].starts_with(' ') {
            if let Some(span) = old.span_at(range.start) {
                buffer.push_char(' ', span);
            }
        }
        buffer.push_slice(old, range.clone());
        ranges.push(start..buffer.len());
    }
    words.text = Cow::Owned(buffer);
    words.ranges = ranges;
}

/// Spell every byte of the pieces in the byte-level alphabet (for a step after `ByteLevel`);
/// each character takes the span of the character its byte belongs to.
fn spell_byte_level(text: &mut Cow<NormalizedText>, ranges: &mut [Range<usize>]) {
    let old = text.as_ref();
    let mut buffer = NormalizedText::empty(old.base(), old.len() * 2);
    for range in ranges.iter_mut() {
        let start = buffer.len();
        for at in range.clone() {
            let byte = old.as_str().as_bytes()[at];
            if let Some(span) = old.span_at(at) {
                buffer.push_char(byte_level::byte_to_char(byte), span);
            }
        }
        *range = start..buffer.len();
    }
    *text = Cow::Owned(buffer);
}

/// `Metaspace`: in each piece, spaces become `replacement`; then `replacement` goes before the
/// piece unless it starts with one (only for the piece at original offset 0 with `First`);
/// then, with `split`, a cut before every `replacement`.
fn metaspace(words: &mut Words, replacement: char, prepend: PrependScheme, split: bool, out: &mut Vec<Range<usize>>) {
    let old = words.text.as_ref();
    let mut buffer = NormalizedText::empty(old.base(), old.len() + old.len() / 2);
    let mut ranges = Vec::with_capacity(words.ranges.len());
    for range in &words.ranges {
        let piece = &old.as_str()[range.clone()];
        let start = buffer.len();
        let starts_replaced = piece.starts_with(' ') || piece.starts_with(replacement);
        let at_text_start = old.span_at(range.start).is_some_and(|span| span.0 == 0);
        let prepend_here = match prepend {
            PrependScheme::Always => true,
            PrependScheme::First => at_text_start,
            PrependScheme::Never => false,
        };
        if prepend_here && !starts_replaced {
            if let Some(span) = old.span_at(range.start) {
                buffer.push_char(replacement, span);
            }
        }
        let mut kept = range.start;
        for (at, c) in piece.char_indices() {
            if c == ' ' {
                let at = range.start + at;
                buffer.push_slice(old, kept..at);
                if let Some(span) = old.span_at(at) {
                    buffer.push_char(replacement, span);
                }
                kept = at + 1;
            }
        }
        buffer.push_slice(old, kept..range.end);
        ranges.push(start..buffer.len());
    }
    for range in ranges {
        if split {
            let piece = &buffer.as_str()[range.clone()];
            split_by(piece, range.start, |c| c == replacement, SplitBehavior::MergedWithNext, out);
        } else if !range.is_empty() {
            out.push(range);
        }
    }
    words.text = Cow::Owned(buffer);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(spec: &PreTokenizerSpec, text: &str) -> Vec<(String, (usize, usize))> {
        let pre = PreTokenizer::new(spec, true).unwrap();
        let normalized = NormalizedText::new(text, 0);
        let words = pre.run(&normalized, 0..text.len(), false).unwrap();
        words
            .ranges
            .iter()
            .map(|r| {
                let piece = &words.text.as_str()[r.clone()];
                let piece = if words.byte_level { piece.bytes().map(byte_level::byte_to_char).collect() } else { piece.to_string() };
                (piece, words.text.original_span(r.clone()).unwrap())
            })
            .collect()
    }

    fn owned(expected: &[(&str, (usize, usize))]) -> Vec<(String, (usize, usize))> {
        expected.iter().map(|(s, o)| (s.to_string(), *o)).collect()
    }

    // Expected values: Hugging Face `tokenizers` 0.23.3, `pre_tokenize_str`.

    #[test]
    fn metaspace_first_prepends_only_at_the_start_of_the_text() {
        let metaspace =
            |prepend_scheme: &str, split| PreTokenizerSpec::Metaspace { replacement: '\u{2581}', prepend_scheme: prepend_scheme.into(), split };
        assert_eq!(
            pieces(&metaspace("first", true), "Hey  friend! x"),
            owned(&[("\u{2581}Hey", (0, 3)), ("\u{2581}", (3, 4)), ("\u{2581}friend!", (4, 12)), ("\u{2581}x", (12, 14))])
        );
        let after_split = PreTokenizerSpec::Sequence(vec![
            PreTokenizerSpec::Split { pattern: SplitPattern::String(" ".into()), behavior: SplitBehavior::Isolated, invert: false },
            metaspace("first", false),
        ]);
        assert_eq!(
            pieces(&after_split, "Hey  friend! x"),
            owned(&[
                ("\u{2581}Hey", (0, 3)),
                ("\u{2581}", (3, 4)),
                ("\u{2581}", (4, 5)),
                ("friend!", (5, 12)),
                ("\u{2581}", (12, 13)),
                ("x", (13, 14))
            ])
        );
    }

    #[test]
    fn byte_level_prefix_space_goes_before_every_piece() {
        let spec = PreTokenizerSpec::Sequence(vec![
            PreTokenizerSpec::Digits { individual_digits: true },
            PreTokenizerSpec::ByteLevel { add_prefix_space: true, trim_offsets: true, use_regex: true },
        ]);
        assert_eq!(pieces(&spec, "ab12 cd"), owned(&[("\u{120}ab", (0, 2)), ("\u{120}1", (2, 3)), ("\u{120}2", (3, 4)), ("\u{120}cd", (4, 7))]));
    }

    #[test]
    fn a_step_after_byte_level_sees_the_spelled_text() {
        // "²" is the spelling of byte 0xB2, a continuation byte of "²" itself (C2 B2) and of
        // "β" (CE B2): Digits cuts inside both characters, and the halves keep its span.
        let spec = PreTokenizerSpec::Sequence(vec![
            PreTokenizerSpec::ByteLevel { add_prefix_space: false, trim_offsets: true, use_regex: false },
            PreTokenizerSpec::Digits { individual_digits: false },
        ]);
        assert_eq!(pieces(&spec, "aβ"), owned(&[("a\u{ce}", (0, 3)), ("\u{b2}", (1, 3))]));
    }
}
