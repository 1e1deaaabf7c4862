//! `tokenizer.json` as typed data: the [`TokenizerSpec`] and its parts.
//!
//! A type that [`TokenizerSpec::from_json`] does not know is refused when parsing, with its path:
//! `unsupported pre_tokenizer.pretokenizers[1] "Foo"`. A few values it reads are refused later,
//! when [`super::HfTokenizer`] is built (BPE dropout, a continuing-subword prefix).
//!
//! Missing optional fields take Hugging Face's defaults. Of `truncation`, only the maximum
//! length is kept, and `padding` is ignored (see the module doc of [`super`]).

use std::collections::HashMap;

use super::HfError;

/// A whole `tokenizer.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizerSpec {
    /// Tokens matched in the text before the model runs, in file order.
    pub added_tokens: Vec<AddedTokenSpec>,
    /// Text normalization, applied to the text between added tokens.
    pub normalizer: Option<NormalizerSpec>,
    /// How normalized text is cut into words.
    pub pre_tokenizer: Option<PreTokenizerSpec>,
    /// The vocabulary and the algorithm that turns a word into tokens.
    pub model: ModelSpec,
    /// What wraps an encoding (e.g. `[CLS] ... [SEP]`).
    pub post_processor: Option<PostProcessorSpec>,
    /// How tokens are joined back into text.
    pub decoder: Option<DecoderSpec>,
    /// The `truncation` maximum length, when the file asks for truncation (not applied).
    pub truncation_max_length: Option<usize>,
}

impl TokenizerSpec {
    /// Parse the bytes of a `tokenizer.json`.
    pub fn from_json(bytes: &[u8]) -> Result<TokenizerSpec, HfError> {
        super::json::parse(bytes)
    }
}

/// One entry of `added_tokens`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedTokenSpec {
    /// The id the file gives (Hugging Face reassigns ids the same way; see `added.rs`).
    pub id: u32,
    /// The text matched.
    pub content: String,
    /// Skipped when decoding with `skip_special`, and never normalized by default.
    pub special: bool,
    /// Matched in the normalized text (with `content` normalized too) instead of the original.
    pub normalized: bool,
    /// The match swallows the whitespace on its left.
    pub lstrip: bool,
    /// The match swallows the whitespace on its right.
    pub rstrip: bool,
    /// Matched only when not inside a word.
    pub single_word: bool,
}

/// A normalizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NormalizerSpec {
    /// Canonical composition.
    Nfc,
    /// Canonical decomposition.
    Nfd,
    /// Compatibility composition.
    Nfkc,
    /// Compatibility decomposition.
    Nfkd,
    /// Unicode lower-casing.
    Lowercase,
    /// Remove combining marks (General_Category M*); meant to follow NFD.
    StripAccents,
    /// Put this text before the text (if the text is not empty).
    Prepend(String),
    /// Replace every match of a pattern.
    Replace {
        /// What to look for.
        pattern: SplitPattern,
        /// What each match becomes.
        content: String,
    },
    /// BERT's basic cleaning.
    Bert {
        /// Remove control characters, turn every whitespace into a space.
        clean_text: bool,
        /// Put spaces around CJK ideographs.
        handle_chinese_chars: bool,
        /// NFD then drop non-spacing marks; `None` means "as `lowercase`".
        strip_accents: Option<bool>,
        /// Lower-case.
        lowercase: bool,
    },
    /// Each in turn.
    Sequence(Vec<NormalizerSpec>),
}

/// What a split keeps of the delimiters it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitBehavior {
    /// Drop them.
    Removed,
    /// Each delimiter is a piece of its own.
    Isolated,
    /// A delimiter joins the piece before it.
    MergedWithPrevious,
    /// A delimiter joins the piece after it.
    MergedWithNext,
    /// A run of delimiters is one piece.
    Contiguous,
}

/// The pattern of a `Split` pre-tokenizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitPattern {
    /// A literal string.
    String(String),
    /// A regular expression (Oniguruma syntax in Hugging Face).
    Regex(String),
}

