//! The BPE model of a `tokenizer.json`, token for token and offset for offset what Hugging
//! Face's `BPE` gives.
//!
//! Hugging Face spells a word one character at a time: a character that is a token is a symbol;
//! one that is not becomes its `<0xNN>` byte tokens (with `byte_fallback`, if all exist), else
//! the unknown token (consecutive ones fused into one with `fuse_unk`), else it is dropped. Then
//! the adjacent pair with the lowest merge rank is merged, leftmost first, until no pair has a
//! rule. With `ignore_merges` (Llama 3), a word that is a token is that token, unmerged.
//!
//! Two traps come from Hugging Face's bookkeeping and are kept on purpose: a symbol's offsets are
//! the running sum of the byte lengths of the symbols before it, so a dropped character shifts
//! every later offset of its word to the left (`"axxb"` without `x` gives `ab` at 0..2); and a
//! pending unknown token is only written out after the byte-fallback tokens that follow it.
//! Merge rules listed twice keep the later rank (the rules go into a hash map in order).
//!
//! Byte-level words (a `ByteLevel` pre-tokenizer last) take a faster road: the crate's own
//! byte-level merge ([`crate::bpe::Bpe`], a heap merge with a whole-token shortcut) on the raw
//! bytes, without spelling them in the byte-level alphabet first. It gives the same tokens as
//! the character road on the spelled word whenever every byte has a token; a word with a byte
//! that has none takes the character road, whose offsets are then mapped back to raw bytes.

use std::collections::{BinaryHeap, HashMap};

use crate::bpe::{pair_key, Bpe, FastMap, Merge, Scratch};
use crate::byte_level;

use super::wordpiece::Piece;
use super::HfError;

/// "No token" in the byte tables and "no symbol" in the linked list.
const NONE: u32 = u32::MAX;
/// Ids from here on are taken by the sentinels of [`crate::bpe::Bpe`].
const FIRST_RESERVED_ID: u32 = u32::MAX - 1;

/// The settings of a BPE model (the `model` object of a `tokenizer.json`).
pub(crate) struct BpeSettings {
    pub vocab: HashMap<String, u32>,
    pub merges: Vec<(String, String)>,
    pub unk_token: Option<String>,
    pub fuse_unk: bool,
    pub byte_fallback: bool,
    pub ignore_merges: bool,
}

/// What the byte-level road needs: the merge over raw bytes, the raw length of every token
/// it can produce, and for `ignore_merges` the raw bytes of every token.
#[derive(Clone, Debug)]
struct ByteLevelIndex {
    bpe: Bpe,
    raw_len: FastMap<u32, u32>,
    whole: FastMap<Box<[u8]>, u32>,
}

/// A BPE model.
#[derive(Clone, Debug)]
pub(crate) struct BpeModel {
    vocab: HashMap<String, u32>,
    id_to_token: HashMap<u32, String>,
    /// (left id, right id) -> rank and merged id.
    merges: FastMap<u64, Merge>,
    unk_id: Option<u32>,
    fuse_unk: bool,
    /// Id of `<0xNN>` for each byte (`NONE` where absent), with `byte_fallback`.
    byte_tokens: Option<Box<[u32; 256]>>,
    ignore_merges: bool,
    /// Present when words come as raw bytes to be read in the byte-level alphabet.
    byte_level: Option<Box<ByteLevelIndex>>,
}

/// One symbol of a word being merged: a token, its length in bytes of the word (0 once merged
/// into its left neighbour), and its neighbours.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    id: u32,
    len: u32,
    prev: u32,
    next: u32,
}

/// A candidate merge of the symbol at `pos` with its right neighbour into `merged`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Candidate {
    rank: u32,
    pos: u32,
    merged: u32,
}

impl Ord for Candidate {
    // Reversed: `BinaryHeap` pops the lowest rank, then the leftmost.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.rank, other.pos).cmp(&(self.rank, self.pos))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Buffers reused across the words of one encode call.
#[derive(Debug, Default)]
pub(crate) struct BpeScratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Candidate>,
    bytes: Scratch,
    ids: Vec<u32>,
    spelled: String,
    spelled_starts: Vec<usize>,
    pieces: Vec<Piece>,
}

