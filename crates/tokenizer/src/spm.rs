//! SentencePiece-style BPE, as GGUF files with `tokenizer.ggml.model = "llama"` use it (Llama 1
//! and 2, Mistral, Gemma), token-exact with llama.cpp's `llm_tokenizer_spm`.
//!
//! There are no merge rules: the vocabulary and one score per token are the whole model.
//! Encoding a text goes like this:
//!
//! 1. Control and unknown tokens written in the text are cut out when special parsing is on;
//!    user-defined tokens always are (Gemma's `<start_of_turn>`, runs of spaces, tabs and
//!    newlines, HTML tags). At each position the longest token wins, scanning left to right
//!    (llama.cpp cuts the longest tokens first over the whole text: the same cuts unless two
//!    special tokens overlap in the text).
//! 2. In each stretch of plain text every space becomes U+2581 ("▁"); with `add_space_prefix`
//!    (Llama, not Gemma) a "▁" is put first when the stretch starts the text or follows a cut
//!    token. There is no pre-tokenizer: the whole stretch is one piece.
//! 3. The piece starts as one symbol per character. Repeatedly, of all adjacent pairs whose
//!    concatenation is a token, the one whose token has the highest score is merged, the leftmost
//!    on ties (llama.cpp compares scores as floats, so -0.0 ties with 0.0).
//! 4. Each final symbol is its token; a character that never became one is written as the byte
//!    tokens `<0xNN>` of its UTF-8 bytes (byte fallback), or the unknown token if those are
//!    missing.
//!
//! Step 3 is llama.cpp's loop, kept O(n log n) in the piece length however long the piece is
//! (a megabyte without a space is one piece): the symbols form a linked list, the pairs of
//! adjacent characters are sorted once and pairs made by merges go on a max-heap, a merge only
//! adds the two pairs around it, and entries made stale by earlier merges are skipped when taken.
//! A pair is looked up by the bytes it spans, and spans longer than the longest token are never
//! looked up, so each step costs O(longest token) at most. Two things keep ordinary text fast
//! without changing a single id: the piece is cut before each "▁" that no token spans (merges
//! never cross such a cut, so each word merges alone, in buffers that stay in cache), and encoded
//! words are cached per [`Scratch`] ([`SpmTokenizer::encode`] keeps one per thread).
//!
//! Where peers disagree (measured on Gemma 3, see tests/fixtures/spm/README.md): Hugging Face's
//! tokenizer for a GGUF respells Gemma's space-run tokens as "▁▁"... and merges them by BPE, so
//! runs of 32+ spaces and literal "▁" in the text come out differently there; we follow llama.cpp
//! (and SentencePiece), which cut them as user-defined tokens. llama.cpp re-types a token spelled
//! `</s>` as control on every vocabulary; we keep the type the file declares, as HF does.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use crate::{TokenType, TokenizerError};

mod index;
mod merge;

use index::{SpecialTrie, TextIndex};
use merge::merge_priority;
pub use merge::{MergeStats, Scratch};

/// "▁", SentencePiece's stand-in for a space.
const METASPACE: &str = "\u{2581}";
/// Ids at or above this are reserved as sentinels.
const MAX_VOCAB: usize = (u32::MAX - 2) as usize;
/// "No symbol" in the linked list, and "no token" where an id is expected.
const NONE: u32 = u32::MAX;

/// Everything needed to build a [`SpmTokenizer`], as a GGUF's `tokenizer.ggml.*` keys give it.
#[derive(Clone, Debug, Default)]
pub struct SpmConfig {
    /// Token texts, spaces written as "▁" in normal tokens; the index is the id.
    pub tokens: Vec<String>,
    /// One score per token: the merge priority (higher merges first).
    pub scores: Vec<f32>,
    /// One type per token.
    pub token_types: Vec<TokenType>,
    /// Beginning-of-sequence token.
    pub bos_id: Option<u32>,
    /// End-of-sequence token.
    pub eos_id: Option<u32>,
    /// Unknown token: byte fallback's last resort.
    pub unk_id: Option<u32>,
    /// Padding token.
    pub pad_id: Option<u32>,
    /// Whether encoding with special tokens starts with BOS.
    pub add_bos: bool,
    /// Whether encoding with special tokens ends with EOS.
    pub add_eos: bool,
    /// Whether each stretch of plain text that starts the text or follows a special token gets a
    /// leading "▁" (GGUF `tokenizer.ggml.add_space_prefix`; decoding drops it again).
    pub add_space_prefix: bool,
}

