//! Lookup structures: token text -> id for the merge loop, and the trie that finds special
//! tokens in text.

use super::NONE;

/// Token text -> id, an open-addressing table over one arena of all texts.
///
/// The merge loop looks up every span it considers, many of which are no token. A slot holds an
/// id and 32 bits of the text's hash, so a miss is mostly settled in the slot array (4 MB for
/// Gemma's 262k tokens) without reading any text, and building it allocates twice rather than
/// once per token (the `HashMap<Box<[u8]>, u32>` it replaced spent most of the load and much of
/// the encoding in `malloc`, hashing and `memcmp`).
#[derive(Clone, Debug)]
pub(super) struct TextIndex {
    /// (id, hash tag); id NONE marks an empty slot. Length a power of two, at most half full.
    slots: Vec<(u32, u32)>,
    /// All token texts back to back: token i is `arena[ends[i - 1]..ends[i]]`.
    arena: Vec<u8>,
    ends: Vec<usize>,
    /// Ids of the texts of one or two ASCII bytes, `a` at `a` and `ab` at `128 + 128a + b`: the
    /// merge loop starts by looking up every pair of adjacent characters, and for English and
    /// code a 64 KB table answers those from cache.
    ascii: Vec<u32>,
}

impl TextIndex {
    /// Index the texts; a repeated text maps to its last id (llama.cpp's `token_to_id`).
    pub(super) fn new(texts: &[String]) -> TextIndex {
        let capacity = (texts.len() * 2).next_power_of_two().max(2);
        let mut index = TextIndex {
            slots: vec![(NONE, 0); capacity],
            arena: Vec::with_capacity(texts.iter().map(String::len).sum()),
            ends: Vec::with_capacity(texts.len()),
            ascii: vec![NONE; 128 + 128 * 128],
        };
        for (id, text) in texts.iter().enumerate() {
            if let Some(slot) = ascii_slot(text.as_bytes()) {
                index.ascii[slot] = id as u32;
            }
            index.arena.extend_from_slice(text.as_bytes());
            index.ends.push(index.arena.len());
            let hash = text_hash(text.as_bytes());
            let mut slot = hash as usize & (capacity - 1);
            loop {
                let (existing, tag) = index.slots[slot];
                if existing == NONE || (tag == (hash >> 32) as u32 && index.text(existing) == text.as_bytes()) {
                    index.slots[slot] = (id as u32, (hash >> 32) as u32);
                    break;
                }
                slot = (slot + 1) & (capacity - 1);
            }
        }
        index
    }

    fn text(&self, id: u32) -> &[u8] {
        let id = id as usize;
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        &self.arena[start..self.ends[id]]
    }

    #[inline]
    pub(super) fn get(&self, text: &[u8]) -> Option<u32> {
        if let Some(slot) = ascii_slot(text) {
            return Some(self.ascii[slot]).filter(|&id| id != NONE);
        }
        let hash = text_hash(text);
        let mask = self.slots.len() - 1;
        let mut slot = hash as usize & mask;
        loop {
            let (id, tag) = self.slots[slot];
            if id == NONE {
                return None;
            }
            if tag == (hash >> 32) as u32 && self.text(id) == text {
                return Some(id);
            }
            slot = (slot + 1) & mask;
        }
    }
}

/// Where a text of one or two ASCII bytes sits in `TextIndex::ascii`.
#[inline]
fn ascii_slot(text: &[u8]) -> Option<usize> {
    match *text {
        [a] if a.is_ascii() => Some(a as usize),
        [a, b] if a.is_ascii() && b.is_ascii() => Some(128 + 128 * a as usize + b as usize),
        _ => None,
    }
}

/// FxHash-style over 8-byte words, then murmur3's finalizer so that both the low bits (the
/// slot) and the high 32 bits (the tag) depend on every byte.
#[inline]
fn text_hash(text: &[u8]) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut hash = text.len() as u64;
    let mut chunks = text.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The special tokens of a vocabulary as a byte trie, for leftmost-longest matching.
///
/// Gemma has 6,400 special tokens starting with '<' (`<unused0>`..`<unused6241>`, HTML tags); a
/// list of candidates per first byte would try them all at every '<' of HTML or code, the trie
/// walks only as far as the text agrees with some token.
#[derive(Clone, Debug)]
pub(super) struct SpecialTrie {
    /// Node reached from the root by each first byte, or NONE.
    roots: [u32; 256],
    nodes: Vec<TrieNode>,
}

#[derive(Clone, Debug, Default)]
struct TrieNode {
    /// (byte, child node), sorted by byte.
    children: Vec<(u8, u32)>,
    /// The token whose text ends here: (id, matched even when special parsing is off).
    token: Option<(u32, bool)>,
}

impl SpecialTrie {
    /// Index `(text, id, always)` triples; empty texts are ignored (they would match everywhere).
    /// A text given twice keeps its first id.
    pub(super) fn new<'a>(tokens: impl IntoIterator<Item = (&'a [u8], u32, bool)>) -> SpecialTrie {
        let mut trie = SpecialTrie { roots: [NONE; 256], nodes: Vec::new() };
        for (text, id, always) in tokens {
            let Some((&first, rest)) = text.split_first() else {
                continue;
            };
            let mut node = match trie.roots[first as usize] {
                NONE => {
                    trie.nodes.push(TrieNode::default());
                    let node = trie.nodes.len() as u32 - 1;
                    trie.roots[first as usize] = node;
                    node
                }
                node => node,
            };
            for &byte in rest {
                let children = &trie.nodes[node as usize].children;
                node = match children.binary_search_by_key(&byte, |&(b, _)| b) {
                    Ok(at) => children[at].1,
                    Err(at) => {
                        let child = trie.nodes.len() as u32;
                        trie.nodes[node as usize].children.insert(at, (byte, child));
                        trie.nodes.push(TrieNode::default());
                        child
                    }
                };
            }
            trie.nodes[node as usize].token.get_or_insert((id, always));
        }
        trie
    }

    /// The longest token allowed under `parse_special` that starts at `at`: (id, end).
    #[inline]
    pub(super) fn longest_match(&self, text: &[u8], at: usize, parse_special: bool) -> Option<(u32, usize)> {
        let mut node = self.roots[text[at] as usize];
        let mut best = None;
        let mut end = at + 1;
        while node != NONE {
            let here = &self.nodes[node as usize];
            if let Some((id, always)) = here.token {
                if always || parse_special {
                    best = Some((id, end));
                }
            }
            let Some(&byte) = text.get(end) else { break };
            node = match here.children.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(i) => here.children[i].1,
                Err(_) => NONE,
            };
            end += 1;
        }
        best
    }
}