impl BpeModel {
    /// Build the model. Every merge must name two tokens whose concatenation is a token, the
    /// unknown token must be in the vocabulary, and ids must stay below 2^32 - 2. With
    /// `byte_level`, words will come as raw text to be read in the byte-level alphabet.
    pub fn new(settings: BpeSettings, byte_level: bool) -> Result<BpeModel, HfError> {
        let BpeSettings { vocab, merges: merge_list, unk_token, fuse_unk, byte_fallback, ignore_merges } = settings;
        if let Some((token, &id)) = vocab.iter().find(|(_, &id)| id >= FIRST_RESERVED_ID) {
            return Err(HfError::Invalid {
                path: format!("model.vocab[{token:?}]"),
                message: format!("id {id} is too large (at most {})", FIRST_RESERVED_ID - 1),
            });
        }
        let mut merges = FastMap::default();
        for (rank, (left, right)) in merge_list.iter().enumerate() {
            let path = || format!("model.merges[{rank}]");
            let id = |token: &str| {
                vocab
                    .get(token)
                    .copied()
                    .ok_or_else(|| HfError::Invalid { path: path(), message: format!("token {token:?} is not in the vocabulary") })
            };
            let key = pair_key(id(left)?, id(right)?);
            let merged = id(&format!("{left}{right}"))?;
            // Later duplicates replace earlier ones, as in Hugging Face's map of merges.
            merges.insert(key, Merge { rank: rank as u32, merged });
        }
        let unk_id = match &unk_token {
            None => None,
            Some(token) => Some(
                *vocab
                    .get(token)
                    .ok_or_else(|| HfError::Invalid { path: "model.unk_token".into(), message: format!("{token:?} is not in the vocabulary") })?,
            ),
        };
        let byte_tokens = byte_fallback.then(|| {
            let mut table = Box::new([NONE; 256]);
            for (byte, slot) in table.iter_mut().enumerate() {
                if let Some(&id) = vocab.get(&format!("<0x{byte:02X}>")) {
                    *slot = id;
                }
            }
            table
        });
        let mut id_to_token = HashMap::with_capacity(vocab.len());
        // When two tokens share an id, keep the smaller text so that the choice does not
        // depend on hash order.
        for (token, &id) in &vocab {
            id_to_token
                .entry(id)
                .and_modify(|old: &mut String| {
                    if token < old {
                        *old = token.clone();
                    }
                })
                .or_insert_with(|| token.clone());
        }
        let mut model = BpeModel { vocab, id_to_token, merges, unk_id, fuse_unk, byte_tokens, ignore_merges, byte_level: None };
        if byte_level {
            model.byte_level = Some(Box::new(model.byte_level_index()));
        }
        Ok(model)
    }

    fn byte_level_index(&self) -> ByteLevelIndex {
        let mut byte_ids = [NONE; 256];
        for (byte, slot) in byte_ids.iter_mut().enumerate() {
            let spelling = byte_level::byte_to_char(byte as u8).to_string();
            if let Some(&id) = self.vocab.get(&spelling) {
                *slot = id;
            }
        }
        let spelled: Vec<(u32, Vec<u8>)> = self.vocab.iter().filter_map(|(token, &id)| Some((id, byte_level::decode_spelling(token)?))).collect();
        let mut bpe = Bpe::new(byte_ids, self.merges.clone());
        bpe.index_whole_pieces(spelled.iter().map(|(id, raw)| (*id, raw.as_slice())));
        let raw_len = spelled.iter().map(|(id, raw)| (*id, raw.len() as u32)).collect();
        let whole = if self.ignore_merges { spelled.into_iter().map(|(id, raw)| (raw.into_boxed_slice(), id)).collect() } else { FastMap::default() };
        ByteLevelIndex { bpe, raw_len, whole }
    }

