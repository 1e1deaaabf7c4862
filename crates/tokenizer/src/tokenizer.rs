//! The [`Tokenizer`]: vocabulary, merges, special tokens, encode and decode.

use std::collections::HashMap;

use crate::bpe::{pair_key, Bpe, FastMap, Merge, Scratch};
use crate::byte_level;
use crate::char_bpe::CharBpe;
use crate::pretokenize::PreTokenizer;
use crate::special::{Segment, SpecialTokens};
use crate::spm::{SpmConfig, SpmTokenizer};
use crate::wpm::Wpm;
use crate::{BpeConfig, TokenType, TokenizerError, WpmConfig};

/// Control-token spellings that end a generation besides EOS: llama.cpp's list, so that a chat
/// model stops where llama.cpp stops (SmolLM2 ends turns with `<|im_end|>` and documents with
/// `<|endoftext|>`).
const END_OF_GENERATION_TEXTS: &[&str] =
    &["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end▁of▁sentence|>"];

/// Ids at or above this are reserved as sentinels by the BPE merge loop.
const MAX_VOCAB: usize = (u32::MAX - 2) as usize;

/// Pieces of up to this many bytes are remembered by [`WordCache`].
const CACHED_PIECE: usize = 32;
/// The most pieces a thread's [`WordCache`] holds; later pieces are not added.
const CACHE_ENTRIES: usize = 1 << 15;

/// Each tokenizer gets a number, so that a thread's cache knows whose pieces it holds.
static NEXT_TOKENIZER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A thread's cache of encoded pieces (text is mostly the same few thousand words), for one
/// tokenizer at a time: piece bytes -> a span of `ids`.
#[derive(Default)]
struct WordCache {
    owner: u64,
    spans: FastMap<Box<[u8]>, (u32, u32)>,
    ids: Vec<u32>,
}

thread_local! {
    static WORD_CACHE: std::cell::RefCell<WordCache> = std::cell::RefCell::new(WordCache::default());
}

/// What byte-level BPE does with a byte that has no token of its own (SmolLM2's vocabulary lacks
/// 21 of the 256 bytes). The peers differ, so both are offered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingBytes {
    /// llama.cpp: the byte is dropped and stays a barrier, nothing merges across it (`"!\x04!"`
    /// gives `! !`). The default, since GGUF models are llama.cpp's.
    #[default]
    Barrier,
    /// Hugging Face `tokenizers`: the byte is dropped before merging, so its neighbours can merge
    /// (`"!\x04!"` gives `!!`).
    Drop,
}

/// How text becomes ids. (One per tokenizer, built once and never moved on a hot path: the
/// size difference between the variants costs nothing.)
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
enum Model {
    /// Byte-level BPE (GGUF `gpt2`): special tokens cut out, a pre-tokenizer, merges by rank.
    Bpe { bpe: Bpe, pre_tokenizer: PreTokenizer },
    /// SentencePiece-style BPE (GGUF `llama`): merges by score, byte fallback; it cuts out its
    /// own special tokens.
    Spm(Box<SpmTokenizer>),
    /// WordPiece (GGUF `bert`): special tokens cut out, then words cut into the longest tokens.
    Wpm(Wpm),
    /// BPE over characters with `▁` spaces and `<0xXX>` byte tokens (GGUF `gemma4`).
    CharBpe(Box<CharBpe>),
}

/// A tokenizer: byte-level BPE or SentencePiece-style BPE, with one vocabulary, special-token
/// and decoding interface. Immutable once built; share it freely between threads.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    tokens: Vec<String>,
    token_types: Vec<TokenType>,
    /// Spelling -> id (the last id wins for duplicate spellings, as in llama.cpp).
    text_to_id: HashMap<String, u32>,
    /// Raw bytes of every token, back to back: token i is `bytes[offsets[i]..offsets[i + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    model: Model,
    missing_bytes: MissingBytes,
    /// This tokenizer's number for the per-thread word caches (a clone shares it: same output).
    cache_owner: u64,
    specials: SpecialTokens,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    unk_id: Option<u32>,
    pad_id: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// Sorted ids that end a generation.
    end_of_generation: Vec<u32>,
}

