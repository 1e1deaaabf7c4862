//! The merge loop: llama.cpp's `llm_tokenizer_spm_session::tokenize`, in O(n log n) with small
//! constants, and the per-scratch cache of encoded words.

use std::collections::BinaryHeap;

use super::{SpmTokenizer, NONE};
use crate::bpe::FastMap;

/// Pieces of at least this many characters merge through priority buckets instead of the heap.
const LONG_PIECE: usize = 2048;
/// Words longer than this (bytes) are merged every time rather than cached.
const MAX_CACHED_WORD: usize = 64;
/// The word cache is emptied when it holds this many words, bounding its memory (~4 MB).
const MAX_CACHED_WORDS: usize = 65_536;

impl SpmTokenizer {
    /// Append the tokens of one word (a piece between safe cuts), from the cache if it was seen.
    pub(super) fn encode_word(&self, word: &[u8], scratch: &mut Scratch, out: &mut Vec<u32>) {
        // Long words are rare in text and never repeat in the pathological inputs: not cached.
        if word.len() > MAX_CACHED_WORD {
            return self.merge(word, scratch, out);
        }
        if let Some(range) = scratch.cache.get(word) {
            out.extend_from_slice(&scratch.cached_ids[range.0 as usize..range.1 as usize]);
            return;
        }
        let start = out.len();
        self.merge(word, scratch, out);
        if scratch.cache.len() >= MAX_CACHED_WORDS {
            scratch.clear_cache();
        }
        let first = scratch.cached_ids.len() as u32;
        scratch.cached_ids.extend_from_slice(&out[start..]);
        scratch.cache.insert(word.into(), (first, scratch.cached_ids.len() as u32));
    }

