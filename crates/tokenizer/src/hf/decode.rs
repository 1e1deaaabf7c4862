//! Decoders: tokens back to text. Only WordPiece is supported; without a decoder, tokens are
//! joined with spaces (Hugging Face's fallback).

use super::spec::DecoderSpec;

/// A decoder ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// Join with spaces, except that a token starting with `prefix` (not the first) is glued to
    /// the one before it, prefix removed; `cleanup` then undoes BERT's spacing of punctuation and
    /// contractions, token by token.
    WordPiece { prefix: String, cleanup: bool },
}

impl Decoder {
    /// The decoder for a spec, or the name of the first part that is not supported.
    pub fn new(spec: &DecoderSpec) -> Result<Decoder, &'static str> {
        match spec {
            DecoderSpec::WordPiece { prefix, cleanup } => Ok(Decoder::WordPiece {
                prefix: prefix.clone(),
                cleanup: *cleanup,
            }),
            DecoderSpec::ByteLevel => Err("ByteLevel"),
            DecoderSpec::Metaspace { .. } => Err("Metaspace"),
            DecoderSpec::ByteFallback => Err("ByteFallback"),
            DecoderSpec::Sequence(_) => Err("Sequence"),
        }
    }

    /// The text of `tokens`.
    pub fn decode(&self, tokens: &[&str]) -> String {
        match self {
            Decoder::WordPiece { prefix, cleanup } => {
                let mut out = String::new();
                for (i, &token) in tokens.iter().enumerate() {
                    let mut piece = if i == 0 {
                        token.to_string()
                    } else if let Some(rest) = token.strip_prefix(prefix.as_str()) {
                        rest.to_string()
                    } else {
                        format!(" {token}")
                    };
                    if *cleanup {
                        piece = clean_up_spacing(&piece);
                    }
                    out.push_str(&piece);
                }
                out
            }
        }
    }
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

    #[test]
    fn continuation_glues_and_first_token_keeps_its_prefix() {
        let d = Decoder::WordPiece {
            prefix: "##".into(),
            cleanup: true,
        };
        assert_eq!(
            d.decode(&["##a", "un", "##aff", "##able", "."]),
            "##a unaffable."
        );
    }

    #[test]
    fn cleanup_is_per_token_so_it_only_sees_the_space_it_adds() {
        let d = Decoder::WordPiece {
            prefix: "##".into(),
            cleanup: true,
        };
        // Each token gets one leading space, so " ' " (space, quote, space) never occurs
        // within a token: "it's" does not come back.
        assert_eq!(d.decode(&["it", "'", "s"]), "it ' s");
        let raw = Decoder::WordPiece {
            prefix: "##".into(),
            cleanup: false,
        };
        assert_eq!(raw.decode(&["a", ",", "b"]), "a , b");
    }
}
