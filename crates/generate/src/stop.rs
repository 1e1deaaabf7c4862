//! Stop strings: matched on the decoded text across token boundaries, never shown to the user.
//!
//! A stop string such as "\nUser:" usually spans several tokens, so each piece of text is held
//! back while its end could still be the start of a stop string ("\nUs" might become "\nUser:").
//! Text is released as soon as it can no longer be part of a match.
//!
//! Which stop wins: the occurrence that *completes* first in the stream; among occurrences ending
//! at the same place, the one that starts earliest (the longest). Choosing by completion makes
//! the output independent of how the text was split into pieces: waiting to see whether a longer
//! stop that started earlier will complete would need unbounded lookahead.

/// What the caller may do after a piece of text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// No stop yet: this text (possibly empty) is safe to emit now.
    Continue(String),
    /// A stop string completed: emit this text (what came before the stop) and end generation.
    Stopped(String),
}

/// Streams text through a set of stop strings.
#[derive(Clone, Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text not yet released: the longest suffix seen that is a prefix of some stop string.
    held: String,
    /// A stop completed; everything after it is dropped.
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops`; empty strings are ignored (they would match before any text).
    pub fn new(stops: Vec<String>) -> StopMatcher {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        StopMatcher { stops, held: String::new(), stopped: false }
    }

    /// Feeds the next piece of decoded text. After a `Stopped`, further pieces are dropped and
    /// answer `Stopped("")`.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stopped {
            return StopOutcome::Stopped(String::new());
        }
        self.held.push_str(text);

        if let Some(start) = self.first_completed_stop() {
            self.stopped = true;
            self.held.truncate(start);
            return StopOutcome::Stopped(std::mem::take(&mut self.held));
        }

        let hold = self.longest_partial_suffix();
        let release = self.held.len() - hold;
        let emitted = self.held[..release].to_string();
        self.held.drain(..release);
        StopOutcome::Continue(emitted)
    }

    /// Ends the stream: releases whatever is still held (it did not become a stop).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Start (byte offset in `held`) of the stop occurrence that completes first, ties to the
    /// earliest start. Earlier pushes found no complete stop, so every occurrence here ends in
    /// the newest piece and "completes first" means "smallest end offset".
    fn first_completed_stop(&self) -> Option<usize> {
        self.stops.iter().filter_map(|stop| self.held.find(stop.as_str()).map(|start| (start + stop.len(), start))).min().map(|(_end, start)| start)
    }

    /// Length in bytes of the longest suffix of `held` that is a proper prefix of some stop.
    /// A stop prefix starts on a character boundary of valid UTF-8, so the cut in `held` is on a
    /// character boundary too.
    fn longest_partial_suffix(&self) -> usize {
        let mut longest = 0;
        for stop in &self.stops {
            let max_len = (stop.len() - 1).min(self.held.len());
            for len in (longest + 1..=max_len).rev() {
                if stop.is_char_boundary(len) && self.held.ends_with(&stop[..len]) {
                    longest = len;
                    break;
                }
            }
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(stops.iter().map(|s| s.to_string()).collect())
    }

    fn cont(s: &str) -> StopOutcome {
        StopOutcome::Continue(s.to_string())
    }

    fn stopped(s: &str) -> StopOutcome {
        StopOutcome::Stopped(s.to_string())
    }

    /// The reference: the text before the first stop to complete (ties: longest), and whether
    /// any did; found by scanning every end position.
    fn truncate_at_first_stop(text: &str, stops: &[String]) -> (String, bool) {
        for end in 0..=text.len() {
            if !text.is_char_boundary(end) {
                continue;
            }
            let best = stops.iter().filter(|s| !s.is_empty() && text[..end].ends_with(s.as_str())).map(|s| s.len()).max();
            if let Some(len) = best {
                return (text[..end - len].to_string(), true);
            }
        }
        (text.to_string(), false)
    }

    #[test]
    fn stop_split_across_three_pushes() {
        let mut m = matcher(&["<|im_end|>"]);
        assert_eq!(m.push("Hello<|im"), cont("Hello"));
        assert_eq!(m.push("_e"), cont(""));
        assert_eq!(m.push("nd|> trailing"), stopped(""));
        assert_eq!(m.push("more"), stopped(""));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn held_partial_that_is_not_a_stop_is_released() {
        let mut m = matcher(&["\nUser:"]);
        assert_eq!(m.push("a\nUs"), cont("a"));
        assert_eq!(m.push("ually"), cont("\nUsually"));
        assert_eq!(m.push(" fine\nU"), cont(" fine"));
        assert_eq!(m.finish(), "\nU");
    }

    #[test]
    fn overlapping_stops_ab_and_b_cut_before_the_longer() {
        // "ab" and "b" complete at the same byte: the earlier start wins, "a" is not printed.
        let mut m = matcher(&["ab", "b"]);
        assert_eq!(m.push("xa"), cont("x"));
        assert_eq!(m.push("b"), stopped(""));

        let mut m = matcher(&["b", "ab"]);
        assert_eq!(m.push("xab"), stopped("x"));
    }

    #[test]
    fn earliest_completed_match_wins() {
        let mut m = matcher(&["cd", "bcdx", "zz"]);
        assert_eq!(m.push("abcdxzz"), stopped("ab"));
        // The stop that completes first wins even if a longer one started earlier and completes
        // later: the answer must not depend on how the text was split.
        let mut m = matcher(&["abcd", "bc"]);
        assert_eq!(m.push("abcd"), stopped("a"));
        let mut m = matcher(&["abcd", "bc"]);
        assert_eq!(m.push("abc"), stopped("a"));
    }

    #[test]
    fn multibyte_text_and_stops() {
        let mut m = matcher(&["日本語", "é!"]);
        assert_eq!(m.push("café"), cont("caf"));
        assert_eq!(m.push(" 日本"), cont("é "));
        assert_eq!(m.push("人"), cont("日本人"));
        assert_eq!(m.push("é!x"), stopped(""));

        // A stop whose first byte equals the first byte of another character must not split it.
        let mut m = matcher(&["éa"]);
        assert_eq!(m.push("è"), cont("è"));
    }

    #[test]
    fn empty_stops_are_ignored_and_no_stops_pass_everything() {
        let mut m = matcher(&[""]);
        assert_eq!(m.push("abc"), cont("abc"));
        let mut m = matcher(&[]);
        assert_eq!(m.push("abc"), cont("abc"));
        assert_eq!(m.finish(), "");
    }

    proptest! {
        #[test]
        fn emitted_text_is_input_truncated_at_first_stop(
            pieces in proptest::collection::vec("[abé]{0,4}", 0..12),
            stops in proptest::collection::vec("[abé]{0,3}", 0..4),
        ) {
            let text: String = pieces.concat();
            let (want, want_stopped) = truncate_at_first_stop(&text, &stops);
            let mut m = StopMatcher::new(stops.clone());
            let mut emitted = String::new();
            let mut got_stopped = false;
            for piece in &pieces {
                match m.push(piece) {
                    StopOutcome::Continue(s) => emitted.push_str(&s),
                    StopOutcome::Stopped(s) => {
                        emitted.push_str(&s);
                        got_stopped = true;
                        break;
                    }
                }
            }
            if !got_stopped {
                emitted.push_str(&m.finish());
            }
            prop_assert_eq!(emitted, want);
            prop_assert_eq!(got_stopped, want_stopped);
        }
    }
}
