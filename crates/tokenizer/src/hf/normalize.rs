//! Normalizers: NFC/NFD/NFKC/NFKD, Lowercase, StripAccents, BertNormalizer, Prepend, Replace and
//! Sequence, each step written as Hugging Face writes it so that text and offsets agree.

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::char::is_combining_mark;

use super::bert::{is_bert_control, is_bert_whitespace, is_chinese_char};
use super::normalized::NormalizedText;
use super::pattern::TextPattern;
use super::spec::NormalizerSpec;
use super::HfError;

/// A normalizer ready to run.
#[derive(Clone, Debug)]
pub(crate) enum Normalizer {
    /// A step that needs nothing compiled (the Unicode forms, case, accents, BERT).
    Plain(NormalizerSpec),
    /// Put the text before a non-empty text.
    Prepend(String),
    /// Replace every match by `content`.
    Replace { pattern: TextPattern, content: String },
    /// Each in turn.
    Sequence(Vec<Normalizer>),
}

impl Normalizer {
    /// The normalizer for a spec; a `Replace` regex that does not compile is an error.
    pub fn new(spec: NormalizerSpec) -> Result<Normalizer, HfError> {
        Normalizer::at(spec, "normalizer".to_string())
    }

    fn at(spec: NormalizerSpec, path: String) -> Result<Normalizer, HfError> {
        Ok(match spec {
            NormalizerSpec::Prepend(prefix) => Normalizer::Prepend(prefix),
            NormalizerSpec::Replace { pattern, content } => {
                Normalizer::Replace { pattern: TextPattern::new(&pattern, &format!("{path}.pattern"))?, content }
            }
            NormalizerSpec::Sequence(parts) => Normalizer::Sequence(
                parts.into_iter().enumerate().map(|(i, part)| Normalizer::at(part, format!("{path}.normalizers[{i}]"))).collect::<Result<_, _>>()?,
            ),
            plain => Normalizer::Plain(plain),
        })
    }

    /// Normalize `text` in place.
    pub fn apply(&self, text: &mut NormalizedText) {
        match self {
            Normalizer::Plain(spec) => apply_plain(spec, text),
            Normalizer::Prepend(prefix) => text.prepend(prefix),
            Normalizer::Replace { pattern, content } => {
                let matches = pattern.find_all(text.as_str());
                text.replace_ranges(&matches, content);
            }
            Normalizer::Sequence(parts) => {
                for part in parts {
                    part.apply(text);
                }
            }
        }
    }

    /// `text` normalized, without offsets (for the contents of added tokens).
    pub fn normalize_str(&self, text: &str) -> String {
        let mut normalized = NormalizedText::new(text, 0);
        self.apply(&mut normalized);
        normalized.as_str().to_string()
    }
}

fn apply_plain(spec: &NormalizerSpec, text: &mut NormalizedText) {
    match spec {
        NormalizerSpec::Nfc => text.nfc(),
        NormalizerSpec::Nfd => text.nfd(),
        NormalizerSpec::Nfkc => text.nfkc(),
        NormalizerSpec::Nfkd => text.nfkd(),
        NormalizerSpec::Lowercase => text.lowercase(),
        // Hugging Face's StripAccents removes every combining mark (M*, Unicode 9), not just
        // the non-spacing ones that BertNormalizer removes.
        NormalizerSpec::StripAccents => text.filter(|c| !is_combining_mark(c)),
        NormalizerSpec::Bert { clean_text, handle_chinese_chars, strip_accents, lowercase } => {
            if *clean_text {
                text.filter(|c| !(c == '\0' || c == '\u{FFFD}' || is_bert_control(c)));
                text.map(|c| if is_bert_whitespace(c) { ' ' } else { c });
            }
            if *handle_chinese_chars && text.as_str().chars().any(is_chinese_char) {
                text.replace_each(|c, out| {
                    if is_chinese_char(c) {
                        out.extend([' ', c, ' ']);
                    } else {
                        out.push(c);
                    }
                });
            }
            // `strip_accents: null` follows `lowercase`: an uncased BERT strips accents.
            if strip_accents.unwrap_or(*lowercase) {
                text.nfd();
                text.filter(|c| !c.is_mark_nonspacing());
            }
            if *lowercase {
                text.lowercase();
            }
        }
        // Compiled into their own variants by `Normalizer::new`.
        NormalizerSpec::Prepend(_) | NormalizerSpec::Replace { .. } | NormalizerSpec::Sequence(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bert(strip_accents: Option<bool>, lowercase: bool) -> Normalizer {
        Normalizer::new(NormalizerSpec::Bert { clean_text: true, handle_chinese_chars: true, strip_accents, lowercase }).unwrap()
    }

    #[test]
    fn strip_accents_null_follows_lowercase() {
        assert_eq!(bert(None, true).normalize_str("Élan"), "elan");
        assert_eq!(bert(None, false).normalize_str("Élan"), "Élan");
        assert_eq!(bert(Some(false), true).normalize_str("Élan"), "élan");
        assert_eq!(bert(Some(true), false).normalize_str("Élan"), "Elan");
    }

    #[test]
    fn clean_text_removes_controls_and_spaces_out_whitespace() {
        assert_eq!(bert(None, true).normalize_str("a\u{0}b\u{FFFD}c\td\u{3000}e\u{200B}f\x0Bg"), "abc d efg");
    }

    #[test]
    fn cjk_ideographs_get_spaces_but_kana_does_not() {
        assert_eq!(bert(None, true).normalize_str("日本かな"), " 日  本 かな");
    }

    #[test]
    fn prepend_and_replace_take_the_spans_hugging_face_gives() {
        use super::super::spec::SplitPattern;
        let llama = Normalizer::new(NormalizerSpec::Sequence(vec![
            NormalizerSpec::Prepend("\u{2581}".into()),
            NormalizerSpec::Replace { pattern: SplitPattern::String(" ".into()), content: "\u{2581}".into() },
        ]))
        .unwrap();
        let mut text = NormalizedText::new(" a b", 10);
        llama.apply(&mut text);
        assert_eq!(text.as_str(), "\u{2581}\u{2581}a\u{2581}b");
        // The prepended space takes the span of the first character, each replaced space its own.
        let spans: Vec<_> = text.as_str().char_indices().map(|(at, _)| text.span_at(at).unwrap()).collect();
        assert_eq!(spans, [(10, 11), (10, 11), (11, 12), (12, 13), (13, 14)]);
        assert_eq!(llama.normalize_str(""), "");
    }
}