    /// llama.cpp's merge loop on one piece of escaped text (valid UTF-8), appending its tokens.
    fn merge(&self, piece: &[u8], scratch: &mut Scratch, out: &mut Vec<u32>) {
        let Scratch { symbols, seeds, heap, stats, .. } = scratch;
        // One symbol per character.
        symbols.clear();
        let mut at = 0;
        while at < piece.len() {
            let len = utf8_len(piece[at]).min(piece.len() - at);
            let index = symbols.len() as u32;
            symbols.push(Symbol { start: at as u32, len: len as u32, prev: if index == 0 { NONE } else { index - 1 }, next: index + 1, id: NONE });
            at += len;
        }
        if let Some(last) = symbols.last_mut() {
            last.next = NONE;
        }

        // The pairs of adjacent characters, sorted once, best first: a sorted array read front
        // to back is much cheaper than a heap of a million entries (one letter repeated). Pairs
        // that merges create go on a heap; each step takes the better of the two fronts, which
        // is the order one heap holding both would give.
        seeds.clear();
        heap.clear();
        for right in 1..symbols.len() as u32 {
            if let Some(candidate) = self.candidate(piece, symbols, stats, right - 1, right) {
                seeds.push(candidate);
            }
        }
        seeds.sort_unstable_by(|a, b| b.cmp(a));
        let mut next_seed = if symbols.len() >= LONG_PIECE && self.merge_by_priority_buckets(piece, symbols, seeds, stats) {
            seeds.len() // done: skip the loop
        } else {
            0
        };
        loop {
            let from_seeds = match (seeds.get(next_seed), heap.peek()) {
                (Some(seed), Some(top)) => seed > top,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let candidate = if from_seeds {
                next_seed += 1;
                seeds[next_seed - 1]
            } else {
                match heap.pop() {
                    Some(candidate) => candidate,
                    None => break,
                }
            };
            stats.pops += 1;
            let Some((before, left, after)) = self.apply(symbols, candidate) else { continue };
            heap.extend(self.candidate(piece, symbols, stats, before, left));
            heap.extend(self.candidate(piece, symbols, stats, left, after));
        }

        // The first symbol is never merged away (merges keep the left one), so the list starts
        // at 0.
        let mut index = if symbols.is_empty() { NONE } else { 0 };
        while index != NONE {
            let symbol = symbols[index as usize];
            let span = &piece[symbol.start as usize..(symbol.start + symbol.len) as usize];
            let id = match symbol.id {
                NONE => self.text_to_id.get(span),
                id => Some(id),
            };
            match id {
                Some(id) => out.push(id),
                None => self.byte_fallback(span, out),
            }
            index = symbol.next;
        }
    }

    /// The merge loop for long pieces without a heap: candidates wait in one bucket per
    /// priority, priorities are taken best first and each bucket left to right (the order the
    /// heap gives), and the buckets are plain arrays read front to back.
    ///
    /// Correct when merging never makes a candidate as good as the priority being worked on,
    /// which holds when scores follow merge order (BPE-trained SentencePiece models such as
    /// Gemma and Llama 2). The check is exact: otherwise the symbols are put back and `false`
    /// sends the caller to the heap loop.
    fn merge_by_priority_buckets(&self, piece: &[u8], symbols: &mut [Symbol], seeds: &[Candidate], stats: &mut MergeStats) -> bool {
        let (original, original_stats) = (symbols.to_vec(), *stats);
        let mut buckets: FastMap<u32, Vec<Candidate>> = FastMap::default();
        let mut priorities: BinaryHeap<u32> = BinaryHeap::new();
        let mut next_seed = 0;
        let mut current = Vec::new();
        loop {
            // The best priority waiting, among the seeds (sorted) and the buckets.
            let priority = match (seeds.get(next_seed).map(|c| c.priority), priorities.peek().copied()) {
                (Some(a), Some(b)) => a.max(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => return true,
            };
            // All its candidates, left to right: the seeds' run is sorted that way already.
            current.clear();
            while let Some(&seed) = seeds.get(next_seed).filter(|c| c.priority == priority) {
                current.push(seed);
                next_seed += 1;
            }
            if priorities.peek() == Some(&priority) {
                priorities.pop();
                current.extend(buckets.remove(&priority).unwrap_or_default());
            }
            if !current.is_sorted_by_key(|c| c.left()) {
                current.sort_unstable_by_key(|c| c.left());
            }
            for &candidate in &current {
                stats.pops += 1;
                let Some((before, left, after)) = self.apply(symbols, candidate) else { continue };
                for new in
                    [self.candidate(piece, symbols, stats, before, left), self.candidate(piece, symbols, stats, left, after)].into_iter().flatten()
                {
                    if new.priority >= priority {
                        // Undone: the heap loop starts from the characters, and counts its own work.
                        symbols.copy_from_slice(&original);
                        *stats = original_stats;
                        return false;
                    }
                    let bucket = buckets.entry(new.priority).or_default();
                    if bucket.is_empty() {
                        priorities.push(new.priority);
                    }
                    bucket.push(new);
                }
            }
        }
    }

    /// Merges `candidate` into the symbol list unless it is stale: the left side was merged
    /// away, or either side grew since the pair was made (llama.cpp's test: a side only changes
    /// length by merging, so the lengths adding up to the token's means the same pair). Returns
    /// (left neighbour, merged symbol, right neighbour), whose two pairs are new.
    #[inline]
    fn apply(&self, symbols: &mut [Symbol], candidate: Candidate) -> Option<(u32, u32, u32)> {
        let left = candidate.left();
        let right = symbols[left as usize].next;
        let size = self.merge_data[candidate.id as usize].1;
        if symbols[left as usize].len == 0 || right == NONE || symbols[left as usize].len + symbols[right as usize].len != size {
            return None;
        }
        let after = symbols[right as usize].next;
        let merged = &mut symbols[left as usize];
        merged.len = size;
        merged.id = candidate.id;
        merged.next = after;
        let before = merged.prev;
        symbols[right as usize].len = 0;
        if after != NONE {
            symbols[after as usize].prev = left;
        }
        Some((before, left, after))
    }

    /// The merge of `left` and `right`, if their concatenation is a token.
    #[inline]
    fn candidate(&self, piece: &[u8], symbols: &[Symbol], stats: &mut MergeStats, left: u32, right: u32) -> Option<Candidate> {
        if left == NONE || right == NONE {
            return None;
        }
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        let size = l.len + r.len;
        if size as usize > self.max_token_len {
            return None;
        }
        stats.lookups += 1;
        let span = &piece[l.start as usize..(l.start + size) as usize];
        let id = self.text_to_id.get(span)?;
        stats.pushes += 1;
        Some(Candidate { priority: self.merge_data[id as usize].0, inverted_left: !left, id })
    }
}

/// Buffers reused across encode calls, a cache of encoded words, and counts of the merge loop's
/// work.
#[derive(Debug, Default)]
pub struct Scratch {
    pub(super) piece: String,
    symbols: Vec<Symbol>,
    seeds: Vec<Candidate>,
    heap: BinaryHeap<Candidate>,
    stats: MergeStats,
    /// The tokenizer whose words `cache` holds.
    pub(super) owner: Option<u64>,
    /// Word -> range of `cached_ids`.
    cache: FastMap<Box<[u8]>, (u32, u32)>,
    cached_ids: Vec<u32>,
}

impl Scratch {
    pub(super) fn clear_cache(&mut self) {
        self.cache.clear();
        self.cached_ids.clear();
    }

    /// Free buffers that one huge piece grew (a megabyte without a space needs ~40 MB), so that a
    /// long-lived per-thread scratch does not keep them.
    pub(super) fn release_large_buffers(&mut self) {
        const KEEP: usize = 1 << 16;
        if self.symbols.capacity() > KEEP {
            self.symbols = Vec::new();
        }
        if self.seeds.capacity() > KEEP {
            self.seeds = Vec::new();
        }
        if self.heap.capacity() > KEEP {
            self.heap = BinaryHeap::new();
        }
        if self.piece.capacity() > 16 * KEEP {
            self.piece = String::new();
        }
    }

    /// Work done by the merge loop since this scratch was made: it shows that the loop is linear
    /// in the piece length (each merge pushes at most two pairs) without timing anything.
    pub fn stats(&self) -> MergeStats {
        self.stats
    }
}

/// Counts of the merge loop's operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Spans looked up in the vocabulary.
    pub lookups: u64,
    /// Candidate pairs found (spans that are tokens).
    pub pushes: u64,
    /// Candidate pairs taken in priority order, stale ones included.
    pub pops: u64,
}

/// A span of the escaped piece. `len == 0` marks a symbol merged into its left neighbour.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
    /// The token this symbol is, once merged; NONE for a single character (looked up at the end).
    id: u32,
}

/// A candidate merge of the symbol at `left()` with its right neighbour into token `id`.
/// Ordered by the derived field order: the greatest is the highest score, then the leftmost
/// pair (the left index is stored inverted). 12 bytes: a pathological piece keeps about one
/// candidate per character waiting, so the size of the heap is the cost of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    priority: u32,
    inverted_left: u32,
    id: u32,
}

impl Candidate {
    fn left(self) -> u32 {
        !self.inverted_left
    }
}

/// A score as a u32 with the same order as llama.cpp's float comparison: flip the sign bit of
/// positives and all bits of negatives; -0.0 is first made +0.0 so that the two tie.
pub(super) fn merge_priority(score: f32) -> u32 {
    let bits = (score + 0.0).to_bits();
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// Length of the UTF-8 sequence a lead byte starts (1 for a stray continuation byte, which a
/// `&str` never has at a character start).
#[inline]
fn utf8_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xFF => 4,
        _ => 1,
    }
}
