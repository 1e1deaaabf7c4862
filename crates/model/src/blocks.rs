//! The bookkeeping of a [`KvPool`](crate::KvPool)'s blocks, apart from their memory: how many
//! sequences use each block, the queue of free blocks, and the prefix cache.
//!
//! A block no sequence uses is free, but if it is full and its tokens are known it still holds
//! their keys and values: the prefix cache finds it by a hash of its tokens chained with the hash
//! of the block before it (so a hit means the whole prefix up to it matches), and a new sequence
//! with that prefix takes it back instead of computing it again. Free blocks wait in one queue,
//! least recently freed first; taking a block for new positions pops the front and forgets what
//! it cached. A block that caches nothing goes to the front when freed (it is worth nothing),
//! one that caches a prefix to the back; a sequence gives its blocks back last block first, so
//! the tails of chains are evicted before the prefixes they extend (vLLM's policy).
//!
//! Hashes only find candidates: a hit is confirmed by comparing the parent hash and the tokens,
//! so a collision costs a miss, never a wrong answer.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

const NIL: u32 = u32::MAX;

/// Reference counts, the free queue and the prefix index of `n` blocks of `block_size` positions.
#[derive(Debug)]
pub(crate) struct BlockBook {
    block_size: usize,
    refs: Vec<u32>, // (blocks) sequences using each block
    // The free queue (blocks with refs == 0), a doubly linked list through the block ids.
    prev: Vec<u32>,
    next: Vec<u32>,
    head: u32,
    tail: u32,
    n_free: usize,
    // The prefix cache: for a cached block, its chained hash (0: caches nothing), its parent's
    // hash and its tokens.
    hash: Vec<u64>,   // (blocks)
    parent: Vec<u64>, // (blocks)
    tokens: Vec<u32>, // (blocks, block_size)
    index: HashMap<u64, u32>,
}

/// The hash of a full block: its tokens chained with the hash of the block before it (0 for the
/// first block). Never 0, which marks "caches nothing".
pub(crate) fn chain_hash(parent: u64, tokens: &[u32]) -> u64 {
    // SipHash with fixed keys: the same on every run, so the cache's behaviour is reproducible.
    let mut h = std::hash::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish().max(1)
}

impl BlockBook {
    /// `n` free blocks, none caching anything; block 0 is taken first. `None` when the memory
    /// cannot be had.
    pub(crate) fn new(n: usize, block_size: usize) -> Option<BlockBook> {
        let n32 = u32::try_from(n).ok().filter(|&n| n < NIL)?;
        let refs = crate::cache::zeroed(n, 0u32)?;
        let mut prev = crate::cache::zeroed(n, NIL)?;
        let mut next = crate::cache::zeroed(n, NIL)?;
        for b in 0..n32 {
            prev[b as usize] = if b == 0 { NIL } else { b - 1 };
            next[b as usize] = if b + 1 == n32 { NIL } else { b + 1 };
        }
        let (head, tail) = if n == 0 { (NIL, NIL) } else { (0, n32 - 1) };
        Some(BlockBook {
            block_size,
            refs,
            prev,
            next,
            head,
            tail,
            n_free: n,
            hash: crate::cache::zeroed(n, 0u64)?,
            parent: crate::cache::zeroed(n, 0u64)?,
            tokens: crate::cache::zeroed(n.checked_mul(block_size)?, 0u32)?,
            index: HashMap::new(),
        })
    }

    /// Blocks no sequence uses (whether or not they cache a prefix).
    pub(crate) fn free_count(&self) -> usize {
        self.n_free
    }

    /// Sequences using block `b`.
    pub(crate) fn refs(&self, b: u32) -> u32 {
        self.refs[b as usize]
    }

    /// Whether block `b` holds a cached prefix (and so must never be written again).
    pub(crate) fn is_cached(&self, b: u32) -> bool {
        self.hash[b as usize] != 0
    }

    /// Blocks holding a cached prefix, used or not.
    pub(crate) fn cached_count(&self) -> usize {
        self.index.len()
    }

    /// Takes the least recently freed block for new positions (forgetting what it cached), with
    /// one reference; `None` when every block is in use.
    pub(crate) fn take(&mut self) -> Option<u32> {
        let b = self.head;
        if b == NIL {
            return None;
        }
        self.unlink(b);
        self.forget(b);
        self.refs[b as usize] = 1;
        Some(b)
    }

    /// One more sequence uses block `b` (a fork, or a prefix-cache hit on a free block).
    pub(crate) fn retain(&mut self, b: u32) {
        if self.refs[b as usize] == 0 {
            self.unlink(b);
        }
        self.refs[b as usize] += 1;
    }

    /// One sequence fewer uses block `b`; at none it joins the free queue (at the back if it
    /// caches a prefix, at the front if not).
    pub(crate) fn release(&mut self, b: u32) {
        let r = &mut self.refs[b as usize];
        if *r == 0 {
            debug_assert!(false, "block {b} released more often than taken");
            return;
        }
        *r -= 1;
        if *r == 0 {
            if self.is_cached(b) {
                self.push_back(b);
            } else {
                self.push_front(b);
            }
        }
    }