impl Tokenizer {
    /// Build a tokenizer, checking that the types line up with the tokens, the special ids are in
    /// range, every merge names two tokens and makes a third, and the pre-tokenizer is supported.
    pub fn from_bpe(config: BpeConfig) -> Result<Tokenizer, TokenizerError> {
        let BpeConfig { tokens, token_types, merges, pre_tokenizer, bos_id, eos_id, unk_id, pad_id, add_bos, add_eos } = config;
        check_vocabulary(&tokens, &token_types, [("bos", bos_id), ("eos", eos_id), ("unknown", unk_id), ("padding", pad_id)])?;
        let vocab_size = tokens.len();
        let ignore_merges = PreTokenizer::ignores_merges(&pre_tokenizer);
        let pre = PreTokenizer::from_name(&pre_tokenizer).ok_or(TokenizerError::UnsupportedPreTokenizer { name: pre_tokenizer })?;

        let text_to_id: HashMap<String, u32> = tokens.iter().enumerate().map(|(id, text)| (text.clone(), id as u32)).collect();

        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(vocab_size + 1);
        offsets.push(0);
        for (text, &kind) in tokens.iter().zip(&token_types) {
            match kind {
                TokenType::Normal | TokenType::Byte => match byte_level::decode_spelling(text) {
                    Some(raw) => bytes.extend_from_slice(&raw),
                    None => bytes.extend_from_slice(text.as_bytes()),
                },
                _ => bytes.extend_from_slice(text.as_bytes()),
            }
            offsets.push(bytes.len());
        }

        let mut byte_ids = [u32::MAX; 256];
        for (byte, slot) in byte_ids.iter_mut().enumerate() {
            let spelling = byte_level::byte_to_char(byte as u8).to_string();
            if let Some(&id) = text_to_id.get(&spelling) {
                *slot = id;
            }
        }
        let mut bpe = Bpe::new(byte_ids, parse_merges(&merges, &text_to_id)?);
        bpe.index_whole_pieces(token_types.iter().enumerate().filter_map(|(id, &kind)| {
            let raw = bytes.get(offsets[id]..offsets[id + 1])?;
            (kind == TokenType::Normal).then_some((id as u32, raw))
        }));
        if ignore_merges {
            // As llama.cpp looks a piece up: its byte-level spelling against every token's.
            let mut whole_tokens = FastMap::default();
            for (id, text) in tokens.iter().enumerate() {
                if let Some(raw) = byte_level::decode_spelling(text) {
                    whole_tokens.insert(raw.into_boxed_slice(), id as u32);
                }
            }
            bpe.whole_tokens = Some(whole_tokens);
        }

        let specials = SpecialTokens::new(tokens.iter().zip(&token_types).enumerate().filter_map(|(id, (text, kind))| match kind {
            TokenType::Control | TokenType::Unknown => Some((text.clone(), id as u32, false)),
            TokenType::UserDefined => Some((text.clone(), id as u32, true)),
            _ => None,
        }));

        let end_of_generation = end_of_generation(eos_id, &text_to_id, &token_types);

        Ok(Tokenizer {
            tokens,
            token_types,
            text_to_id,
            bytes,
            offsets,
            model: Model::Bpe { bpe, pre_tokenizer: pre },
            missing_bytes: MissingBytes::Barrier,
            cache_owner: NEXT_TOKENIZER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            specials,
            bos_id,
            eos_id,
            unk_id,
            pad_id,
            add_bos,
            add_eos,
            end_of_generation,
        })
    }

