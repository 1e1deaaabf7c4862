//! Hugging Face `tokenizer.json` tokenizers, token-exact (ids and offsets) with Hugging Face
//! `tokenizers` for the parts supported here.
//!
//! Encoding runs Hugging Face's pipeline on one sequence:
//! 1. added tokens not marked `normalized` are cut out of the original text (`added.rs`);
//! 2. each remaining span is normalized on its own, keeping the original span of every byte
//!    (`normalized.rs`, `normalize.rs`), and added tokens marked `normalized` are cut out of it;
//! 3. the pre-tokenizer cuts the normalized text into words (`pretok.rs`, `bert.rs`);
//! 4. the model spells each word as tokens (`wordpiece.rs`, `bpe_model.rs`);
//! 5. the post-processor adds `[CLS]`/`[SEP]` or the like when asked (`postprocess.rs`).
//!
//! Supported: models WordPiece and BPE (with `byte_fallback`, `unk_token`, `fuse_unk` and
//! `ignore_merges`); normalizers NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, BertNormalizer,
//! Prepend, Replace and Sequence; pre-tokenizers BertPreTokenizer, Whitespace, WhitespaceSplit,
//! Digits, Punctuation, Split, ByteLevel, Metaspace and Sequence; added tokens with all their
//! flags; post-processors TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel and
//! Sequence; decoders WordPiece, ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace and
//! Sequence (none: tokens joined with spaces). That covers the files of GPT-2, RoBERTa, Llama 2
//! and 3, Mistral, Qwen2, SmolLM and BERT.
//!
//! Refused when building, with an error naming the part: BPE `dropout` (other than 0) and a
//! non-empty `continuing_subword_prefix` or `end_of_word_suffix`. Any type the parser does not
//! know is refused too: `unsupported pre_tokenizer "Foo"`.
//!
//! Not done on purpose: the file's `truncation` and `padding` are not applied (Hugging Face's
//! `encode` would cut all-MiniLM-L6-v2 inputs to 128 tokens and pad them; a caller that wants
//! that can do it with [`HfTokenizer::truncation_max_length`]); pairs of sequences are not
//! encoded.

mod added;
mod bert;
mod bpe_model;
mod decode;
mod json;
mod model;
mod normalize;
mod normalized;
mod pattern;
mod postprocess;
mod pretok;
pub mod spec;
#[cfg(test)]
mod tests;
mod wordpiece;

