//! BPE over characters with `▁` for spaces and `<0xXX>` byte tokens: llama.cpp's `gemma4`
//! vocabularies (GGUF `tokenizer.ggml.model = "gemma4"`).
//!
//! Each stretch of text between special tokens has its spaces (U+0020 only) written `▁`, and is
//! cut into runs of newlines and runs of everything else. A run of newlines that is a token is
//! that token. Any other run starts as one symbol per character and merges by rank (lowest
//! first, leftmost on ties); each final symbol is its token, or, when its text is not a token,
//! one `<0xXX>` token per byte (bytes without one are dropped).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::bpe::{pair_key, FastMap};

#[derive(Clone, Debug)]
pub(crate) struct CharBpe {
    /// (left id, right id) -> rank.
    ranks: FastMap<u64, u32>,
    /// The `<0xXX>` token of each byte, if any.
    byte_ids: [Option<u32>; 256],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Candidate {
    rank: u32,
    left: usize,
    left_id: u32,
    right_id: u32,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.rank, other.left).cmp(&(self.rank, self.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: usize,
    end: usize,
    id: Option<u32>,
    /// Index of the next live symbol, or `usize::MAX`.
    next: usize,
    prev: usize,
    alive: bool,
}

impl CharBpe {
    /// Merge rules "left right" (split at the first space after the first byte, as llama.cpp
    /// does), by rank; rules naming a text that is not a token cannot apply and are skipped.
    pub fn new(merges: &[String], text_to_id: &HashMap<String, u32>) -> CharBpe {
        let mut ranks = FastMap::default();
        for (rank, merge) in merges.iter().enumerate() {
            // A space is one byte, so `at` is a character boundary.
            let Some(at) = merge.bytes().skip(1).position(|b| b == b' ').map(|at| at + 1) else { continue };
            let (left, right) = (&merge[..at], &merge[at + 1..]);
            if let (Some(&l), Some(&r)) = (text_to_id.get(left), text_to_id.get(right)) {
                ranks.entry(pair_key(l, r)).or_insert(rank as u32);
            }
        }
        let mut byte_ids = [None; 256];
        for (byte, slot) in byte_ids.iter_mut().enumerate() {
            *slot = text_to_id.get(&format!("<0x{byte:02X}>")).copied();
        }
        CharBpe { ranks, byte_ids }
    }

    /// Append the ids of `text` (a stretch without special tokens) to `out`.
    pub fn encode(&self, text: &str, text_to_id: &HashMap<String, u32>, out: &mut Vec<u32>) {
        let escaped = text.replace(' ', "\u{2581}");
        let bytes = escaped.as_bytes();
        let mut start = 0;
        while start < bytes.len() {
            let newline = bytes[start] == b'\n';
            let end = bytes[start..].iter().position(|&b| (b == b'\n') != newline).map_or(bytes.len(), |n| start + n);
            // Cut on '\n' (ASCII), so both ends are character boundaries.
            let run = &escaped[start..end];
            match text_to_id.get(run).filter(|_| newline) {
                Some(&id) => out.push(id),
                None => self.merge(run, text_to_id, out),
            }
            start = end;
        }
    }

    fn merge(&self, run: &str, text_to_id: &HashMap<String, u32>, out: &mut Vec<u32>) {
        const NONE: usize = usize::MAX;
        let mut symbols: Vec<Symbol> = run
            .char_indices()
            .map(|(at, c)| Symbol {
                start: at,
                end: at + c.len_utf8(),
                id: text_to_id.get(&run[at..at + c.len_utf8()]).copied(),
                next: NONE,
                prev: NONE,
                alive: true,
            })
            .collect();
        let n = symbols.len();
        for (i, symbol) in symbols.iter_mut().enumerate() {
            symbol.prev = if i == 0 { NONE } else { i - 1 };
            symbol.next = if i + 1 == n { NONE } else { i + 1 };
        }
        let mut heap = BinaryHeap::new();
        let candidate = |symbols: &[Symbol], left: usize| -> Option<Candidate> {
            let l = symbols.get(left)?;
            let r = symbols.get(l.next)?;
            let (left_id, right_id) = (l.id?, r.id?);
            let rank = *self.ranks.get(&pair_key(left_id, right_id))?;
            Some(Candidate { rank, left, left_id, right_id })
        };
        for i in 0..n.saturating_sub(1) {
            heap.extend(candidate(&symbols, i));
        }
        while let Some(c) = heap.pop() {
            let left = symbols[c.left];
            // Skip a candidate that merges changed since it was queued.
            if !left.alive || left.id != Some(c.left_id) || left.next == NONE {
                continue;
            }
            let right = symbols[left.next];
            if !right.alive || right.id != Some(c.right_id) {
                continue;
            }
            let right_index = left.next;
            let merged = Symbol { end: right.end, id: text_to_id.get(&run[left.start..right.end]).copied(), next: right.next, ..left };
            symbols[c.left] = merged;
            symbols[right_index].alive = false;
            if right.next != NONE {
                symbols[right.next].prev = c.left;
            }
            if merged.prev != NONE {
                heap.extend(candidate(&symbols, merged.prev));
            }
            heap.extend(candidate(&symbols, c.left));
        }
        for symbol in symbols.iter().filter(|s| s.alive) {
            match symbol.id {
                Some(id) => out.push(id),
                None => out.extend(run.as_bytes()[symbol.start..symbol.end].iter().filter_map(|&b| self.byte_ids[b as usize])),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_become_marks_and_unknown_characters_fall_back_to_bytes() {
        let tokens = ["a", "b", "\u{2581}", "ab", "\u{2581}ab", "\n\n", "<0xC3>", "<0xA9>"];
        let map: HashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        let merges = ["a b".to_string(), "\u{2581} ab".to_string(), "\u{2581} \u{2581}".to_string()];
        let bpe = CharBpe::new(&merges, &map);
        let mut out = Vec::new();
        bpe.encode("ab ab\n\né", &map, &mut out);
        assert_eq!(out, [3, 4, 5, 6, 7]);
    }
}
