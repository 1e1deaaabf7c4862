//! The model of a `tokenizer.json`: WordPiece or BPE, behind one interface.

use super::bpe_model::{BpeModel, BpeScratch, BpeSettings};
use super::spec::ModelSpec;
use super::wordpiece::{Piece, WordPiece};
use super::HfError;

/// A model ready to run.
#[derive(Clone, Debug)]
pub(crate) enum Model {
    WordPiece(WordPiece),
    Bpe(Box<BpeModel>),
}

impl Model {
    /// Build the model of `spec`. `byte_level` says that the pre-tokenizer ends with
    /// `ByteLevel`, so that BPE gets raw words to read in the byte-level alphabet.
    ///
    /// Refused: BPE dropout (a training device that makes encoding random; 0 is accepted,
    /// as Hugging Face treats it as none), and a non-empty continuing-subword prefix or
    /// end-of-word suffix, which no supported tokenizer family uses.
    pub fn new(spec: ModelSpec, byte_level: bool) -> Result<Model, HfError> {
        match spec {
            ModelSpec::WordPiece { vocab, unk_token, continuing_subword_prefix, max_input_chars_per_word } => {
                Ok(Model::WordPiece(WordPiece::new(vocab, &unk_token, &continuing_subword_prefix, max_input_chars_per_word)?))
            }
            ModelSpec::Bpe {
                vocab,
                merges,
                dropout,
                unk_token,
                continuing_subword_prefix,
                end_of_word_suffix,
                fuse_unk,
                byte_fallback,
                ignore_merges,
            } => {
                if let Some(dropout) = dropout.filter(|&p| p != 0.0) {
                    return Err(HfError::Invalid {
                        path: "model.dropout".into(),
                        message: format!("dropout {dropout} makes encoding random; only null is supported"),
                    });
                }
                for (key, value) in [("continuing_subword_prefix", &continuing_subword_prefix), ("end_of_word_suffix", &end_of_word_suffix)] {
                    if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
                        return Err(HfError::Unsupported { part: format!("model.{key}"), name: value.clone() });
                    }
                }
                let settings = BpeSettings { vocab, merges, unk_token, fuse_unk, byte_fallback, ignore_merges };
                Ok(Model::Bpe(Box::new(BpeModel::new(settings, byte_level)?)))
            }
        }
    }

    /// Push the tokens of `word` to `out`, spans in bytes of `word`.
    pub fn tokenize(&self, word: &str, scratch: &mut BpeScratch, out: &mut Vec<Piece>) {
        match self {
            Model::WordPiece(model) => model.tokenize(word, out),
            Model::Bpe(model) => model.tokenize(word, scratch, out),
        }
    }

    /// Id of a token text.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Model::WordPiece(model) => model.token_to_id(token),
            Model::Bpe(model) => model.token_to_id(token),
        }
    }

    /// Text of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        match self {
            Model::WordPiece(model) => model.id_to_token(id),
            Model::Bpe(model) => model.id_to_token(id),
        }
    }

    /// Number of entries in the vocabulary.
    pub fn len(&self) -> usize {
        match self {
            Model::WordPiece(model) => model.len(),
            Model::Bpe(model) => model.len(),
        }
    }
}