use added::{AddedVocabulary, Cut};
use bpe_model::BpeScratch;
use decode::Decoder;
use model::Model;
use normalize::Normalizer;
use normalized::{NormalizedText, Span};
use postprocess::PostProcessor;
use pretok::PreTokenizer;
use spec::ModelSpec;
pub use spec::TokenizerSpec;

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
    WrongType { path: String, expected: &'static str, got: &'static str },
    /// A value has the right type but cannot be used.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    /// A part of a type that ferrolm does not implement.
    #[error("unsupported {part} {name:?}")]
    Unsupported { part: String, name: String },
    /// A `Split` pre-tokenizer's regex gave up on a text (fancy-regex's backtracking limit).
    #[error("pre_tokenizer: {0}")]
    Split(String),
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
        Draft { ids: std::mem::take(&mut self.ids), offsets: std::mem::take(&mut self.offsets), texts: self.texts.as_mut().map(std::mem::take) }
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
    pre_tokenizer: Option<PreTokenizer>,
    model: Model,
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
        // BPE reads byte-level words as raw bytes (faster); WordPiece gets them spelled.
        let model_reads_bytes = matches!(spec.model, ModelSpec::Bpe { .. });
        let pre_tokenizer = spec.pre_tokenizer.as_ref().map(|pre| PreTokenizer::new(pre, model_reads_bytes)).transpose()?;
        let byte_level = pre_tokenizer.as_ref().is_some_and(PreTokenizer::ends_byte_level);
        let model = Model::new(spec.model, byte_level)?;
        let decoder = spec.decoder.as_ref().map(Decoder::new).transpose()?;
        let post_processor = spec.post_processor.as_ref().map(PostProcessor::new).transpose()?;
        let normalizer = spec.normalizer.map(Normalizer::new).transpose()?;
        let added = AddedVocabulary::new(&spec.added_tokens, &model, normalizer.as_ref());
        Ok(HfTokenizer { normalizer, pre_tokenizer, model, added, post_processor, decoder, truncation_max_length: spec.truncation_max_length })
    }

    /// Token ids of `text`; with `add_special` the post-processor adds its tokens (`[CLS]` ...
    /// `[SEP]` for BERT). Added tokens written in the text (`[MASK]`) are always recognised.
    /// See [`HfTokenizer::encode_with_offsets`] for the one way a `Split` regex can fail.
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        self.encode_with_offsets(text, add_special).ids
    }

    /// Like [`HfTokenizer::encode`], with the byte span of `text` that each token came from.
    ///
    /// A `Split` pre-tokenizer with a regex that has no hand-written scanner runs on
    /// fancy-regex, which gives up after a million backtracking steps on one text; the piece it
    /// gave up on is then kept whole. [`HfTokenizer::try_encode_with_offsets`] reports it
    /// instead. The patterns of GPT-2, Llama 3 and Qwen2 never fail.
    pub fn encode_with_offsets(&self, text: &str, add_special: bool) -> Encoding {
        // Lenient encoding never fails, so the default is never used.
        self.encode_inner(text, add_special, true).unwrap_or_default()
    }

    /// Like [`HfTokenizer::encode_with_offsets`], but a `Split` regex that gives up is an error.
    pub fn try_encode_with_offsets(&self, text: &str, add_special: bool) -> Result<Encoding, HfError> {
        self.encode_inner(text, add_special, false)
    }

    fn encode_inner(&self, text: &str, add_special: bool, lenient: bool) -> Result<Encoding, HfError> {
        let needs_texts = self.post_processor.as_ref().is_some_and(PostProcessor::needs_token_texts);
        let mut draft = Draft { texts: needs_texts.then(Vec::new), ..Draft::default() };
        let mut scratch = BpeScratch::default();
        for cut in self.added.cut_raw(text) {
            match cut {
                Cut::Token { id, range } => draft.push(id, (range.start, range.end), || text[range].to_string()),
                Cut::Text(range) => {
                    let mut normalized = NormalizedText::new(&text[range.clone()], range.start);
                    if let Some(normalizer) = &self.normalizer {
                        normalizer.apply(&mut normalized);
                    }
                    self.encode_normalized(&normalized, &mut draft, &mut scratch, lenient)?;
                }
            }
        }
        if let Some(post_processor) = &self.post_processor {
            post_processor.apply(&mut draft, add_special);
        }
        Ok(Encoding { ids: draft.ids, offsets: draft.offsets })
    }

    /// Steps 2 to 4 of the pipeline on one normalized span.
    fn encode_normalized(&self, normalized: &NormalizedText, draft: &mut Draft, scratch: &mut BpeScratch, lenient: bool) -> Result<(), HfError> {
        let text = normalized.as_str();
        let cuts = if self.added.has_normalized() { self.added.cut_normalized(text) } else { vec![Cut::Text(0..text.len())] };
        let mut pieces = Vec::new();
        for cut in cuts {
            match cut {
                Cut::Token { id, range } => {
                    let span = normalized.original_span(range.clone()).unwrap_or((0, 0));
                    draft.push(id, span, || text[range].to_string());
                }
                Cut::Text(range) => {
                    let words = match &self.pre_tokenizer {
                        Some(pre) => pre.run(normalized, range, lenient).map_err(|error| HfError::Split(error.to_string()))?,
                        None => pretok::Words {
                            text: std::borrow::Cow::Borrowed(normalized),
                            ranges: if range.is_empty() { vec![] } else { vec![range] },
                            byte_level: false,
                        },
                    };
                    let buffer = words.text.as_ref();
                    for word in &words.ranges {
                        pieces.clear();
                        self.model.tokenize(&buffer.as_str()[word.clone()], scratch, &mut pieces);
                        for piece in &pieces {
                            let start = word.start + piece.span.0;
                            let end = word.start + piece.span.1;
                            let span = buffer.original_span(start..end).unwrap_or((0, 0));
                            draft.push(piece.id, span, || self.id_to_token(piece.id).unwrap_or_default().to_string());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// `text` after the normalizer alone (Hugging Face's `normalizer.normalize_str`).
    pub fn normalize(&self, text: &str) -> String {
        match &self.normalizer {
            Some(normalizer) => normalizer.normalize_str(text),
            None => text.to_string(),
        }
    }

    /// The words the pre-tokenizer alone cuts `text` into, as the byte ranges of `text` they
    /// come from; without a pre-tokenizer, the whole text. See
    /// [`HfTokenizer::pre_tokenize_str`] for their texts.
    pub fn pre_tokenize(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        self.pre_tokenize_str(text).into_iter().map(|(_, (start, end))| start..end).collect()
    }

    /// Hugging Face's `pre_tokenizer.pre_tokenize_str`: the words the pre-tokenizer alone
    /// makes of `text` (spelled in the byte-level alphabet after `ByteLevel`, with `▁` after
    /// `Metaspace`), each with the byte span of `text` it comes from. A `Split` regex that
    /// gives up keeps the piece it gave up on whole.
    pub fn pre_tokenize_str(&self, text: &str) -> Vec<(String, (usize, usize))> {
        let normalized = NormalizedText::new(text, 0);
        let Some(pre) = &self.pre_tokenizer else {
            return match text.is_empty() {
                true => Vec::new(),
                false => vec![(text.to_string(), (0, text.len()))],
            };
        };
        let Ok(words) = pre.run(&normalized, 0..text.len(), true) else {
            return Vec::new();
        };
        words
            .ranges
            .iter()
            .map(|range| {
                let piece = &words.text.as_str()[range.clone()];
                let piece = match words.byte_level {
                    true => piece.bytes().map(crate::byte_level::byte_to_char).collect(),
                    false => piece.to_string(),
                };
                let span = words.text.original_span(range.clone()).unwrap_or((0, 0));
                (piece, span)
            })
            .collect()
    }

    /// The text of `ids`. Ids that name no token are skipped, and so are special tokens with
    /// `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let tokens: Vec<String> = ids
            .iter()
            .filter_map(|&id| self.id_to_token(id))
            .filter(|token| !skip_special || !self.added.is_special(token))
            .map(str::to_string)
            .collect();
        match &self.decoder {
            Some(decoder) => decoder.decode(tokens),
            None => tokens.join(" "),
        }
    }

    /// Id of a token text (added tokens first, then the model's vocabulary).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added.token_to_id(token).or_else(|| self.model.token_to_id(token))
    }

    /// Text of a token id (added tokens first, then the model's vocabulary).
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.added.id_to_token(id).or_else(|| self.model.id_to_token(id))
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
