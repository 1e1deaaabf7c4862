//! Hugging Face `tokenizer.json` tokenizers, token-exact (ids and offsets) with Hugging Face
//! `tokenizers` for the parts supported here.
//!
//! Encoding runs Hugging Face's pipeline on one sequence:
//! 1. added tokens not marked `normalized` are cut out of the original text (`added.rs`);
//! 2. each remaining span is normalized on its own, keeping the original span of every byte
//!    (`normalized.rs`, `normalize.rs`), and added tokens marked `normalized` are cut out of it;
//! 3. the pre-tokenizer cuts the normalized text into words (`bert.rs`);
//! 4. the model spells each word as tokens (`wordpiece.rs`);
//! 5. the post-processor adds `[CLS]`/`[SEP]` or the like when asked (`postprocess.rs`).
//!
//! Supported: model WordPiece; normalizers NFC, NFD, NFKC, NFKD, Lowercase, StripAccents,
//! BertNormalizer and Sequence; pre-tokenizers BertPreTokenizer, Whitespace, WhitespaceSplit,
//! Digits, Punctuation and Sequence; added tokens with all their flags; post-processors
//! TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel and Sequence; decoder
//! WordPiece (none: tokens joined with spaces).
//!
//! Read but refused by [`HfTokenizer::from_spec`]: model BPE, pre-tokenizers ByteLevel, Split
//! and Metaspace, decoders ByteLevel, Metaspace, ByteFallback and Sequence. Any other type is
//! refused by the parser. Every refusal names the part: `unsupported pre_tokenizer "ByteLevel"`.
//!
//! Not done on purpose: the file's `truncation` and `padding` are not applied (Hugging Face's
//! `encode` would cut all-MiniLM-L6-v2 inputs to 128 tokens and pad them; a caller that wants
//! that can do it with [`HfTokenizer::truncation_max_length`]); pairs of sequences are not
//! encoded.

mod added;
mod bert;
mod decode;
mod json;
mod normalize;
mod normalized;
mod postprocess;
pub mod spec;
#[cfg(test)]
mod tests;
mod wordpiece;

use added::{AddedVocabulary, Cut};
use bert::Splitter;
use decode::Decoder;
use normalize::Normalizer;
use normalized::{NormalizedText, Span};
use postprocess::PostProcessor;
use spec::ModelSpec;
pub use spec::TokenizerSpec;
use wordpiece::WordPiece;

/// Why a `tokenizer.json` could not be loaded. Paths name the bad value, e.g.
/// `normalizer.normalizers[2].lowercase`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HfError {
    /// The bytes are not JSON.
    #[error("tokenizer.json is not valid JSON: {0}")]
    Json(String),
    /// A required value is absent.
    #[error("{path} is missing")]
    Missing { path: String },
    /// A value has the wrong JSON type.
    #[error("{path}: expected {expected}, got {got}")]
    WrongType {
        path: String,
        expected: &'static str,
        got: &'static str,
    },
    /// A value has the right type but cannot be used.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    /// A part of a type that ferrolm does not implement.
    #[error("unsupported {part} {name:?}")]
    Unsupported { part: String, name: String },
}

/// Token ids and, for each, the byte span of the original text it came from. Tokens added by
/// the post-processor have the span `(0, 0)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `(start, end)` byte offsets into the encoded text, one per id.
    pub offsets: Vec<(usize, usize)>,
}

/// An encoding under construction: ids, offsets, and the token texts when the post-processor
/// needs them (offset trimming looks at the spaces in each token).
#[derive(Clone, Debug, Default)]
pub(crate) struct Draft {
    ids: Vec<u32>,
    offsets: Vec<Span>,
    texts: Option<Vec<String>>,
}

impl Draft {
    fn push(&mut self, id: u32, offsets: Span, text: impl FnOnce() -> String) {
        self.ids.push(id);
        self.offsets.push(offsets);
        if let Some(texts) = &mut self.texts {
            texts.push(text());
        }
    }

    /// Append a token added by a post-processor.
    fn push_special(&mut self, id: u32, text: &str) {
        self.push(id, (0, 0), || text.to_string());
    }

    /// Move everything out, leaving an empty draft that still records texts if this one did.
    fn take_all(&mut self) -> Draft {
        Draft {
            ids: std::mem::take(&mut self.ids),
            offsets: std::mem::take(&mut self.offsets),
            texts: self.texts.as_mut().map(std::mem::take),
        }
    }

    fn append(&mut self, mut other: Draft) {
        self.ids.append(&mut other.ids);
        self.offsets.append(&mut other.offsets);
        if let (Some(texts), Some(more)) = (&mut self.texts, &mut other.texts) {
            texts.append(more);
        }
    }
}

/// A tokenizer loaded from a Hugging Face `tokenizer.json`. Immutable once built; share it
/// freely between threads.
#[derive(Clone, Debug)]
pub struct HfTokenizer {
    normalizer: Option<Normalizer>,
    splitter: Option<Splitter>,
    model: WordPiece,
    added: AddedVocabulary,
    post_processor: Option<PostProcessor>,
    decoder: Option<Decoder>,
    truncation_max_length: Option<usize>,
}

impl HfTokenizer {
    /// Parse and build a tokenizer from the bytes of a `tokenizer.json`.
    pub fn from_json(bytes: &[u8]) -> Result<HfTokenizer, HfError> {
        HfTokenizer::from_spec(TokenizerSpec::from_json(bytes)?)
    }

