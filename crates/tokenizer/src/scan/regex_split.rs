//! Hugging Face's `Split` pre-tokenizer for any pattern, on fancy-regex.
//!
//! `Split` finds the pattern's matches, lists them together with the gaps between them, and then
//! keeps, drops or glues the matches to their neighbours as its behaviour says; `invert` swaps
//! the roles of matches and gaps first. Empty pieces are dropped at the end. This module copies
//! that logic (tokenizers' `NormalizedString::split`) step by step.
//!
//! Hugging Face compiles the pattern with Oniguruma; fancy-regex in its Oniguruma mode parses the
//! same syntax and, like Oniguruma, backtracks with leftmost-first alternation. Its documented
//! gaps (multi-character case folding such as `(?i:ss)` against `ß`, `\X`, absent operators)
//! touch none of the patterns published tokenizers use. fancy-regex gives up on a match after a
//! million backtracking steps, which [`RegexSplit::split`] reports as an error rather than a
//! wrong cut.

use std::ops::Range;

use fancy_regex::{Regex, RegexBuilder};

use super::Pattern;

/// What `Split` does with the matches of its pattern (Hugging Face's `SplitDelimiterBehavior`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SplitBehavior {
    /// Matches are dropped; the gaps are the pieces.
    Removed,
    /// Matches and gaps are all pieces.
    Isolated,
    /// Each match is glued to the end of the piece before it.
    MergedWithPrevious,
    /// Each match is glued to the start of the piece after it.
    MergedWithNext,
    /// Neighbouring matches are glued together, and so are neighbouring gaps.
    Contiguous,
}

impl SplitBehavior {
    /// The behaviour for its `tokenizer.json` name (`"Removed"`, `"Isolated"`,
    /// `"MergedWithPrevious"`, `"MergedWithNext"`, `"Contiguous"`), or `None`.
    pub fn from_name(name: &str) -> Option<SplitBehavior> {
        Some(match name {
            "Removed" => SplitBehavior::Removed,
            "Isolated" => SplitBehavior::Isolated,
            "MergedWithPrevious" => SplitBehavior::MergedWithPrevious,
            "MergedWithNext" => SplitBehavior::MergedWithNext,
            "Contiguous" => SplitBehavior::Contiguous,
            _ => return None,
        })
    }

    /// The `tokenizer.json` name of this behaviour.
    pub fn name(self) -> &'static str {
        match self {
            SplitBehavior::Removed => "Removed",
            SplitBehavior::Isolated => "Isolated",
            SplitBehavior::MergedWithPrevious => "MergedWithPrevious",
            SplitBehavior::MergedWithNext => "MergedWithNext",
            SplitBehavior::Contiguous => "Contiguous",
        }
    }
}

/// Why a `Split` pattern could not be built or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The pattern does not compile.
    #[error("Split pattern {pattern:?} does not compile: {reason}")]
    BadPattern { pattern: String, reason: String },
    /// Matching gave up (fancy-regex's backtracking limit).
    #[error("Split pattern {pattern:?} failed on a text of {text_bytes} bytes: {reason}")]
    MatchFailed { pattern: String, text_bytes: usize, reason: String },
}

/// A `Split` pre-tokenizer: a pattern, a behaviour and `invert`.
#[derive(Clone, Debug)]
pub struct RegexSplit {
    /// The regex as given (for a literal, the escaped text).
    pattern: String,
    regex: Regex,
    behavior: SplitBehavior,
    invert: bool,
    /// The scanner that gives the same pieces, when there is one.
    scanner: Option<Pattern>,
}

impl RegexSplit {
    /// A split on the regex `pattern` (Oniguruma syntax, as in `tokenizer.json`'s
    /// `{"Regex": ...}`). The known patterns with the `Isolated` behaviour and no `invert` run
    /// on their hand-written scanner.
    pub fn new(pattern: &str, behavior: SplitBehavior, invert: bool) -> Result<RegexSplit, SplitError> {
        let regex = RegexBuilder::new(pattern)
            .oniguruma_mode(true)
            .build()
            .map_err(|error| SplitError::BadPattern { pattern: pattern.to_string(), reason: error.to_string() })?;
        let scanner = Pattern::from_regex(pattern).filter(|_| behavior == SplitBehavior::Isolated && !invert);
        Ok(RegexSplit { pattern: pattern.to_string(), regex, behavior, invert, scanner })
    }