    /// Token ids of `text`. With `parse_special`, control tokens written in the text (e.g.
    /// `<|im_start|>`) become their ids; without it they are plain text. Never adds BOS/EOS.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        match &self.model {
            Model::Bpe { bpe, pre_tokenizer } => self.encode_bpe(bpe, pre_tokenizer, text, |f| self.specials.split(text, parse_special, f)),
            Model::Spm(spm) => spm.encode(text, false, parse_special),
            Model::Wpm(wpm) => self.encode_wpm(wpm, |f| self.specials.split(text, parse_special, f)),
            Model::CharBpe(bpe) => self.encode_char_bpe(bpe, |f| self.specials.split(text, parse_special, f)),
        }
    }

    /// Token ids of `text` where control tokens are recognised everywhere except inside the
    /// byte ranges `plain` (sorted, not overlapping): e.g. a rendered chat prompt whose template
    /// markers are control tokens while the users' messages stay plain text, however they are
    /// written. Gives exactly [`Tokenizer::encode`] with special parsing when no control token
    /// is written inside `plain`. Never adds BOS/EOS.
    pub fn encode_with_plain_spans(&self, text: &str, plain: &[std::ops::Range<usize>]) -> Vec<u32> {
        let outside = |r: std::ops::Range<usize>| !plain.iter().any(|p| p.start < r.end && r.start < p.end);
        match &self.model {
            // Cut only at the control tokens outside the plain spans: the text between them is one
            // run, so pre-tokenization sees it exactly as in a whole-text encoding.
            Model::Bpe { bpe, pre_tokenizer } => self.encode_bpe(bpe, pre_tokenizer, text, |f| self.specials.split_where(text, outside, f)),
            Model::Wpm(wpm) => self.encode_wpm(wpm, |f| self.specials.split_where(text, outside, f)),
            Model::CharBpe(bpe) => self.encode_char_bpe(bpe, |f| self.specials.split_where(text, outside, f)),
            Model::Spm(spm) => {
                // SentencePiece: the plain spans apart, each piece with its own parsing. (The
                // pieces' boundaries may then differ from one whole-text encoding.)
                let mut out = Vec::new();
                let mut at = 0;
                for p in plain {
                    if p.start < at || p.end > text.len() || p.start > p.end || !text.is_char_boundary(p.start) || !text.is_char_boundary(p.end) {
                        continue;
                    }
                    out.extend(spm.encode(&text[at..p.start], false, true));
                    out.extend(spm.encode(&text[p.start..p.end], false, false));
                    at = p.end;
                }
                out.extend(spm.encode(&text[at..], false, true));
                out
            }
        }
    }

    /// Byte-level BPE of the segments `split` reports for `text` (special tokens and runs of
    /// text), through the thread's word cache.
    fn encode_bpe<'t>(&self, bpe: &Bpe, pre_tokenizer: &PreTokenizer, text: &'t str, split: impl FnOnce(&mut dyn FnMut(Segment<'t>))) -> Vec<u32> {
        // Roughly 4 bytes per token in English: one allocation for most texts.
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut scratch = Scratch::default();
        WORD_CACHE.with_borrow_mut(|cache| {
            if cache.owner != self.cache_owner {
                cache.owner = self.cache_owner;
                cache.spans.clear();
                cache.ids.clear();
            }
            split(&mut |segment| match segment {
                Segment::Special(id) => out.push(id),
                Segment::Text(span) => {
                    for piece in pre_tokenizer.pieces(span) {
                        self.encode_piece_cached(bpe, piece.as_bytes(), cache, &mut scratch, &mut out);
                    }
                }
            });
        });
        out
    }

    fn encode_wpm<'t>(&self, wpm: &Wpm, split: impl FnOnce(&mut dyn FnMut(Segment<'t>))) -> Vec<u32> {
        let mut out = Vec::new();
        split(&mut |segment| match segment {
            Segment::Special(id) => out.push(id),
            Segment::Text(span) => wpm.encode(span, &self.text_to_id, &mut out),
        });
        out
    }

    fn encode_char_bpe<'t>(&self, bpe: &CharBpe, split: impl FnOnce(&mut dyn FnMut(Segment<'t>))) -> Vec<u32> {
        let mut out = Vec::new();
        split(&mut |segment| match segment {
            Segment::Special(id) => out.push(id),
            Segment::Text(span) => bpe.encode(span, &self.text_to_id, &mut out),
        });
        out
    }

    /// One piece through the thread's word cache (pieces of 2..=32 bytes), then the merge.
    fn encode_piece_cached(&self, bpe: &Bpe, piece: &[u8], cache: &mut WordCache, scratch: &mut Scratch, out: &mut Vec<u32>) {
        if piece.len() < 2 || piece.len() > CACHED_PIECE {
            return self.encode_piece(bpe, piece, scratch, out);
        }
        if let Some(&(start, len)) = cache.spans.get(piece) {
            out.extend_from_slice(&cache.ids[start as usize..(start + len) as usize]);
            return;
        }
        let from = out.len();
        self.encode_piece(bpe, piece, scratch, out);
        if cache.spans.len() >= CACHE_ENTRIES {
            // Full: keep what it holds (the words met first are the frequent ones) rather than
            // churn through text whose pieces never repeat.
            return;
        }
        let start = cache.ids.len() as u32;
        cache.ids.extend_from_slice(&out[from..]);
        cache.spans.insert(piece.into(), (start, (out.len() - from) as u32));
    }

    fn encode_piece(&self, bpe: &Bpe, piece: &[u8], scratch: &mut Scratch, out: &mut Vec<u32>) {
        if self.missing_bytes == MissingBytes::Drop && !piece.iter().all(|&b| bpe.has_byte(b)) {
            let kept: Vec<u8> = piece.iter().copied().filter(|&b| bpe.has_byte(b)).collect();
            bpe.encode_piece(&kept, scratch, out);
        } else {
            bpe.encode_piece(piece, scratch, out);
        }
    }

    /// [`Tokenizer::encode`] of every text, on up to `threads` threads (texts are dealt in
    /// contiguous runs of similar total size); the result is in input order and equal to
    /// encoding the texts one by one.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S], parse_special: bool, threads: usize) -> Vec<Vec<u32>> {
        let threads = threads.clamp(1, texts.len().max(1));
        if threads == 1 {
            return texts.iter().map(|t| self.encode(t.as_ref(), parse_special)).collect();
        }
        // Cut the list where the running byte count crosses each thread's share.
        let total: usize = texts.iter().map(|t| t.as_ref().len()).sum();
        let mut cuts = vec![0];
        let mut seen = 0;
        for (i, t) in texts.iter().enumerate() {
            seen += t.as_ref().len();
            if seen * threads >= total * cuts.len() && cuts.len() < threads {
                cuts.push(i + 1);
            }
        }
        cuts.push(texts.len());
        cuts.dedup();
        std::thread::scope(|scope| {
            let handles: Vec<_> = cuts
                .windows(2)
                .map(|w| {
                    let part = &texts[w[0]..w[1]];
                    scope.spawn(move || part.iter().map(|t| self.encode(t.as_ref(), parse_special)).collect::<Vec<_>>())
                })
                .collect();
            // A panic in a worker is a bug in encode itself; re-raise it on the caller.
            handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        })
    }

    /// [`Tokenizer::encode`] with the byte span of `text` each token stands for.
    ///
    /// Spans follow from the tokens' bytes: each token's bytes are found at the current position
    /// of the text. Where the text has bytes no token covers (a byte missing from a byte-level
    /// vocabulary, which is a barrier that encodes to nothing), the search skips over them; a
    /// token whose bytes are not in the text at all (the space SentencePiece may add in front)
    /// gets the span of the part that is there, at worst an empty span at the current position.
    /// Spans are in order, inside the text and never overlap.
    pub fn encode_with_offsets(&self, text: &str, parse_special: bool) -> (Vec<u32>, Vec<(usize, usize)>) {
        let ids = self.encode(text, parse_special);
        let offsets = self.align(text, &ids);
        (ids, offsets)
    }

    /// The byte spans of `ids` (the encoding of `text`) in `text`; see
    /// [`Tokenizer::encode_with_offsets`].
    fn align(&self, text: &str, ids: &[u32]) -> Vec<(usize, usize)> {
        let bytes = text.as_bytes();
        // Bytes that encode to nothing (no byte token in a byte-level vocabulary) may lie between
        // two tokens' bytes; SentencePiece has byte fallback for every byte.
        let skippable = |b: u8| match &self.model {
            Model::Bpe { bpe, .. } => !bpe.has_byte(b),
            Model::Spm(_) | Model::Wpm(_) | Model::CharBpe(_) => false,
        };
        // Where `tok` starts at `from`, or after some skippable bytes.
        let find = |from: usize, tok: &[u8]| -> Option<usize> {
            if tok.is_empty() {
                return None;
            }
            let mut at = from;
            loop {
                if bytes[at..].starts_with(tok) {
                    return Some(at);
                }
                if at < bytes.len() && skippable(bytes[at]) {
                    at += 1;
                } else {
                    return None;
                }
            }
        };
        let mut pos = 0;
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let tok = self.token_bytes(id).unwrap_or(&[]);
            // The token's bytes, or (SentencePiece) all but a space it added in front.
            let span = match find(pos, tok) {
                Some(at) => (at, at + tok.len()),
                None => match tok.strip_prefix(b" ").filter(|t| !t.is_empty()).and_then(|t| find(pos, t).map(|at| (at, at + t.len()))) {
                    Some(span) => span,
                    None => (pos, pos),
                },
            };
            pos = span.1;
            out.push(span);
        }
        out
    }

    /// Like [`Tokenizer::encode`], then BOS first and EOS last when the model asks for them.
    pub fn encode_with_special(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let body = self.encode(text, parse_special);
        let bos = self.bos_id.filter(|_| self.add_bos);
        let eos = self.eos_id.filter(|_| self.add_eos);
        bos.into_iter().chain(body).chain(eos).collect()
    }

    /// Text of `ids`, with invalid UTF-8 replaced by U+FFFD. Control and unknown tokens appear as
    /// their text only with `render_special`; unused tokens and ids past the vocabulary are
    /// skipped.
    pub fn decode(&self, ids: &[u32], render_special: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            self.append_bytes(id, render_special, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Append what decoding `id` produces to `out` (see [`Tokenizer::decode`]).
    pub(crate) fn append_bytes(&self, id: u32, render_special: bool, out: &mut Vec<u8>) {
        if self.token_type(id).is_some_and(|kind| kind.is_rendered(render_special)) {
            if let Some(raw) = self.token_bytes(id) {
                out.extend_from_slice(raw);
            }
        }
    }

    /// Raw bytes of a token: the bytes a normal token spells, the text of any other token.
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

    /// Id of the token with this exact spelling (byte-level alphabet for normal tokens).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.text_to_id.get(token).copied()
    }

    /// Spelling of a token as the vocabulary stores it.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Type of a token.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.token_types.get(id as usize).copied()
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

    /// The same tokenizer treating bytes without a token as `mode` says (byte-level BPE only).
    pub fn with_missing_bytes(mut self, mode: MissingBytes) -> Tokenizer {
        self.missing_bytes = mode;
        // Another output for the same pieces: a new owner for the caches.
        self.cache_owner = NEXT_TOKENIZER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// The pre-tokenizer in use (`None` for SentencePiece, which has none).
    pub fn pre_tokenizer(&self) -> Option<PreTokenizer> {
        match &self.model {
            Model::Bpe { pre_tokenizer, .. } => Some(*pre_tokenizer),
            Model::Spm(_) | Model::Wpm(_) | Model::CharBpe(_) => None,
        }
    }

    /// The kind of model: "gpt2" (byte-level BPE) or "llama" (SentencePiece BPE), as GGUF
    /// `tokenizer.ggml.model` names them.
    pub fn model_name(&self) -> &'static str {
        match &self.model {
            Model::Bpe { .. } => "gpt2",
            Model::Spm(_) => "llama",
            Model::Wpm(_) => "bert",
            Model::CharBpe(_) => "gemma4",
        }
    }

    /// Build a SentencePiece-style tokenizer (see [`crate::spm`]); its vocabulary, special ids and
    /// decoding are then served like a byte-level one's.
    pub fn from_spm(config: SpmConfig) -> Result<Tokenizer, TokenizerError> {
        let tokens = config.tokens.clone();
        let token_types = config.token_types.clone();
        let (bos_id, eos_id, unk_id, pad_id) = (config.bos_id, config.eos_id, config.unk_id, config.pad_id);
        let (add_bos, add_eos) = (config.add_bos, config.add_eos);
        let spm = SpmTokenizer::new(config).map_err(|e| TokenizerError::SentencePiece(e.to_string()))?;
        let text_to_id: HashMap<String, u32> = tokens.iter().enumerate().map(|(id, text)| (text.clone(), id as u32)).collect();
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(tokens.len() + 1);
        offsets.push(0);
        for id in 0..tokens.len() {
            if let Some(raw) = spm.token_bytes(id as u32) {
                bytes.extend_from_slice(raw);
            }
            offsets.push(bytes.len());
        }
        let end_of_generation = end_of_generation(eos_id, &text_to_id, &token_types);
        Ok(Tokenizer {
            tokens,
            token_types,
            text_to_id,
            bytes,
            offsets,
            model: Model::Spm(Box::new(spm)),
            missing_bytes: MissingBytes::Barrier,
            cache_owner: NEXT_TOKENIZER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            specials: SpecialTokens::new(std::iter::empty()),
            bos_id,
            eos_id,
            unk_id,
            pad_id,
            add_bos,
            add_eos,
            end_of_generation,
        })
    }

    /// Build a character-level BPE tokenizer from a GGUF `gemma4` vocabulary (spaces spelled `▁`,
    /// `<0xXX>` byte tokens: BPE over characters by merge rank). The pre-tokenizer name is not used.
    pub fn from_char_bpe(config: BpeConfig) -> Result<Tokenizer, TokenizerError> {
        let BpeConfig { tokens, token_types, merges, bos_id, eos_id, unk_id, pad_id, add_bos, add_eos, .. } = config;
        check_vocabulary(&tokens, &token_types, [("bos", bos_id), ("eos", eos_id), ("unknown", unk_id), ("padding", pad_id)])?;
        let vocab_size = tokens.len();
        let text_to_id: HashMap<String, u32> = tokens.iter().enumerate().map(|(id, text)| (text.clone(), id as u32)).collect();
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(vocab_size + 1);
        offsets.push(0);
        for (text, &kind) in tokens.iter().zip(&token_types) {
            let byte =
                text.strip_prefix("<0x").and_then(|t| t.strip_suffix('>')).filter(|h| h.len() == 2).and_then(|h| u8::from_str_radix(h, 16).ok());
            match (kind, byte) {
                (TokenType::Byte, Some(byte)) => bytes.push(byte),
                (TokenType::Normal, _) => bytes.extend_from_slice(text.replace('\u{2581}', " ").as_bytes()),
                _ => bytes.extend_from_slice(text.as_bytes()),
            }
            offsets.push(bytes.len());
        }
        let specials = SpecialTokens::new(tokens.iter().zip(&token_types).enumerate().filter_map(|(id, (text, kind))| match kind {
            TokenType::Control | TokenType::Unknown => Some((text.clone(), id as u32, false)),
            TokenType::UserDefined => Some((text.clone(), id as u32, true)),
            _ => None,
        }));
        let bpe = CharBpe::new(&merges, &text_to_id);
        let end_of_generation = end_of_generation(eos_id, &text_to_id, &token_types);
        Ok(Tokenizer {
            tokens,
            token_types,
            text_to_id,
            bytes,
            offsets,
            model: Model::CharBpe(Box::new(bpe)),
            missing_bytes: MissingBytes::Barrier,
            cache_owner: NEXT_TOKENIZER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            specials,
            bos_id,
            eos_id,
            unk_id,
            pad_id,
            add_bos,
            add_eos,
            end_of_generation,
        })
    }

    /// Build a WordPiece tokenizer from a GGUF `bert` vocabulary (see [`WpmConfig`]). Normal
    /// tokens decode with `▁` as a space; control tokens are cut out of the text like byte-level
    /// BPE's.
    pub fn from_wpm(config: WpmConfig) -> Result<Tokenizer, TokenizerError> {
        let WpmConfig { tokens, token_types, unk_id, bos_id, eos_id, pad_id, add_bos, add_eos, lowercase, strip_accents } = config;
        check_vocabulary(&tokens, &token_types, [("bos", bos_id), ("eos", eos_id), ("unknown", unk_id), ("padding", pad_id)])?;
        let vocab_size = tokens.len();
        let text_to_id: HashMap<String, u32> = tokens.iter().enumerate().map(|(id, text)| (text.clone(), id as u32)).collect();
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(vocab_size + 1);
        offsets.push(0);
        for (text, &kind) in tokens.iter().zip(&token_types) {
            match kind {
                TokenType::Normal => bytes.extend_from_slice(text.replace('\u{2581}', " ").as_bytes()),
                _ => bytes.extend_from_slice(text.as_bytes()),
            }
            offsets.push(bytes.len());
        }
        let specials = SpecialTokens::new(tokens.iter().zip(&token_types).enumerate().filter_map(|(id, (text, kind))| match kind {
            TokenType::Control | TokenType::Unknown => Some((text.clone(), id as u32, false)),
            TokenType::UserDefined => Some((text.clone(), id as u32, true)),
            _ => None,
        }));
        let wpm = Wpm::new(&tokens, unk_id, lowercase, strip_accents);
        let end_of_generation = end_of_generation(eos_id, &text_to_id, &token_types);
        Ok(Tokenizer {
            tokens,
            token_types,
            text_to_id,
            bytes,
            offsets,
            model: Model::Wpm(wpm),
            missing_bytes: MissingBytes::Barrier,
            cache_owner: NEXT_TOKENIZER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            specials,
            bos_id,
            eos_id,
            unk_id,
            pad_id,
            add_bos,
            add_eos,
            end_of_generation,
        })
    }

    /// Whether generating `id` ends a generation: EOS, and the control tokens llama.cpp also stops
    /// on (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, `<end_of_turn>`, ...).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.binary_search(&id).is_ok()
    }

    /// All ids that end a generation, sorted.
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.end_of_generation
    }
}