impl SpmConfig {
    /// The vocabulary as Hugging Face's conversion of a GGUF SentencePiece model reads it
    /// (transformers' `GGUFLlamaConverter`): user-defined tokens made only of spaces are respelled
    /// with "▁" and become ordinary pieces, merged by their position in the vocabulary like every
    /// other token (a lower id merges first), instead of being cut out whole before merging.
    ///
    /// Both tokenizations exist in the wild: llama.cpp and SentencePiece cut a run of 40 spaces
    /// into the user-defined tokens 31 + 9; Hugging Face's converted tokenizer merges "▁"s up to
    /// 16 + 24, and also takes a literal "▁▁▁▁" in the text as one token. This makes our ids
    /// Hugging Face's. Scores are rewritten so that a lower id always ranks higher, which is the
    /// order the converter gives its merges.
    pub fn with_hugging_face_whitespace(mut self) -> SpmConfig {
        let n = self.tokens.len() as f32;
        for (id, ((text, kind), score)) in self.tokens.iter_mut().zip(&mut self.token_types).zip(&mut self.scores).enumerate() {
            if *kind == TokenType::UserDefined && !text.is_empty() && text.bytes().all(|b| b == b' ') {
                *text = METASPACE.to_string().repeat(text.len());
                *kind = TokenType::Normal;
            }
            if *kind == TokenType::Normal {
                *score = n - id as f32;
            }
        }
        self
    }
}

/// Why a [`SpmTokenizer`] could not be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpmError {
    /// A fault shared with the byte-level tokenizer (empty vocabulary, lengths, ids).
    #[error(transparent)]
    Vocabulary(#[from] TokenizerError),
    /// Scores do not line up with tokens.
    #[error("{tokens} tokens but {scores} scores")]
    ScoreCountMismatch { tokens: usize, scores: usize },
    /// A score that cannot be ordered.
    #[error("token {id} {text:?} has a NaN score; scores order the merges")]
    ScoreNotANumber { id: u32, text: String },
    /// A byte token whose text is not `<0xNN>`.
    #[error("token {id} is typed as a byte token but spelled {text:?}, not <0xNN>")]
    MalformedByteToken { id: u32, text: String },
    /// A flag asks for a special token the vocabulary does not name.
    #[error("{flag} is set but no {name} token is given")]
    MissingSpecialToken { flag: &'static str, name: &'static str },
}

/// A SentencePiece-style BPE tokenizer. Immutable once built; share it freely between threads.
#[derive(Clone, Debug)]
pub struct SpmTokenizer {
    tokens: Vec<String>,
    scores: Vec<f32>,
    token_types: Vec<TokenType>,
    /// Token text -> id, for every token (llama.cpp merges into any type); the last id wins for
    /// duplicate texts, as in llama.cpp.
    text_to_id: TextIndex,
    /// Each token's merge priority (its score as an integer with the same order, see
    /// [`merge_priority`]) and text length in bytes, side by side: the merge loop reads both.
    merge_data: Vec<(u32, u32)>,
    /// Bytes of the longest token text: a longer span is never a token.
    max_token_len: usize,
    /// Sorted characters that some token holds right before a "▁" (Gemma: only '>', of
    /// ">▁</"): text may be cut before any other "▁" (see `encode_text`).
    metaspace_joiners: Vec<char>,
    /// Byte fallback: the token for each byte (`<0xNN>`, else the one-byte text), or NONE.
    byte_ids: [u32; 256],
    /// Decoded bytes of every token back to back: token i is `bytes[offsets[i]..offsets[i + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    specials: SpecialTrie,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    unk_id: Option<u32>,
    pad_id: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    /// Tells apart the tokenizers whose words a [`Scratch`] caches.
    instance: u64,
}

