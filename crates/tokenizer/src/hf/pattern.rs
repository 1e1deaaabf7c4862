//! The pattern of a `Replace` normalizer or decoder: a literal string or a regex (Oniguruma
//! syntax in Hugging Face; fancy-regex in its Oniguruma mode here, as `scan::RegexSplit` uses).

use std::ops::Range;

use fancy_regex::{Regex, RegexBuilder};

use super::spec::SplitPattern;
use super::HfError;

/// A compiled pattern.
#[derive(Clone, Debug)]
pub(crate) enum TextPattern {
    Literal(String),
    Regex(Regex),
}

impl TextPattern {
    /// Compile `spec`; `path` names it in the error for a regex that does not compile.
    pub fn new(spec: &SplitPattern, path: &str) -> Result<TextPattern, HfError> {
        match spec {
            SplitPattern::String(literal) => Ok(TextPattern::Literal(literal.clone())),
            SplitPattern::Regex(regex) => RegexBuilder::new(regex)
                .oniguruma_mode(true)
                .build()
                .map(TextPattern::Regex)
                .map_err(|error| HfError::Invalid { path: path.to_string(), message: format!("regex {regex:?} does not compile: {error}") }),
        }
    }

    /// The matches in `text`, left to right, without overlaps. An empty literal matches nothing
    /// (as in Hugging Face). A regex that gives up (fancy-regex's backtracking limit) keeps the
    /// matches found before it.
    pub fn find_all(&self, text: &str) -> Vec<Range<usize>> {
        match self {
            TextPattern::Literal(literal) if literal.is_empty() => Vec::new(),
            TextPattern::Literal(literal) => text.match_indices(literal.as_str()).map(|(at, found)| at..at + found.len()).collect(),
            TextPattern::Regex(regex) => regex.find_iter(text).map_while(Result::ok).map(|found| found.range()).collect(),
        }
    }

    /// `text` with every match replaced by `content`.
    pub fn replace_all(&self, text: &str, content: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        for range in self.find_all(text) {
            out.push_str(&text[done..range.start]);
            out.push_str(content);
            done = range.end;
        }
        out.push_str(&text[done..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_regex_replace_every_match() {
        let space = TextPattern::new(&SplitPattern::String(" ".into()), "p").unwrap();
        assert_eq!(space.replace_all("a b  c", "\u{2581}"), "a\u{2581}b\u{2581}\u{2581}c");
        let runs = TextPattern::new(&SplitPattern::Regex(r"\s+".into()), "p").unwrap();
        assert_eq!(runs.replace_all("a b \t c", "_"), "a_b_c");
        let empty = TextPattern::new(&SplitPattern::String(String::new()), "p").unwrap();
        assert_eq!(empty.replace_all("ab", "x"), "ab");
    }

    #[test]
    fn bad_regex_is_an_error_naming_the_path() {
        let error = TextPattern::new(&SplitPattern::Regex("(".into()), "decoder.pattern").expect_err("an open group does not compile");
        assert!(error.to_string().contains("decoder.pattern"), "{error}");
    }
}