/// The checks every vocabulary passes: not empty, not past [`MAX_VOCAB`], a type per token, and
/// each named special id inside it.
fn check_vocabulary(tokens: &[String], token_types: &[TokenType], ids: [(&'static str, Option<u32>); 4]) -> Result<(), TokenizerError> {
    if tokens.is_empty() {
        return Err(TokenizerError::EmptyVocabulary);
    }
    if tokens.len() > MAX_VOCAB {
        return Err(TokenizerError::VocabularyTooLarge { count: tokens.len(), max: MAX_VOCAB });
    }
    if tokens.len() != token_types.len() {
        return Err(TokenizerError::LengthMismatch { tokens: tokens.len(), token_types: token_types.len() });
    }
    for (name, id) in ids {
        if let Some(id) = id.filter(|&id| id as usize >= tokens.len()) {
            return Err(TokenizerError::IdOutOfRange { name, id, vocab_size: tokens.len() });
        }
    }
    Ok(())
}

/// Parse "left right" merge lines into (left id, right id) -> (rank, merged id). A repeated pair
/// keeps its first (lowest) rank, as llama.cpp does.
fn parse_merges(merges: &[String], text_to_id: &HashMap<String, u32>) -> Result<FastMap<u64, Merge>, TokenizerError> {
    let mut table = FastMap::default();
    table.reserve(merges.len());
    for (index, merge) in merges.iter().enumerate() {
        // Split at the first space after the first character, as llama.cpp does.
        let split = merge
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c == ' ')
            .map(|(at, _)| at)
            .ok_or_else(|| TokenizerError::MalformedMerge { index, merge: merge.clone() })?;
        let (left, right) = (&merge[..split], &merge[split + 1..]);
        if right.is_empty() {
            return Err(TokenizerError::MalformedMerge { index, merge: merge.clone() });
        }
        let lookup = |token: &str| {
            text_to_id.get(token).copied().ok_or_else(|| TokenizerError::MergeTokenMissing { index, merge: merge.clone(), token: token.to_string() })
        };
        let left_id = lookup(left)?;
        let right_id = lookup(right)?;
        let merged = lookup(&format!("{left}{right}"))?;
        table.entry(pair_key(left_id, right_id)).or_insert(Merge { rank: index as u32, merged });
    }
    Ok(table)
}

/// EOS and the control tokens llama.cpp also stops on, sorted.
fn end_of_generation(eos_id: Option<u32>, text_to_id: &HashMap<String, u32>, token_types: &[TokenType]) -> Vec<u32> {
    let mut ids: Vec<u32> = eos_id.into_iter().collect();
    for text in END_OF_GENERATION_TEXTS {
        if let Some(&id) = text_to_id.get(*text) {
            if token_types[id as usize] == TokenType::Control {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}