    /// Id of a token text.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// Text of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.id_to_token.get(&id).map(String::as_str)
    }

    /// Number of entries in the vocabulary.
    pub fn len(&self) -> usize {
        self.vocab.len()
    }

    /// Push the tokens of `word` to `out`, with spans in bytes of `word`.
    pub fn tokenize(&self, word: &str, scratch: &mut BpeScratch, out: &mut Vec<Piece>) {
        if word.is_empty() {
            return;
        }
        match &self.byte_level {
            Some(index) => self.tokenize_raw(index, word.as_bytes(), scratch, out),
            None => {
                if self.ignore_merges {
                    if let Some(&id) = self.vocab.get(word) {
                        out.push(Piece { id, span: (0, word.len()) });
                        return;
                    }
                }
                self.merge_word(word, scratch, out);
            }
        }
    }

    /// The byte-level road: `raw` is read as its spelling in the byte-level alphabet.
    fn tokenize_raw(&self, index: &ByteLevelIndex, raw: &[u8], scratch: &mut BpeScratch, out: &mut Vec<Piece>) {
        if !raw.iter().all(|&byte| index.bpe.has_byte(byte)) {
            self.tokenize_spelled(raw, scratch, out);
            return;
        }
        if self.ignore_merges {
            if let Some(&id) = index.whole.get(raw) {
                out.push(Piece { id, span: (0, raw.len()) });
                return;
            }
        }
        let BpeScratch { bytes, ids, .. } = scratch;
        ids.clear();
        index.bpe.encode_piece(raw, bytes, ids);
        let mut at = 0;
        for &id in ids.iter() {
            let len = index.raw_len.get(&id).copied().unwrap_or(0) as usize;
            out.push(Piece { id, span: (at, at + len) });
            at += len;
        }
    }

    /// A byte-level word with a byte that has no token: spell it, run the character road, and
    /// map the offsets (bytes of the spelling) back to bytes of `raw`, as Hugging Face's
    /// alignments do: an offset inside the spelling of byte k stands for byte k.
    fn tokenize_spelled(&self, raw: &[u8], scratch: &mut BpeScratch, out: &mut Vec<Piece>) {
        let mut spelled = std::mem::take(&mut scratch.spelled);
        let mut starts = std::mem::take(&mut scratch.spelled_starts);
        let mut pieces = std::mem::take(&mut scratch.pieces);
        spelled.clear();
        starts.clear();
        pieces.clear();
        for &byte in raw {
            starts.push(spelled.len());
            spelled.push(byte_level::byte_to_char(byte));
        }
        if let Some(&id) = self.ignore_merges.then(|| self.vocab.get(&spelled)).flatten() {
            pieces.push(Piece { id, span: (0, spelled.len()) });
        } else {
            self.merge_word(&spelled, scratch, &mut pieces);
        }
        // The byte whose spelling holds spelled offset `at`.
        let byte_at = |at: usize| starts.partition_point(|&start| start <= at).saturating_sub(1);
        for piece in &pieces {
            let (start, end) = piece.span;
            out.push(Piece { id: piece.id, span: (byte_at(start), byte_at(end.saturating_sub(1)) + 1) });
        }
        scratch.spelled = spelled;
        scratch.spelled_starts = starts;
        scratch.pieces = pieces;
    }

    /// The character road: Hugging Face's `merge_word` and `merge_all`.
    fn merge_word(&self, word: &str, scratch: &mut BpeScratch, out: &mut Vec<Piece>) {
        let BpeScratch { symbols, heap, .. } = scratch;
        symbols.clear();
        heap.clear();
        let add = |symbols: &mut Vec<Symbol>, id: u32, len: usize| {
            let at = symbols.len() as u32;
            if let Some(last) = symbols.last_mut() {
                last.next = at;
            }
            symbols.push(Symbol { id, len: len as u32, prev: if at == 0 { NONE } else { at - 1 }, next: NONE });
        };
        // The unknown token waiting to be written, and the bytes it covers.
        let mut unknown: Option<(u32, usize)> = None;
        for (at, c) in word.char_indices() {
            let text = &word[at..at + c.len_utf8()];
            if let Some(&id) = self.vocab.get(text) {
                if let Some((unk, len)) = unknown.take() {
                    add(symbols, unk, len);
                }
                add(symbols, id, text.len());
                continue;
            }
            if let Some(table) = &self.byte_tokens {
                if text.bytes().all(|byte| table[byte as usize] != NONE) {
                    for byte in text.bytes() {
                        add(symbols, table[byte as usize], 1);
                    }
                    continue;
                }
            }
            if let Some(unk_id) = self.unk_id {
                unknown = match unknown {
                    Some((unk, len)) if self.fuse_unk => Some((unk, len + text.len())),
                    Some((unk, len)) => {
                        add(symbols, unk, len);
                        Some((unk_id, text.len()))
                    }
                    None => Some((unk_id, text.len())),
                };
            }
        }
        if let Some((unk, len)) = unknown {
            add(symbols, unk, len);
        }

        for pos in 0..symbols.len().saturating_sub(1) {
            self.push_candidate(symbols, heap, pos as u32);
        }
        while let Some(top) = heap.pop() {
            let pos = top.pos as usize;
            let symbol = symbols[pos];
            if symbol.len == 0 || symbol.next == NONE {
                continue;
            }
            let right = symbols[symbol.next as usize];
            // Stale unless the pair there still merges into the same token.
            match self.merges.get(&pair_key(symbol.id, right.id)) {
                Some(merge) if merge.merged == top.merged => {}
                _ => continue,
            }
            symbols[pos].id = top.merged;
            symbols[pos].len += right.len;
            symbols[pos].next = right.next;
            symbols[symbol.next as usize].len = 0;
            if right.next != NONE {
                symbols[right.next as usize].prev = top.pos;
            }
            if symbol.prev != NONE {
                self.push_candidate(symbols, heap, symbol.prev);
            }
            self.push_candidate(symbols, heap, top.pos);
        }

        let mut at = 0usize;
        for symbol in symbols.iter().filter(|s| s.len != 0) {
            let len = symbol.len as usize;
            out.push(Piece { id: symbol.id, span: (at, at + len) });
            at += len;
        }
    }

    #[inline]
    fn push_candidate(&self, symbols: &[Symbol], heap: &mut BinaryHeap<Candidate>, pos: u32) {
        let symbol = symbols[pos as usize];
        if symbol.next == NONE {
            return;
        }
        let right = symbols[symbol.next as usize];
        if let Some(merge) = self.merges.get(&pair_key(symbol.id, right.id)) {
            heap.push(Candidate { rank: merge.rank, pos, merged: merge.merged });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(tokens: &[&str], merges: &[(&str, &str)], unk: Option<&str>) -> BpeSettings {
        BpeSettings {
            vocab: tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect(),
            merges: merges.iter().map(|(l, r)| (l.to_string(), r.to_string())).collect(),
            unk_token: unk.map(str::to_string),
            fuse_unk: false,
            byte_fallback: false,
            ignore_merges: false,
        }
    }

    fn run(model: &BpeModel, word: &str) -> Vec<(String, (usize, usize))> {
        let mut out = Vec::new();
        model.tokenize(word, &mut BpeScratch::default(), &mut out);
        out.iter().map(|p| (model.id_to_token(p.id).unwrap().to_string(), p.span)).collect()
    }

    // Expected values: Hugging Face `tokenizers` 0.23.3 on the same vocabularies.

    #[test]
    fn duplicate_merge_takes_the_later_rank() {
        let tokens = ["a", "b", "c", "ab", "bc"];
        let once = BpeModel::new(model(&tokens, &[("a", "b"), ("b", "c")], None), false).unwrap();
        assert_eq!(run(&once, "abc")[0].0, "ab");
        let twice = [("a", "b"), ("b", "c"), ("a", "b")];
        let twice = BpeModel::new(model(&tokens, &twice, None), false).unwrap();
        let got: Vec<String> = run(&twice, "abc").into_iter().map(|t| t.0).collect();
        assert_eq!(got, ["a", "bc"]);
    }

    #[test]
    fn dropped_characters_shift_later_offsets_left() {
        let tokens = ["a", "b", "c", "ab", "bc"];
        let m = BpeModel::new(model(&tokens, &[("a", "b"), ("b", "c")], None), false).unwrap();
        // "x" and "é" have no token and there is no unknown token: they vanish, "a" and "b"
        // merge across them, and the offsets count only what is left.
        assert_eq!(run(&m, "axxbéc"), [("ab".to_string(), (0, 2)), ("c".to_string(), (2, 3))]);
    }

    #[test]
    fn unknown_characters_fuse_only_with_fuse_unk() {
        let tokens = ["a", "b", "<unk>"];
        let mut settings = model(&tokens, &[], Some("<unk>"));
        let m = BpeModel::new(settings_clone(&settings), false).unwrap();
        assert_eq!(
            run(&m, "axéb"),
            [("a".to_string(), (0, 1)), ("<unk>".to_string(), (1, 2)), ("<unk>".to_string(), (2, 4)), ("b".to_string(), (4, 5))]
        );
        settings.fuse_unk = true;
        let m = BpeModel::new(settings, false).unwrap();
        assert_eq!(run(&m, "axéb")[1], ("<unk>".to_string(), (1, 4)));
    }

    fn settings_clone(s: &BpeSettings) -> BpeSettings {
        BpeSettings { vocab: s.vocab.clone(), merges: s.merges.clone(), unk_token: s.unk_token.clone(), ..*s }
    }

    #[test]
    fn byte_fallback_spells_a_character_in_byte_tokens() {
        let mut tokens = vec!["a".to_string(), "<unk>".to_string()];
        tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let mut settings = model(&refs, &[], Some("<unk>"));
        settings.byte_fallback = true;
        let m = BpeModel::new(settings, false).unwrap();
        let got: Vec<String> = run(&m, "aé").into_iter().map(|t| t.0).collect();
        assert_eq!(got, ["a", "<0xC3>", "<0xA9>"]);
    }

    #[test]
    fn bad_merges_and_unknown_token_are_errors() {
        let missing = BpeModel::new(model(&["a", "b"], &[("a", "q")], None), false);
        assert!(
            matches!(&missing, Err(HfError::Invalid { path, message })
                if path == "model.merges[0]" && message.contains("\"q\"")),
            "{missing:?}"
        );
        let no_result = BpeModel::new(model(&["a", "b"], &[("a", "b")], None), false);
        assert!(no_result.is_err());
        let unk = BpeModel::new(model(&["a"], &[], Some("<unk>")), false);
        assert!(unk.is_err());
    }

    #[test]
    fn byte_level_road_equals_character_road_on_the_spelling() {
        // All 256 byte tokens plus a few merges: raw-byte merging must give what merging the
        // spelled word gives, offsets mapped back to bytes.
        let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_level::byte_to_char(b).to_string()).collect();
        let merges = [("\u{120}", "a"), ("\u{120}a", "b"), ("\u{c3}", "\u{a9}")];
        for (l, r) in merges {
            tokens.push(format!("{l}{r}"));
        }
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let fast = BpeModel::new(model(&refs, &merges, None), true).unwrap();
        let slow = BpeModel::new(model(&refs, &merges, None), false).unwrap();
        for word in [" ab", "é", " aé b", "x"] {
            let spelled: String = word.bytes().map(byte_level::byte_to_char).collect();
            let mut got = Vec::new();
            fast.tokenize(word, &mut BpeScratch::default(), &mut got);
            let mut want = Vec::new();
            slow.tokenize(&spelled, &mut BpeScratch::default(), &mut want);
            let ids = |p: &[Piece]| p.iter().map(|p| p.id).collect::<Vec<_>>();
            assert_eq!(ids(&got), ids(&want), "{word:?}");
            let covered: usize = got.iter().map(|p| p.span.1 - p.span.0).sum();
            assert_eq!(covered, word.len(), "{word:?}");
        }
    }
}