    /// A split on the literal text `literal` (`tokenizer.json`'s `{"String": ...}`).
    pub fn literal(literal: &str, behavior: SplitBehavior, invert: bool) -> Result<RegexSplit, SplitError> {
        RegexSplit::new(&fancy_regex::escape(literal), behavior, invert)
    }

    /// The regex (for a literal, the escaped text).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The behaviour.
    pub fn behavior(&self) -> SplitBehavior {
        self.behavior
    }

    /// Whether matches and gaps swap roles.
    pub fn invert(&self) -> bool {
        self.invert
    }

    /// The hand-written scanner this split runs on, if any.
    pub fn scanner(&self) -> Option<Pattern> {
        self.scanner
    }

    /// Append the byte ranges of the pieces of `text` to `out`, in order. Unlike a scanner's,
    /// the pieces need not cover the text (`Removed` drops some).
    pub fn split(&self, text: &str, out: &mut Vec<Range<usize>>) -> Result<(), SplitError> {
        if let Some(scanner) = self.scanner {
            out.extend(scanner.pieces(text));
            return Ok(());
        }
        let spans = self.matches_and_gaps(text)?;
        let kept = apply_behavior(spans, self.behavior);
        out.extend(kept.into_iter().filter(|range| !range.is_empty()));
        Ok(())
    }

    /// The pieces of `text`; see [`RegexSplit::split`].
    pub fn pieces(&self, text: &str) -> Result<Vec<Range<usize>>, SplitError> {
        let mut out = Vec::new();
        self.split(text, &mut out)?;
        Ok(out)
    }

    /// Every match and every non-empty gap between matches, in order, flagged `true` for a
    /// match (after `invert`). Empty matches are kept: they count when gluing.
    fn matches_and_gaps(&self, text: &str) -> Result<Vec<(Range<usize>, bool)>, SplitError> {
        let mut spans = Vec::new();
        let mut previous_end = 0;
        for found in self.regex.find_iter(text) {
            let found = found.map_err(|error| SplitError::MatchFailed {
                pattern: self.pattern.clone(),
                text_bytes: text.len(),
                reason: error.to_string(),
            })?;
            if found.start() != previous_end {
                spans.push((previous_end..found.start(), false));
            }
            spans.push((found.start()..found.end(), true));
            previous_end = found.end();
        }
        if previous_end != text.len() {
            spans.push((previous_end..text.len(), false));
        }
        if self.invert {
            for (_, is_match) in &mut spans {
                *is_match = !*is_match;
            }
        }
        Ok(spans)
    }
}