/// A pre-tokenizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PreTokenizerSpec {
    /// Split on whitespace (removed), then isolate every punctuation character.
    Bert,
    /// `\w+|[^\w\s]+`: runs of word characters and runs of other non-space characters.
    Whitespace,
    /// Split on whitespace, removed.
    WhitespaceSplit,
    /// Split numbers out: each digit alone, or runs of digits.
    Digits { individual_digits: bool },
    /// Split on punctuation with the given behavior.
    Punctuation { behavior: SplitBehavior },
    /// Each in turn.
    Sequence(Vec<PreTokenizerSpec>),
    /// GPT-2 byte-level: optionally a space before each piece, optionally the GPT-2 regex, then
    /// every byte spelled as one character of the byte-level alphabet.
    ByteLevel { add_prefix_space: bool, trim_offsets: bool, use_regex: bool },
    /// Split on a pattern.
    Split { pattern: SplitPattern, behavior: SplitBehavior, invert: bool },
    /// SentencePiece-style: spaces become `replacement`, which may also be put before a piece.
    Metaspace {
        replacement: char,
        /// `"always"`, `"first"` (only before the piece that starts the text) or `"never"`.
        prepend_scheme: String,
        /// Cut before each `replacement`.
        split: bool,
    },
}

/// A model: the vocabulary and how words become tokens.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSpec {
    /// Greedy longest-match-first subwords.
    WordPiece {
        /// Token text -> id.
        vocab: HashMap<String, u32>,
        /// Emitted for a word that cannot be spelled or is too long.
        unk_token: String,
        /// Marks a token that continues a word (`##`).
        continuing_subword_prefix: String,
        /// Longer words (in characters) become `unk_token` whole.
        max_input_chars_per_word: usize,
    },
    /// Byte-pair encoding.
    Bpe {
        /// Token text -> id.
        vocab: HashMap<String, u32>,
        /// Merge rules as (left, right), highest priority first.
        merges: Vec<(String, String)>,
        /// Dropout probability (training only).
        dropout: Option<f64>,
        /// The unknown token.
        unk_token: Option<String>,
        /// Prefix of tokens that continue a word.
        continuing_subword_prefix: Option<String>,
        /// Suffix of tokens that end a word.
        end_of_word_suffix: Option<String>,
        /// Merge consecutive unknown tokens into one.
        fuse_unk: bool,
        /// Spell unknown characters as `<0xNN>` byte tokens.
        byte_fallback: bool,
        /// Look a whole word up in the vocabulary before merging.
        ignore_merges: bool,
    },
}

/// One item of a template: a sequence or a special token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplatePiece {
    /// `$A` or `$B`.
    Sequence { id: String, type_id: u32 },
    /// A special token, by its name in `special_tokens`.
    SpecialToken { id: String, type_id: u32 },
}

/// A special token of a template: a name that expands to one or more ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateSpecialToken {
    /// The ids it adds.
    pub ids: Vec<u32>,
    /// The token texts, one per id.
    pub tokens: Vec<String>,
}

/// A post-processor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostProcessorSpec {
    /// Templates for one and two sequences.
    Template { single: Vec<TemplatePiece>, pair: Vec<TemplatePiece>, special_tokens: HashMap<String, TemplateSpecialToken> },
    /// `[CLS] A [SEP]`.
    Bert { sep: (String, u32), cls: (String, u32) },
    /// `<s> A </s>`, with byte-level offset trimming.
    Roberta { sep: (String, u32), cls: (String, u32), trim_offsets: bool, add_prefix_space: bool },
    /// Byte-level offset trimming.
    ByteLevel { add_prefix_space: bool, trim_offsets: bool },
    /// Each in turn.
    Sequence(Vec<PostProcessorSpec>),
}

/// A decoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecoderSpec {
    /// Join WordPiece tokens: strip the prefix of continuations, put a space before others.
    WordPiece { prefix: String, cleanup: bool },
    /// Byte-level alphabet back to bytes, then to text (invalid UTF-8 as U+FFFD).
    ByteLevel,
    /// SentencePiece-style: `replacement` back to spaces (dropped in the first token unless the
    /// prepend scheme is `"never"`).
    Metaspace { replacement: char, prepend_scheme: String },
    /// Runs of `<0xNN>` tokens to the text their bytes spell (U+FFFD per byte if invalid).
    ByteFallback,
    /// All tokens joined into one.
    Fuse,
    /// Remove up to `start` copies of `content` from the start of each token, `stop` from the end.
    Strip { content: char, start: usize, stop: usize },
    /// Replace every match of a pattern in each token.
    Replace { pattern: SplitPattern, content: String },
    /// Each in turn.
    Sequence(Vec<DecoderSpec>),
}