    /// The cached block whose tokens are `tokens` after the prefix hashed as `parent`, and its
    /// hash. The caller retains it.
    pub(crate) fn lookup(&self, parent: u64, tokens: &[u32]) -> Option<(u32, u64)> {
        let h = chain_hash(parent, tokens);
        let &b = self.index.get(&h)?;
        let bs = self.block_size;
        let same = self.parent[b as usize] == parent && self.tokens[b as usize * bs..(b as usize + 1) * bs] == *tokens;
        same.then_some((b, h))
    }

    /// Records that full block `b` holds `tokens` after the prefix hashed as `parent`; returns
    /// the block's hash (the parent of the next block). If another block already caches the same
    /// prefix, `b` stays uncached (one copy is enough).
    pub(crate) fn register(&mut self, b: u32, parent: u64, tokens: &[u32]) -> u64 {
        debug_assert_eq!(tokens.len(), self.block_size);
        let h = chain_hash(parent, tokens);
        if self.is_cached(b) || self.index.contains_key(&h) {
            return h;
        }
        let bs = self.block_size;
        self.hash[b as usize] = h;
        self.parent[b as usize] = parent;
        self.tokens[b as usize * bs..(b as usize + 1) * bs].copy_from_slice(tokens);
        self.index.insert(h, b);
        h
    }

    fn forget(&mut self, b: u32) {
        let h = std::mem::take(&mut self.hash[b as usize]);
        if h != 0 && self.index.get(&h) == Some(&b) {
            self.index.remove(&h);
        }
    }

    fn unlink(&mut self, b: u32) {
        let (p, n) = (self.prev[b as usize], self.next[b as usize]);
        if p == NIL {
            self.head = n
        } else {
            self.next[p as usize] = n
        }
        if n == NIL {
            self.tail = p
        } else {
            self.prev[n as usize] = p
        }
        self.prev[b as usize] = NIL;
        self.next[b as usize] = NIL;
        self.n_free -= 1;
    }

    fn push_back(&mut self, b: u32) {
        self.prev[b as usize] = self.tail;
        self.next[b as usize] = NIL;
        if self.tail == NIL {
            self.head = b
        } else {
            self.next[self.tail as usize] = b
        }
        self.tail = b;
        self.n_free += 1;
    }

    fn push_front(&mut self, b: u32) {
        self.next[b as usize] = self.head;
        self.prev[b as usize] = NIL;
        if self.head == NIL {
            self.tail = b
        } else {
            self.prev[self.head as usize] = b
        }
        self.head = b;
        self.n_free += 1;
    }

    /// The free queue from front to back (tests).
    #[cfg(test)]
    fn queue(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let mut b = self.head;
        while b != NIL {
            out.push(b);
            b = self.next[b as usize];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blocks_are_taken_in_order_and_uncached_ones_come_back_first() {
        let mut book = BlockBook::new(4, 2).unwrap();
        assert_eq!((book.take(), book.take()), (Some(0), Some(1)));
        let h = book.register(0, 0, &[7, 8]);
        book.release(0); // cached: to the back
        book.release(1); // caches nothing: to the front
        assert_eq!(book.queue(), vec![1, 2, 3, 0]);
        assert_eq!(book.lookup(0, &[7, 8]), Some((0, h)));
        assert_eq!(book.lookup(0, &[7, 9]), None);
        assert_eq!(book.lookup(5, &[7, 8]), None, "another parent is another prefix");
        // A hit takes the block out of the queue; taking blocks never evicts it while it is used.
        book.retain(0);
        assert_eq!(book.queue(), vec![1, 2, 3]);
        for want in [1, 2, 3] {
            assert_eq!(book.take(), Some(want));
        }
        assert_eq!(book.take(), None);
        assert_eq!(book.lookup(0, &[7, 8]), Some((0, h)));
        // Free again, then needed for new positions: evicted, and no longer found.
        book.release(0);
        assert_eq!(book.take(), Some(0));
        assert_eq!(book.lookup(0, &[7, 8]), None);
        assert_eq!(book.cached_count(), 0);
    }

    #[test]
    fn a_second_copy_of_a_prefix_is_not_indexed() {
        let mut book = BlockBook::new(2, 1).unwrap();
        let (a, b) = (book.take().unwrap(), book.take().unwrap());
        let ha = book.register(a, 0, &[3]);
        let hb = book.register(b, 0, &[3]);
        assert_eq!(ha, hb, "the chain continues either way");
        assert!(book.is_cached(a) && !book.is_cached(b));
    }

    proptest! {
        /// Random takes, retains, releases and registrations: the free count always equals the
        /// blocks with no reference, the queue holds exactly them, and every index entry points
        /// at a block that caches that hash.
        #[test]
        fn the_queue_and_the_counts_agree(ops in proptest::collection::vec((0u8..4, 0u32..6, 0u32..3), 1..200)) {
            let n = 6;
            let mut book = BlockBook::new(n, 1).unwrap();
            for (op, b, t) in ops {
                match op {
                    0 => { book.take(); }
                    1 => if book.refs(b) > 0 { book.retain(b) },
                    2 => if book.refs(b) > 0 { book.release(b) },
                    _ => if book.refs(b) > 0 { book.register(b, 0, &[t]); },
                }
                let free: Vec<u32> = (0..n as u32).filter(|&b| book.refs(b) == 0).collect();
                let mut queue = book.queue();
                queue.sort();
                prop_assert_eq!(&queue, &free);
                prop_assert_eq!(book.free_count(), free.len());
                for (&h, &b) in &book.index {
                    prop_assert_eq!(book.hash[b as usize], h);
                }
            }
        }
    }
}
