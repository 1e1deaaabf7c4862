//! Normalizers: NFC/NFD/NFKC/NFKD, Lowercase, StripAccents, BertNormalizer and Sequence, each
//! step written as Hugging Face writes it so that text and offsets agree.

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::char::is_combining_mark;

use super::bert::{is_bert_control, is_bert_whitespace, is_chinese_char};
use super::normalized::NormalizedText;
use super::spec::NormalizerSpec;

/// A normalizer ready to run. All specs are supported, so this is the spec itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Normalizer(NormalizerSpec);

impl Normalizer {
    /// The normalizer for a spec.
    pub fn new(spec: NormalizerSpec) -> Normalizer {
        Normalizer(spec)
    }

    /// Normalize `text` in place.
    pub fn apply(&self, text: &mut NormalizedText) {
        apply(&self.0, text);
    }

    /// `text` normalized, without offsets (for the contents of added tokens).
    pub fn normalize_str(&self, text: &str) -> String {
        let mut normalized = NormalizedText::new(text, 0);
        self.apply(&mut normalized);
        normalized.as_str().to_string()
    }
}

fn apply(spec: &NormalizerSpec, text: &mut NormalizedText) {
    match spec {
        NormalizerSpec::Nfc => text.nfc(),
        NormalizerSpec::Nfd => text.nfd(),
        NormalizerSpec::Nfkc => text.nfkc(),
        NormalizerSpec::Nfkd => text.nfkd(),
        NormalizerSpec::Lowercase => text.lowercase(),
        // Hugging Face's StripAccents removes every combining mark (M*, Unicode 9), not just
        // the non-spacing ones that BertNormalizer removes.
        NormalizerSpec::StripAccents => text.filter(|c| !is_combining_mark(c)),
        NormalizerSpec::Bert {
            clean_text,
            handle_chinese_chars,
            strip_accents,
            lowercase,
        } => {
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
        NormalizerSpec::Sequence(parts) => {
            for part in parts {
                apply(part, text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bert(strip_accents: Option<bool>, lowercase: bool) -> Normalizer {
        Normalizer::new(NormalizerSpec::Bert {
            clean_text: true,
            handle_chinese_chars: true,
            strip_accents,
            lowercase,
        })
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
        assert_eq!(
            bert(None, true).normalize_str("a\u{0}b\u{FFFD}c\td\u{3000}e\u{200B}f\x0Bg"),
            "abc d efg"
        );
    }

    #[test]
    fn cjk_ideographs_get_spaces_but_kana_does_not() {
        assert_eq!(bert(None, true).normalize_str("日本かな"), " 日  本 かな");
    }
}