    /// Build a tokenizer from a parsed spec, refusing the parts that cannot run here.
    pub fn from_spec(spec: TokenizerSpec) -> Result<HfTokenizer, HfError> {
        let unsupported = |part: &str, name: &str| HfError::Unsupported {
            part: part.to_string(),
            name: name.to_string(),
        };
        let model = match spec.model {
            ModelSpec::WordPiece {
                vocab,
                unk_token,
                continuing_subword_prefix,
                max_input_chars_per_word,
            } => WordPiece::new(
                vocab,
                &unk_token,
                &continuing_subword_prefix,
                max_input_chars_per_word,
            )?,
            ModelSpec::Bpe { .. } => return Err(unsupported("model", "BPE")),
        };
        let splitter = spec
            .pre_tokenizer
            .as_ref()
            .map(Splitter::from_spec)
            .transpose()
            .map_err(|name| unsupported("pre_tokenizer", name))?;
        let decoder = spec
            .decoder
            .as_ref()
            .map(Decoder::new)
            .transpose()
            .map_err(|name| unsupported("decoder", name))?;
        let post_processor = spec
            .post_processor
            .as_ref()
            .map(PostProcessor::new)
            .transpose()?;
        let normalizer = spec.normalizer.map(Normalizer::new);
        let added = AddedVocabulary::new(&spec.added_tokens, &model, normalizer.as_ref());
        Ok(HfTokenizer {
            normalizer,
            splitter,
            model,
            added,
            post_processor,
            decoder,
            truncation_max_length: spec.truncation_max_length,
        })
    }

    /// Token ids of `text`; with `add_special` the post-processor adds its tokens (`[CLS]` ...
    /// `[SEP]` for BERT). Added tokens written in the text (`[MASK]`) are always recognised.
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        self.encode_with_offsets(text, add_special).ids
    }

    /// Like [`HfTokenizer::encode`], with the byte span of `text` that each token came from.
    pub fn encode_with_offsets(&self, text: &str, add_special: bool) -> Encoding {
        let needs_texts = self
            .post_processor
            .as_ref()
            .is_some_and(PostProcessor::needs_token_texts);
        let mut draft = Draft {
            texts: needs_texts.then(Vec::new),
            ..Draft::default()
        };
        for cut in self.added.cut_raw(text) {
            match cut {
                Cut::Token { id, range } => {
                    draft.push(id, (range.start, range.end), || text[range].to_string())
                }
                Cut::Text(range) => {
                    let mut normalized = NormalizedText::new(&text[range.clone()], range.start);
                    if let Some(normalizer) = &self.normalizer {
                        normalizer.apply(&mut normalized);
                    }
                    self.encode_normalized(&normalized, &mut draft);
                }
            }
        }
        if let Some(post_processor) = &self.post_processor {
            post_processor.apply(&mut draft, add_special);
        }
        Encoding {
            ids: draft.ids,
            offsets: draft.offsets,
        }
    }

    /// Steps 2 to 4 of the pipeline on one normalized span.
    fn encode_normalized(&self, normalized: &NormalizedText, draft: &mut Draft) {
        let text = normalized.as_str();
        let cuts = if self.added.has_normalized() {
            self.added.cut_normalized(text)
        } else {
            vec![Cut::Text(0..text.len())]
        };
        let mut words = Vec::new();
        let mut pieces = Vec::new();
        for cut in cuts {
            match cut {
                Cut::Token { id, range } => {
                    let span = normalized.original_span(range.clone()).unwrap_or((0, 0));
                    draft.push(id, span, || text[range].to_string());
                }
                Cut::Text(range) => {
                    words.clear();
                    match &self.splitter {
                        Some(splitter) => splitter.split(text, range, &mut words),
                        None if !range.is_empty() => words.push(range),
                        None => {}
                    }
                    for word in &words {
                        pieces.clear();
                        self.model.tokenize(&text[word.clone()], &mut pieces);
                        for piece in &pieces {
                            let start = word.start + piece.span.0;
                            let end = word.start + piece.span.1;
                            let span = normalized.original_span(start..end).unwrap_or((0, 0));
                            draft.push(piece.id, span, || {
                                self.id_to_token(piece.id).unwrap_or_default().to_string()
                            });
                        }
                    }
                }
            }
        }
    }

    /// `text` after the normalizer alone (Hugging Face's `normalizer.normalize_str`).
    pub fn normalize(&self, text: &str) -> String {
        match &self.normalizer {
            Some(normalizer) => normalizer.normalize_str(text),
            None => text.to_string(),
        }
    }

    /// The words the pre-tokenizer alone cuts `text` into, as byte ranges of `text` (Hugging
    /// Face's `pre_tokenizer.pre_tokenize_str`); without a pre-tokenizer, the whole text.
    pub fn pre_tokenize(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        let mut words = Vec::new();
        match &self.splitter {
            Some(splitter) => splitter.split(text, 0..text.len(), &mut words),
            None if !text.is_empty() => words.push(0..text.len()),
            None => {}
        }
        words
    }

    /// The text of `ids`. Ids that name no token are skipped, and so are special tokens with
    /// `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let tokens: Vec<&str> = ids
            .iter()
            .filter_map(|&id| self.id_to_token(id))
            .filter(|token| !skip_special || !self.added.is_special(token))
            .collect();
        match &self.decoder {
            Some(decoder) => decoder.decode(&tokens),
            None => tokens.join(" "),
        }
    }

    /// Id of a token text (added tokens first, then the model's vocabulary).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added
            .token_to_id(token)
            .or_else(|| self.model.token_to_id(token))
    }

    /// Text of a token id (added tokens first, then the model's vocabulary).
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.added
            .id_to_token(id)
            .or_else(|| self.model.id_to_token(id))
    }

    /// Number of entries in the model's vocabulary (added tokens outside it not counted).
    pub fn model_vocab_size(&self) -> usize {
        self.model.len()
    }

    /// The maximum length the file's `truncation` asks for, if any (never applied here).
    pub fn truncation_max_length(&self) -> Option<usize> {
        self.truncation_max_length
    }
}
