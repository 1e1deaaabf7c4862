//! tokenizer: the tokenizers models ship, token-exact with llama.cpp and Hugging Face `tokenizers`.
//!
//! - [`Tokenizer`]: byte-level BPE (GGUF `gpt2`: GPT-2, SmolLM2, Llama 3, Qwen2 pre-tokenizers)
//!   and SentencePiece-style BPE (GGUF `llama`: [`spm`], e.g. Gemma 3) behind one interface.
//!   Byte-level encoding goes in four steps: special tokens are cut out of the text
//!   ([`Tokenizer::encode`]), each remaining span is cut into pieces by a hand-written
//!   pre-tokenizer ([`PreTokenizer`], [`scan`]: the patterns without a regex), each piece is
//!   spelled as bytes and merged by BPE (lowest merge rank first, leftmost on ties), and the
//!   merged symbols are the token ids. Decoding maps tokens back to bytes; [`StreamDecoder`] does
//!   it one token at a time without ever cutting a UTF-8 character in two.
//! - [`hf`]: Hugging Face `tokenizer.json` files: WordPiece (BERT normalizer and
//!   pre-tokenizer) and BPE (byte-level, or SentencePiece-style with byte fallback and
//!   Metaspace), with their normalizers, pre-tokenizers, added tokens, post-processors,
//!   decoders and offsets.
//! - [`scan::RegexSplit`]: any other `Split` pattern, through a regex engine.
//! - From GGUF also: llama.cpp's regex-chain pre-tokenizers ([`scan::Chain`]: deepseek-llm,
//!   deepseek-coder, falcon, qwen35, default), WordPiece (`bert`, [`Tokenizer::from_wpm`]) and
//!   Gemma 4's character-level BPE (`gemma4`, [`Tokenizer::from_char_bpe`]).
//!
//! This crate knows nothing of model files: the `model` crate builds a [`BpeConfig`] or an
//! [`spm::SpmConfig`] from GGUF metadata.

mod bpe;
pub mod byte_level;
mod char_bpe;
pub mod hf;
pub mod pretokenize;
pub mod scan;
mod special;
pub mod spm;
mod stream;
mod tokenizer;
mod wpm;

pub use pretokenize::PreTokenizer;
pub use stream::StreamDecoder;
pub use tokenizer::{MissingBytes, Tokenizer};

/// The type of a vocabulary entry, as GGUF's `tokenizer.ggml.token_type` codes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// A regular token, spelled in the byte-level alphabet (GGUF code 1).
    Normal,
    /// The unknown token (code 2).
    Unknown,
    /// A control token such as `<|im_start|>` (code 3); rendered only on request.
    Control,
    /// A token added by the model's authors (code 4); always matched and rendered as its text.
    UserDefined,
    /// A reserved slot (code 5); never produced by encoding and never rendered.
    Unused,
    /// A raw byte token (code 6); decoded like a normal token.
    Byte,
}

impl TokenType {
    /// The type for a GGUF code (1..=6), or `None` for any other code.
    pub fn from_gguf(code: i32) -> Option<TokenType> {
        match code {
            1 => Some(TokenType::Normal),
            2 => Some(TokenType::Unknown),
            3 => Some(TokenType::Control),
            4 => Some(TokenType::UserDefined),
            5 => Some(TokenType::Unused),
            6 => Some(TokenType::Byte),
            _ => None,
        }
    }

    /// Whether decoding shows a token of this type: control and unknown tokens only with
    /// `render_special`, unused ones never.
    pub fn is_rendered(self, render_special: bool) -> bool {
        match self {
            TokenType::Unused => false,
            TokenType::Control | TokenType::Unknown => render_special,
            TokenType::Normal | TokenType::Byte | TokenType::UserDefined => true,
        }
    }

    /// The GGUF code of this type.
    pub fn gguf_code(self) -> i32 {
        match self {
            TokenType::Normal => 1,
            TokenType::Unknown => 2,
            TokenType::Control => 3,
            TokenType::UserDefined => 4,
            TokenType::Unused => 5,
            TokenType::Byte => 6,
        }
    }
}