/// Source of [`SpmTokenizer::instance`].
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The scratch, and so the word cache, of [`SpmTokenizer::encode`] on this thread.
    static THREAD_SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl SpmTokenizer {
    /// Build a tokenizer, checking that types and scores line up with the tokens, no score is NaN,
    /// byte tokens are spelled `<0xNN>`, special ids are in range, and BOS/EOS exist if asked for.
    pub fn new(config: SpmConfig) -> Result<SpmTokenizer, SpmError> {
        let SpmConfig { tokens, scores, token_types, bos_id, eos_id, unk_id, pad_id, add_bos, add_eos, add_space_prefix } = config;
        if tokens.is_empty() {
            return Err(TokenizerError::EmptyVocabulary.into());
        }
        if tokens.len() > MAX_VOCAB {
            return Err(TokenizerError::VocabularyTooLarge { count: tokens.len(), max: MAX_VOCAB }.into());
        }
        if tokens.len() != token_types.len() {
            return Err(TokenizerError::LengthMismatch { tokens: tokens.len(), token_types: token_types.len() }.into());
        }
        if tokens.len() != scores.len() {
            return Err(SpmError::ScoreCountMismatch { tokens: tokens.len(), scores: scores.len() });
        }
        let vocab_size = tokens.len();
        for (name, id) in [("bos", bos_id), ("eos", eos_id), ("unknown", unk_id), ("padding", pad_id)] {
            if let Some(id) = id.filter(|&id| id as usize >= vocab_size) {
                return Err(TokenizerError::IdOutOfRange { name, id, vocab_size }.into());
            }
        }
        if add_bos && bos_id.is_none() {
            return Err(SpmError::MissingSpecialToken { flag: "add_bos", name: "bos" });
        }
        if add_eos && eos_id.is_none() {
            return Err(SpmError::MissingSpecialToken { flag: "add_eos", name: "eos" });
        }

        let mut merge_data = Vec::with_capacity(vocab_size);
        for (id, (&score, text)) in scores.iter().zip(&tokens).enumerate() {
            if score.is_nan() {
                return Err(SpmError::ScoreNotANumber { id: id as u32, text: text.clone() });
            }
            // A text longer than u32::MAX bytes could never match a span of a piece anyway.
            let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
            merge_data.push((merge_priority(score), len));
        }

        let text_to_id = TextIndex::new(&tokens);
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(vocab_size + 1);
        offsets.push(0);
        let mut byte_tokens = [NONE; 256];
        for (id, (text, &kind)) in tokens.iter().zip(&token_types).enumerate() {
            let id = id as u32;
            match kind {
                TokenType::Byte => {
                    let byte = parse_byte_token(text).ok_or_else(|| SpmError::MalformedByteToken { id, text: text.clone() })?;
                    // The first byte token for a byte wins, like llama.cpp's text lookup
                    // (byte token texts are distinct unless the file repeats one).
                    if byte_tokens[byte as usize] == NONE {
                        byte_tokens[byte as usize] = id;
                    }
                    bytes.push(byte);
                }
                TokenType::Normal => bytes.extend_from_slice(text.replace(METASPACE, " ").as_bytes()),
                _ => bytes.extend_from_slice(text.as_bytes()),
            }
            offsets.push(bytes.len());
        }
        let max_token_len = tokens.iter().map(String::len).max().unwrap_or(0);
        let mut metaspace_joiners = Vec::new();
        for text in &tokens {
            let mut previous = None;
            for c in text.chars() {
                if c == '\u{2581}' {
                    metaspace_joiners.extend(previous);
                }
                previous = Some(c);
            }
        }
        metaspace_joiners.sort_unstable();
        metaspace_joiners.dedup();

        // llama.cpp's byte_to_token: the token spelled "<0xNN>", else the byte's own text. A byte
        // token spelled in lower case ("<0xab>") is also taken, before the byte's own text.
        let mut byte_ids = [NONE; 256];
        for (byte, slot) in byte_ids.iter_mut().enumerate() {
            let hex = format!("<0x{byte:02X}>");
            *slot = match text_to_id.get(hex.as_bytes()) {
                Some(id) => id,
                None if byte_tokens[byte] != NONE => byte_tokens[byte],
                None => text_to_id.get(&[byte as u8]).unwrap_or(NONE),
            };
        }

        let specials = SpecialTrie::new(tokens.iter().zip(&token_types).enumerate().filter_map(|(id, (text, kind))| match kind {
            TokenType::Control | TokenType::Unknown => Some((text.as_bytes(), id as u32, false)),
            TokenType::UserDefined => Some((text.as_bytes(), id as u32, true)),
            _ => None,
        }));

        Ok(SpmTokenizer {
            tokens,
            scores,
            token_types,
            text_to_id,
            merge_data,
            instance: NEXT_INSTANCE.fetch_add(1, AtomicOrdering::Relaxed),
            max_token_len,
            metaspace_joiners,
            byte_ids,
            bytes,
            offsets,
            specials,
            bos_id,
            eos_id,
            unk_id,
            pad_id,
            add_bos,
            add_eos,
            add_space_prefix,
        })
    }

    /// Token ids of `text`. With `add_special`, BOS and EOS are added as the model asks
    /// (`add_bos`/`add_eos`). With `parse_special`, control tokens written in the text become
    /// their ids; without it they are plain text. User-defined tokens are always cut out.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        THREAD_SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                self.encode_into(text, add_special, parse_special, &mut scratch, &mut out);
                scratch.release_large_buffers();
            }
            Err(_) => self.encode_into(text, add_special, parse_special, &mut Scratch::default(), &mut out),
        });
        out
    }

    /// [`SpmTokenizer::encode`], appending to `out` and reusing `scratch`'s buffers and word
    /// cache ([`SpmTokenizer::encode`] uses one scratch per thread).
    pub fn encode_into(&self, text: &str, add_special: bool, parse_special: bool, scratch: &mut Scratch, out: &mut Vec<u32>) {
        if scratch.owner != Some(self.instance) {
            scratch.clear_cache();
            scratch.owner = Some(self.instance);
        }
        if add_special && self.add_bos {
            out.extend(self.bos_id);
        }
        // llama.cpp: the space prefix goes on a stretch that starts the text or follows a token.
        let mut after_special = true;
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut at = 0;
        while at < bytes.len() {
            match self.specials.longest_match(bytes, at, parse_special) {
                Some((id, end)) => {
                    if start < at {
                        self.encode_text(&text[start..at], after_special, scratch, out);
                    }
                    out.push(id);
                    after_special = true;
                    at = end;
                    start = end;
                }
                None => at += 1,
            }
        }
        if start < bytes.len() {
            self.encode_text(&text[start..], after_special, scratch, out);
        }
        if add_special && self.add_eos {
            out.extend(self.eos_id);
        }
    }

    /// Encode a stretch of plain text: escape spaces, cut it where no token can span the cut,
    /// merge each part.
    fn encode_text(&self, text: &str, after_special: bool, scratch: &mut Scratch, out: &mut Vec<u32>) {
        let mut piece = std::mem::take(&mut scratch.piece);
        piece.clear();
        if self.add_space_prefix && after_special {
            piece.push_str(METASPACE);
        }
        let mut parts = text.split(' ');
        if let Some(first) = parts.next() {
            piece.push_str(first);
        }
        for part in parts {
            piece.push_str(METASPACE);
            piece.push_str(part);
        }

        // A merge across the cut before a "▁" would make a token holding "x▁" (x the character
        // before the cut); where no token holds it the two sides merge independently, and the
        // global highest-score-first order restricted to one side is that side's own order. So
        // words are merged one at a time, in small buffers that stay in cache.
        let mut start = 0;
        let mut from = 0;
        while let Some(found) = piece[from..].find('\u{2581}') {
            let at = from + found;
            from = at + METASPACE.len();
            let before = piece[..at].chars().next_back();
            if at > start && before.is_some_and(|c| !self.joins_metaspace(c)) {
                self.encode_word(&piece.as_bytes()[start..at], scratch, out);
                start = at;
            }
        }
        if start < piece.len() {
            self.encode_word(&piece.as_bytes()[start..], scratch, out);
        }
        scratch.piece = piece;
    }

    /// Whether some token has `c` right before a "▁" (then a cut there is not safe).
    #[inline]
    fn joins_metaspace(&self, c: char) -> bool {
        self.metaspace_joiners.binary_search(&c).is_ok()
    }

    /// Write a character that is no token as its bytes' tokens (the unknown token for a byte
    /// without one; nothing if there is no unknown token either).
    fn byte_fallback(&self, span: &[u8], out: &mut Vec<u32>) {
        for &byte in span {
            match self.byte_ids[byte as usize] {
                NONE => out.extend(self.unk_id),
                id => out.push(id),
            }
        }
    }

    /// Text of `ids`, with invalid UTF-8 replaced by U+FFFD. "▁" in normal tokens becomes a
    /// space, byte tokens become their byte, and with `add_space_prefix` one leading space of
    /// the first token is dropped (llama.cpp's detokenize). Control and unknown tokens appear as
    /// their text only with `render_special`; unused tokens and ids past the vocabulary never.
    pub fn decode(&self, ids: &[u32], render_special: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for (i, &id) in ids.iter().enumerate() {
            let start = bytes.len();
            self.append_bytes(id, render_special, &mut bytes);
            if i == 0 && self.add_space_prefix && bytes.get(start) == Some(&b' ') {
                bytes.remove(start);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Append what decoding `id` alone produces to `out` (no space-prefix stripping).
    pub fn append_bytes(&self, id: u32, render_special: bool, out: &mut Vec<u8>) {
        if self.token_type(id).is_some_and(|kind| kind.is_rendered(render_special)) {
            if let Some(raw) = self.token_bytes(id) {
                out.extend_from_slice(raw);
            }
        }
    }

    /// The bytes a token decodes to: "▁" as a space in normal tokens, a byte token's byte, the
    /// text of any other token.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let id = id as usize;
        let start = *self.offsets.get(id)?;
        let end = *self.offsets.get(id + 1)?;
        self.bytes.get(start..end)
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Id of the token with this exact text ("▁" for spaces in normal tokens).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.text_to_id.get(token.as_bytes())
    }

    /// Text of a token as the vocabulary stores it.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Type of a token.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.token_types.get(id as usize).copied()
    }

    /// Score (merge priority) of a token.
    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// Beginning-of-sequence token.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// End-of-sequence token.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// Unknown token.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }

    /// Padding token.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// Whether the model expects BOS at the start of a prompt.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether the model expects EOS at the end of an encoded text.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether plain text gets a leading "▁" (see [`SpmConfig::add_space_prefix`]).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }
}

/// The byte of a token spelled `<0xNN>` (two hex digits, either case).
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
#[path = "spm_tests.rs"]
mod tests;