/// The pieces that `behavior` keeps from the matches and gaps, possibly empty.
fn apply_behavior(spans: Vec<(Range<usize>, bool)>, behavior: SplitBehavior) -> Vec<Range<usize>> {
    let mut kept: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    // The folds below start as if a gap came before the text, as Hugging Face's do.
    let mut previous_match = false;
    match behavior {
        SplitBehavior::Isolated => kept.extend(spans.into_iter().map(|(range, _)| range)),
        SplitBehavior::Removed => kept.extend(spans.into_iter().filter(|(_, is_match)| !is_match).map(|(range, _)| range)),
        SplitBehavior::Contiguous => {
            for (range, is_match) in spans {
                match kept.last_mut() {
                    Some(last) if is_match == previous_match => last.end = range.end,
                    _ => kept.push(range),
                }
                previous_match = is_match;
            }
        }
        SplitBehavior::MergedWithPrevious => {
            for (range, is_match) in spans {
                match kept.last_mut() {
                    Some(last) if is_match && !previous_match => last.end = range.end,
                    _ => kept.push(range),
                }
                previous_match = is_match;
            }
        }
        SplitBehavior::MergedWithNext => {
            // The mirror image: walk from the end, gluing each match to the piece after it.
            for (range, is_match) in spans.into_iter().rev() {
                match kept.last_mut() {
                    Some(last) if is_match && !previous_match => last.start = range.start,
                    _ => kept.push(range),
                }
                previous_match = is_match;
            }
            kept.reverse();
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces<'a>(split: &RegexSplit, text: &'a str) -> Vec<&'a str> {
        let ranges = split.pieces(text).expect("no backtracking limit on short text");
        ranges.into_iter().map(|range| &text[range]).collect()
    }

    fn split(pattern: &str, behavior: SplitBehavior, invert: bool) -> RegexSplit {
        RegexSplit::new(pattern, behavior, invert).expect("test pattern compiles")
    }

    #[test]
    fn behaviours_on_a_hyphen() {
        // The examples of Hugging Face's documentation of SplitDelimiterBehavior.
        let text = "the-final--countdown";
        let cases = [
            (SplitBehavior::Removed, vec!["the", "final", "countdown"]),
            (SplitBehavior::Isolated, vec!["the", "-", "final", "-", "-", "countdown"]),
            (SplitBehavior::MergedWithPrevious, vec!["the-", "final-", "-", "countdown"]),
            (SplitBehavior::MergedWithNext, vec!["the", "-final", "-", "-countdown"]),
            (SplitBehavior::Contiguous, vec!["the", "-", "final", "--", "countdown"]),
        ];
        for (behavior, expected) in cases {
            assert_eq!(pieces(&split("-", behavior, false), text), expected, "{behavior:?}");
        }
    }

    #[test]
    fn invert_keeps_the_matches() {
        let words = split(r"\w+", SplitBehavior::Removed, true);
        assert_eq!(pieces(&words, "ab, cd!"), ["ab", "cd"]);
        let gaps = split(r"\w+", SplitBehavior::Removed, false);
        assert_eq!(pieces(&gaps, "ab, cd!"), [", ", "!"]);
        let gaps = split(r"\w+", SplitBehavior::MergedWithPrevious, true);
        assert_eq!(pieces(&gaps, "ab, cd!"), ["ab, ", "cd!"]);
    }

    #[test]
    fn literal_is_escaped() {
        let dot = RegexSplit::literal(".", SplitBehavior::Isolated, false).expect("compiles");
        assert_eq!(pieces(&dot, "a.b"), ["a", ".", "b"]);
        assert_eq!(pieces(&dot, "ab"), ["ab"]);
    }

    #[test]
    fn known_patterns_run_on_their_scanner_only_when_isolated() {
        let llama3 = split(super::super::LLAMA3_REGEX, SplitBehavior::Isolated, false);
        assert_eq!(llama3.scanner(), Some(Pattern::Llama3));
        let removed = split(super::super::LLAMA3_REGEX, SplitBehavior::Removed, false);
        assert_eq!(removed.scanner(), None);
        assert!(pieces(&removed, "Hello world").is_empty());
        let inverted = split(super::super::GPT2_REGEX, SplitBehavior::Isolated, true);
        assert_eq!(inverted.scanner(), None);
    }

    #[test]
    fn bad_pattern_names_itself() {
        let error = RegexSplit::new("(unclosed", SplitBehavior::Isolated, false).expect_err("an unclosed group does not compile");
        assert!(matches!(&error, SplitError::BadPattern { pattern, .. } if pattern == "(unclosed"));
        assert!(error.to_string().contains("(unclosed"));
    }

    #[test]
    fn behaviour_names_round_trip() {
        for behavior in [
            SplitBehavior::Removed,
            SplitBehavior::Isolated,
            SplitBehavior::MergedWithPrevious,
            SplitBehavior::MergedWithNext,
            SplitBehavior::Contiguous,
        ] {
            assert_eq!(SplitBehavior::from_name(behavior.name()), Some(behavior));
        }
        assert_eq!(SplitBehavior::from_name("isolated"), None);
    }
}