/// Everything needed to build a byte-level BPE [`Tokenizer`].
#[derive(Clone, Debug, Default)]
pub struct BpeConfig {
    /// Token spellings (byte-level alphabet for normal tokens, plain text for special ones); the
    /// index is the id.
    pub tokens: Vec<String>,
    /// One type per token.
    pub token_types: Vec<TokenType>,
    /// Merge rules, "left right" each; the index is the rank (lower merges first).
    pub merges: Vec<String>,
    /// Pre-tokenizer name as in GGUF `tokenizer.ggml.pre`: "smollm" or "gpt2".
    pub pre_tokenizer: String,
    /// Beginning-of-sequence token.
    pub bos_id: Option<u32>,
    /// End-of-sequence token.
    pub eos_id: Option<u32>,
    /// Unknown token (kept for callers; byte-level BPE never needs it when encoding).
    pub unk_id: Option<u32>,
    /// Padding token.
    pub pad_id: Option<u32>,
    /// Whether [`Tokenizer::encode_with_special`] starts with BOS.
    pub add_bos: bool,
    /// Whether [`Tokenizer::encode_with_special`] ends with EOS.
    pub add_eos: bool,
}

/// Everything needed to build a WordPiece [`Tokenizer`] from a GGUF `bert` vocabulary
/// (word-initial tokens spelled with `▁` in front, continuations bare).
#[derive(Clone, Debug, Default)]
pub struct WpmConfig {
    /// Token spellings; the index is the id.
    pub tokens: Vec<String>,
    /// One type per token.
    pub token_types: Vec<TokenType>,
    /// The token a word without a spelling becomes.
    pub unk_id: Option<u32>,
    /// Beginning-of-sequence token (BERT's `[CLS]`).
    pub bos_id: Option<u32>,
    /// End-of-sequence token (BERT's `[SEP]`).
    pub eos_id: Option<u32>,
    /// Padding token.
    pub pad_id: Option<u32>,
    /// Whether [`Tokenizer::encode_with_special`] starts with BOS.
    pub add_bos: bool,
    /// Whether [`Tokenizer::encode_with_special`] ends with EOS.
    pub add_eos: bool,
    /// Lower-case the text.
    pub lowercase: bool,
    /// Decompose (NFD) and drop the accents.
    pub strip_accents: bool,
}

/// Why a tokenizer could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenizerError {
    /// The vocabulary has no tokens.
    #[error("the vocabulary is empty")]
    EmptyVocabulary,
    /// More tokens than ids can name.
    #[error("the vocabulary has {count} tokens, more than the {max} supported")]
    VocabularyTooLarge { count: usize, max: usize },
    /// Token types do not line up with tokens.
    #[error("{tokens} tokens but {token_types} token types")]
    LengthMismatch { tokens: usize, token_types: usize },
    /// A special id points past the vocabulary.
    #[error("{name} token id {id} is out of range (vocabulary of {vocab_size})")]
    IdOutOfRange { name: &'static str, id: u32, vocab_size: usize },
    /// A merge rule is not two tokens separated by a space.
    #[error("merge #{index} {merge:?} is not \"left right\"")]
    MalformedMerge { index: usize, merge: String },
    /// A merge rule names a token, or makes one, that the vocabulary lacks.
    #[error("merge #{index} {merge:?} needs token {token:?}, which is not in the vocabulary")]
    MergeTokenMissing { index: usize, merge: String, token: String },
    /// The pre-tokenizer is not one this crate implements.
    #[error("unsupported pre-tokenizer {name:?} (supported: llama.cpp's gpt-2, starcoder, llama-bpe, qwen2, qwen35, deepseek-llm, deepseek-coder, falcon and default families)")]
    UnsupportedPreTokenizer { name: String },
    /// A SentencePiece vocabulary is inconsistent.
    #[error("SentencePiece vocabulary: {0}")]
    SentencePiece(String),
}
