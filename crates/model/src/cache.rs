//! Key/value caches in fixed-size blocks: a pool of blocks shared by many sequences, each
//! sequence reaching its positions through a block table.
//!
//! Keys and values are stored as f16 (half the memory of f32, and the precision the peers keep),
//! or as Q8_0 blocks of 32 values ([`KvType::Q8_0`]: 34 bytes for 64 of f16) in blocks of
//! [`KV_BLOCK`] positions, (blocks, L, Hkv, KV_BLOCK, Dh): a block holds every
//! layer, and within a layer each KV head's positions are one run of memory. Attention reads one
//! head's run per block, a stream the prefetchers follow; a new block touches one stretch of
//! memory instead of one per layer (fresh pages are zeroed by the kernel when first written,
//! 2 MB at a time on huge pages). A [`KvPool`]
//! owns the memory and counts how many tables use each block; a [`SeqCache`] is one sequence's
//! table and length. Forking a sequence (beam search, `n > 1` completions of one prompt) copies
//! only its table: the blocks are shared, and a shared block is copied the first time one of its
//! sequences writes into it (copy on write). Everything is allocated when the pool is made; a
//! decode step only writes its position.
//!
//! A full block whose tokens are known can be kept after its sequences are done: the prefix
//! cache ([`KvPool::match_prefix`], [`KvPool::register_blocks`], bookkept in the private `blocks` module)
//! lets a later sequence with the same prefix take those blocks back instead of computing them.
//!
//! A [`SeqCache`] is bound to the pool that made it: using it with another pool is an error, and
//! dropping it gives its blocks back (at the pool's next change).
//!
//! [`KvCache`] is the single-sequence case: a pool with one sequence that owns every block.

use crate::blocks::BlockBook;
use crate::memory::HugeBuffer;
use crate::ModelError;
use half::f16;
use kernels::attention::{KvBlockQ8, KvElem, KvView};
use std::sync::{Arc, Mutex};

/// Positions per block.
pub const KV_BLOCK: usize = 32;

/// One sequence's view of a [`KvPool`]: its blocks in position order and how many positions are
/// filled. Made by [`KvPool::sequence`] or [`KvPool::fork`]; give it back with
/// [`KvPool::release`], or drop it (its blocks return to the pool at the pool's next change).
#[derive(Debug, Default)]
pub struct SeqCache {
    table: Vec<u32>,                    // (blocks) block ids in position order
    pub(crate) len: usize,              // positions filled
    hashes: Vec<u64>,                   // (full blocks registered) prefix-cache hash of each, in order
    home: Option<Arc<Mutex<Vec<u32>>>>, // the pool's list of blocks of dropped sequences
}

impl Drop for SeqCache {
    fn drop(&mut self) {
        if let Some(home) = &self.home {
            if !self.table.is_empty() {
                // A poisoned lock only means a panic elsewhere; the list itself is still sound.
                let mut dropped = home.lock().unwrap_or_else(|e| e.into_inner());
                dropped.append(&mut self.table);
            }
        }
    }
}

impl SeqCache {
    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The block ids, in position order.
    pub fn blocks(&self) -> &[u32] {
        &self.table
    }
}

/// What a KV cache stores keys and values as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    /// f16 values: the precision the peers keep, and llama.cpp's order of attention.
    #[default]
    F16,
    /// Q8_0 blocks of 32 values ([`KvBlockQ8`]): 53% of the memory of f16; attention runs the
    /// block order's kernel over them. Heads must be a multiple of 32 values wide.
    Q8_0,
}

impl KvType {
    /// Bytes of `n` values (n a multiple of 32 for Q8_0).
    pub fn bytes(self, n: u128) -> u128 {
        match self {
            KvType::F16 => 2 * n,
            KvType::Q8_0 => n / 32 * std::mem::size_of::<KvBlockQ8>() as u128,
        }
    }

    /// The name `--kv-type` takes.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<KvType, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "q8_0" | "q8" => Ok(KvType::Q8_0),
            _ => Err(format!("unknown KV cache type {s:?} (expected f16 or q8_0)")),
        }
    }
}

/// The memory of a pool's keys and values, (blocks, L, Hkv, KV_BLOCK, Dh) values each.
enum KvStore {
    F16 { k: HugeBuffer<f16>, v: HugeBuffer<f16> },
    Q8 { k: HugeBuffer<KvBlockQ8>, v: HugeBuffer<KvBlockQ8> },
}

/// One layer of a pool as the attention kernels read it, in the pool's type.
pub(crate) enum LayerView<'a> {
    F16(KvView<'a, f16>),
    Q8(KvView<'a, KvBlockQ8>),
}

/// Blocks of keys and values for every layer, shared by the sequences made from it.
pub struct KvPool {
    n_layer: usize,
    kv_dim: usize,                 // Hkv * Dh
    head_dim: usize,               // Dh
    n_blocks: usize,               // blocks (of every layer)
    max_seq_len: usize,            // S_max, the most positions of one sequence
    store: KvStore,                // keys and values
    book: BlockBook,               // reference counts, free queue, prefix cache
    dropped: Arc<Mutex<Vec<u32>>>, // blocks of sequences dropped without a release
}

/// The widest head a Q8_0 pool takes (the rotated keys go through a buffer on the stack).
const MAX_Q8_HEAD: usize = 512;

impl KvPool {
    /// A pool of `n_blocks` blocks of `kv_type` for sequences of up to `max_seq_len` positions;
    /// fails cleanly when it does not fit in memory, or (Q8_0) when heads are not a multiple of
    /// 32 values.
    pub fn new(
        n_layer: usize,
        n_head_kv: usize,
        head_dim: usize,
        n_blocks: usize,
        max_seq_len: usize,
        kv_type: KvType,
    ) -> Result<KvPool, ModelError> {
        if kv_type == KvType::Q8_0 && (!head_dim.is_multiple_of(32) || head_dim > MAX_Q8_HEAD) {
            return Err(ModelError::Unsupported(format!(
                "a Q8_0 KV cache for heads of {head_dim} values (it needs a multiple of 32, at most {MAX_Q8_HEAD}); use --kv-type f16"
            )));
        }
        let kv_dim = n_head_kv.saturating_mul(head_dim);
        let size = n_layer.checked_mul(n_blocks).and_then(|n| n.checked_mul(KV_BLOCK)).and_then(|n| n.checked_mul(kv_dim));
        let store = match kv_type {
            KvType::F16 => size.and_then(|n| Some(KvStore::F16 { k: HugeBuffer::zeroed(n)?, v: HugeBuffer::zeroed(n)? })),
            KvType::Q8_0 => size.and_then(|n| Some(KvStore::Q8 { k: HugeBuffer::zeroed(n / 32)?, v: HugeBuffer::zeroed(n / 32)? })),
        };
        let book = BlockBook::new(n_blocks, KV_BLOCK);
        match (store, book) {
            (Some(store), Some(book)) => Ok(KvPool { n_layer, kv_dim, head_dim, n_blocks, max_seq_len, store, book, dropped: Arc::default() }),
            _ => Err(ModelError::OutOfMemory {
                what: "KV cache",
                bytes: 2 * kv_type.bytes((n_layer as u128) * (n_blocks as u128) * (KV_BLOCK as u128) * (kv_dim as u128)),
                hint: "use a smaller context size (--ctx), fewer sequences, or --kv-type q8_0",
            }),
        }
    }

    /// A pool with room for `n_seqs` sequences of `max_seq_len` positions each, none shared.
    pub fn for_sequences(
        n_layer: usize,
        n_head_kv: usize,
        head_dim: usize,
        n_seqs: usize,
        max_seq_len: usize,
        kv_type: KvType,
    ) -> Result<KvPool, ModelError> {
        let n_blocks = max_seq_len.div_ceil(KV_BLOCK).checked_mul(n_seqs).ok_or(ModelError::OutOfMemory {
            what: "KV cache",
            bytes: u128::MAX,
            hint: "use a smaller context size (--ctx) or fewer sequences",
        })?;
        KvPool::new(n_layer, n_head_kv, head_dim, n_blocks, max_seq_len, kv_type)
    }

    /// What the pool stores keys and values as.
    pub fn kv_type(&self) -> KvType {
        match self.store {
            KvStore::F16 { .. } => KvType::F16,
            KvStore::Q8 { .. } => KvType::Q8_0,
        }
    }

    /// Touches every page of the pool now, as llama.cpp clears its KV buffer at start: a server
    /// then pays the kernel's page zeroing (about 0.5 s of a 10-second benchmark on this VM)
    /// once at start instead of in its first requests. Call it before any sequence writes.
    pub fn prefault(&mut self) {
        match &mut self.store {
            KvStore::F16 { k, v } => {
                k.prefault();
                v.prefault();
            }
            KvStore::Q8 { k, v } => {
                k.prefault();
                v.prefault();
            }
        }
    }

    /// A new, empty sequence (it takes blocks as it grows).
    pub fn sequence(&self) -> SeqCache {
        SeqCache { table: Vec::with_capacity(self.max_seq_len.div_ceil(KV_BLOCK)), len: 0, hashes: Vec::new(), home: Some(self.dropped.clone()) }
    }

    /// Whether `seq` belongs to this pool (made by it, or a default table that holds nothing).
    pub fn owns(&self, seq: &SeqCache) -> bool {
        match &seq.home {
            Some(home) => Arc::ptr_eq(home, &self.dropped),
            None => seq.table.is_empty(),
        }
    }

    /// Takes back the blocks of sequences dropped without [`KvPool::release`].
    pub fn reclaim(&mut self) {
        let dropped = std::mem::take(&mut *self.dropped.lock().unwrap_or_else(|e| e.into_inner()));
        for b in dropped {
            self.book.release(b);
        }
    }

    /// A sequence holding the same positions as `seq`, sharing its blocks until either writes.
    pub fn fork(&mut self, seq: &SeqCache) -> SeqCache {
        let mut new = self.sequence();
        self.fork_into(seq, &mut new);
        new
    }

    /// Makes `dst` a fork of `src` (see [`KvPool::fork`]), releasing what `dst` held and reusing
    /// its table's memory.
    pub fn fork_into(&mut self, src: &SeqCache, dst: &mut SeqCache) {
        for &b in &src.table {
            self.book.retain(b);
        }
        self.release(dst);
        dst.table.extend_from_slice(&src.table);
        dst.hashes.clone_from(&src.hashes);
        dst.len = src.len;
        dst.home = Some(self.dropped.clone());
    }

    /// Gives back every block of `seq`, which becomes empty.
    pub fn release(&mut self, seq: &mut SeqCache) {
        self.truncate(seq, 0);
    }

    /// Forgets positions of `seq` from `len` on (e.g. a rejected draft) and gives back the blocks
    /// no longer needed; no-op if the sequence is already shorter.
    pub fn truncate(&mut self, seq: &mut SeqCache, len: usize) {
        seq.len = seq.len.min(len);
        seq.hashes.truncate(seq.len / KV_BLOCK);
        let keep = seq.len.div_ceil(KV_BLOCK);
        // Last block first: the tails of cached chains are evicted before their prefixes.
        while seq.table.len() > keep {
            if let Some(b) = seq.table.pop() {
                self.book.release(b);
            }
        }
    }

    /// Starts the empty sequence `seq` with the longest run of cached blocks that holds a prefix
    /// of `tokens` (whole blocks only; see [`KvPool::register_blocks`]); returns the positions
    /// it now holds, a multiple of [`KV_BLOCK`] and at most `tokens.len()`. Pass one token fewer
    /// than the prompt to keep the last one to compute (its logits are needed).
    pub fn match_prefix(&mut self, seq: &mut SeqCache, tokens: &[u32]) -> usize {
        debug_assert!(seq.is_empty() && seq.table.is_empty(), "prefix matching starts a sequence");
        if !seq.table.is_empty() || seq.len != 0 {
            return 0;
        }
        let mut parent = 0;
        for block in tokens.chunks_exact(KV_BLOCK) {
            let Some((b, h)) = self.book.lookup(parent, block) else { break };
            self.book.retain(b);
            seq.table.push(b);
            seq.hashes.push(h);
            parent = h;
        }
        seq.len = seq.table.len() * KV_BLOCK;
        seq.len
    }

    /// Offers the full blocks of `seq` to the prefix cache; `tokens` are the tokens at its
    /// positions (at least `seq.len()` of them). Blocks offered before are skipped, so calling
    /// this after every step costs only the blocks that filled since.
    pub fn register_blocks(&mut self, seq: &mut SeqCache, tokens: &[u32]) {
        let full = seq.len.min(tokens.len()) / KV_BLOCK;
        for i in seq.hashes.len()..full {
            let parent = seq.hashes.last().copied().unwrap_or(0);
            let h = self.book.register(seq.table[i], parent, &tokens[i * KV_BLOCK..(i + 1) * KV_BLOCK]);
            seq.hashes.push(h);
        }
    }

    /// Full blocks held by the prefix cache (in use or free).
    pub fn cached_blocks(&self) -> usize {
        self.book.cached_count()
    }

    /// Makes positions `seq.len()..seq.len() + n` writable: takes fresh blocks for them, and
    /// copies a block they touch that other sequences share (copy on write).
    pub fn reserve(&mut self, seq: &mut SeqCache, n: usize) -> Result<(), ModelError> {
        if !self.owns(seq) {
            return Err(ModelError::ForeignSequence);
        }
        seq.home.get_or_insert_with(|| self.dropped.clone());
        let end = seq.len + n;
        if end > self.max_seq_len {
            return Err(ModelError::ContextFull { capacity: self.max_seq_len, needed: end });
        }
        let first = seq.len / KV_BLOCK;
        let needed = end.div_ceil(KV_BLOCK);
        for i in first..needed {
            match seq.table.get(i).copied() {
                Some(b) if self.book.refs(b) <= 1 && !self.book.is_cached(b) => {}
                Some(b) => {
                    // Shared, or kept by the prefix cache: this sequence gets its own copy (only
                    // positions before len matter).
                    let fresh = self.take_block(needed - i)?;
                    if i * KV_BLOCK < seq.len {
                        self.copy_block(b, fresh);
                    }
                    self.book.release(b);
                    seq.table[i] = fresh;
                    seq.hashes.truncate(i);
                }
                None => {
                    let fresh = self.take_block(needed - i)?;
                    seq.table.push(fresh);
                }
            }
        }
        Ok(())
    }

    fn take_block(&mut self, wanted: usize) -> Result<u32, ModelError> {
        if let Some(b) = self.book.take() {
            return Ok(b);
        }
        // Out of free blocks: only now take back those of dropped sequences (a lock that the
        // step-by-step path never pays while blocks are free).
        self.reclaim();
        self.book.take().ok_or(ModelError::OutOfKvBlocks { blocks: self.n_blocks, wanted, block_size: KV_BLOCK })
    }

    fn copy_block(&mut self, from: u32, to: u32) {
        let block = self.block_len();
        let (src, dst) = (from as usize * block, to as usize * block);
        match &mut self.store {
            KvStore::F16 { k, v } => {
                k.copy_within(src..src + block, dst);
                v.copy_within(src..src + block, dst);
            }
            KvStore::Q8 { k, v } => {
                // A block's values are whole Q8_0 blocks (KV_BLOCK positions of Dh, a multiple of 32).
                let (src, dst, block) = (src / 32, dst / 32, block / 32);
                k.copy_within(src..src + block, dst);
                v.copy_within(src..src + block, dst);
            }
        }
    }

    /// Blocks not used by any sequence (those of dropped sequences count once the pool has
    /// taken them back: [`KvPool::reclaim`], or a reservation that found no free block). Free
    /// blocks may still hold cached prefixes.
    pub fn free_blocks(&self) -> usize {
        self.book.free_count()
    }

    /// Blocks in the pool.
    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// The most positions one sequence holds.
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Hkv * Dh.
    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    /// Dh.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// L.
    pub fn n_layer(&self) -> usize {
        self.n_layer
    }

    /// Bytes the pool holds.
    pub fn memory_bytes(&self) -> usize {
        match &self.store {
            KvStore::F16 { k, v } => (k.len() + v.len()) * std::mem::size_of::<f16>(),
            KvStore::Q8 { k, v } => (k.len() + v.len()) * std::mem::size_of::<KvBlockQ8>(),
        }
    }

    /// Elements of one layer of a block, and of a whole block.
    fn layer_span(&self) -> usize {
        KV_BLOCK * self.kv_dim
    }

    fn block_len(&self) -> usize {
        self.n_layer * self.layer_span()
    }

    /// Layer `l` of `seq` as the attention kernel reads it.
    pub(crate) fn layer<'a>(&'a self, l: usize, seq: &'a SeqCache) -> LayerView<'a> {
        let first = l * self.layer_span(); // layer l of block 0, in values
        match &self.store {
            KvStore::F16 { k, v } => LayerView::F16(self.view(&k[first..], &v[first..], &seq.table)),
            KvStore::Q8 { k, v } => LayerView::Q8(self.view(&k[first / 32..], &v[first / 32..], &seq.table)),
        }
    }

    /// The pool's head-major blocks of one layer from `keys` and `values`.
    fn view<'a, T: KvElem>(&self, keys: &'a [T], values: &'a [T], table: &'a [u32]) -> KvView<'a, T> {
        KvView {
            keys,
            values,
            table,
            block_size: KV_BLOCK,
            kv_dim: self.kv_dim,
            block_stride: self.block_len(),
            pos_stride: self.head_dim,
            head_stride: KV_BLOCK * self.head_dim,
        }
    }

    /// Stores position `pos` of `seq` in layer `l` (its block reserved by [`KvPool::reserve`]):
    /// the keys (Hkv*Dh) rotated by RoPE (`cos_sin` of the position) and the values, both
    /// rounded to f16 (or quantized to Q8_0 blocks), head by head into their runs.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_rotated(&mut self, l: usize, seq: &SeqCache, pos: usize, key: &[f32], value: &[f32], cos_sin: &[(f32, f32)], neox: bool) {
        let dh = self.head_dim;
        debug_assert!(key.len() == self.kv_dim && value.len() == self.kv_dim && cos_sin.len() * 2 == dh);
        let first = seq.table[pos / KV_BLOCK] as usize * self.block_len() + l * self.layer_span() + pos % KV_BLOCK * dh;
        let heads = key.chunks_exact(dh).zip(value.chunks_exact(dh));
        for (h, (key, value)) in heads.enumerate() {
            let at = first + h * KV_BLOCK * dh;
            match &mut self.store {
                KvStore::F16 { k, v } => {
                    if neox {
                        kernels::ops::rope_neox_to_f16(key, dh, cos_sin, &mut k[at..at + dh]);
                    } else {
                        kernels::ops::rope_to_f16(key, dh, cos_sin, &mut k[at..at + dh]);
                    }
                    kernels::ops::f32_to_f16(value, &mut v[at..at + dh]);
                }
                KvStore::Q8 { k, v } => {
                    let mut rotated = [0f32; MAX_Q8_HEAD];
                    let rotated = &mut rotated[..dh];
                    rotated.copy_from_slice(key);
                    if neox {
                        kernels::ops::rope_neox_inplace(rotated, dh, cos_sin);
                    } else {
                        kernels::ops::rope_inplace(rotated, dh, cos_sin);
                    }
                    let level = kernels::Level::current();
                    KvBlockQ8::quantize(level, rotated, &mut k[at / 32..(at + dh) / 32]);
                    KvBlockQ8::quantize(level, value, &mut v[at / 32..(at + dh) / 32]);
                }
            }
        }
    }
}

/// Keys and values of every layer for up to `capacity` positions of one sequence: a pool whose
/// one sequence owns every block.
pub struct KvCache {
    pub(crate) pool: KvPool,
    pub(crate) seq: SeqCache,
}

impl KvCache {
    /// An empty cache of `kv_type` for `capacity` positions; fails cleanly when it does not fit
    /// in memory.
    pub fn new(n_layer: usize, capacity: usize, n_head_kv: usize, head_dim: usize, kv_type: KvType) -> Result<KvCache, ModelError> {
        let pool = KvPool::for_sequences(n_layer, n_head_kv, head_dim, 1, capacity, kv_type)?;
        let seq = pool.sequence();
        Ok(KvCache { pool, seq })
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.seq.len
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.seq.len == 0
    }

    /// The most positions this cache holds.
    pub fn capacity(&self) -> usize {
        self.pool.max_seq_len
    }

    /// Hkv * Dh.
    pub fn kv_dim(&self) -> usize {
        self.pool.kv_dim
    }

    /// L.
    pub fn n_layer(&self) -> usize {
        self.pool.n_layer
    }

    /// Forgets every position (the memory is kept).
    pub fn clear(&mut self) {
        self.pool.release(&mut self.seq);
    }

    /// Forgets positions from `len` on (e.g. to rewind a rejected draft); no-op if already shorter.
    pub fn truncate(&mut self, len: usize) {
        self.pool.truncate(&mut self.seq, len);
    }

    /// Bytes the cache holds.
    pub fn memory_bytes(&self) -> usize {
        self.pool.memory_bytes()
    }
}

/// A vector of `n` copies of `value`, or `None` when the memory cannot be had (instead of the
/// abort of `vec![]`).
pub(crate) fn zeroed<T: Clone>(n: usize, value: T) -> Option<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.resize(n, value);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_cache_too_large_for_memory_is_an_error() {
        // 2^55 bytes: no machine has it; the allocation must fail cleanly, not abort.
        let err = KvCache::new(1 << 20, 1 << 24, 8, 1 << 7, KvType::F16).err().expect("must fail");
        assert!(err.to_string().contains("KV cache"), "{err}");
        // Sizes whose product overflows usize.
        assert!(KvCache::new(usize::MAX, 2, 1, 2, KvType::F16).is_err());
        assert!(KvCache::new(2, 2, usize::MAX, 2, KvType::F16).is_err());
    }

    #[test]
    fn written_positions_read_back_through_the_layer_view() {
        // Two layers of 2 KV heads of 32 over three blocks: every (layer, position, head) run
        // must be found where the attention kernels look for it, keys and values apart, across
        // block boundaries. The values are exact in f16 and differ between neighbours; in Q8_0
        // they come back within half a step of their block's scale (plus the f16 rounding of
        // the scale, 127 times).
        let (n_layer, hkv, dh) = (2, 2, 32);
        for kv_type in [KvType::F16, KvType::Q8_0] {
            let mut pool = KvPool::new(n_layer, hkv, dh, 4, 80, kv_type).unwrap();
            let mut seq = pool.sequence();
            let identity = vec![(1.0f32, 0.0f32); dh / 2]; // angle 0: RoPE leaves the keys as they are
            let value = |l: usize, pos: usize, i: usize, which: usize| ((l * 1009 + pos * 37 + i * 2 + which) % 2039) as f32;
            let n = 70;
            pool.reserve(&mut seq, n).unwrap();
            for pos in 0..n {
                for l in 0..n_layer {
                    let k: Vec<f32> = (0..hkv * dh).map(|i| value(l, pos, i, 0)).collect();
                    let v: Vec<f32> = (0..hkv * dh).map(|i| value(l, pos, i, 1)).collect();
                    pool.write_rotated(l, &seq, pos, &k, &v, &identity, false);
                }
            }
            seq.len = n;
            for l in 0..n_layer {
                let check = |read: &dyn Fn(bool, usize) -> f32, row: &dyn Fn(usize) -> usize, tolerance: f32| {
                    for pos in 0..n {
                        for h in 0..hkv {
                            let at = row(pos) + h * KV_BLOCK * dh;
                            for d in 0..dh {
                                let (k, v) = (value(l, pos, h * dh + d, 0), value(l, pos, h * dh + d, 1));
                                assert!((read(true, at + d) - k).abs() <= tolerance, "{kv_type:?} key l{l} pos {pos} head {h}");
                                assert!((read(false, at + d) - v).abs() <= tolerance, "{kv_type:?} value l{l} pos {pos} head {h}");
                            }
                        }
                    }
                };
                match pool.layer(l, &seq) {
                    LayerView::F16(kv) => {
                        assert!(kv_type == KvType::F16 && kv.holds_heads(hkv, dh) && kv.covers(n));
                        check(&|key, i| if key { kv.keys[i].to_f32() } else { kv.values[i].to_f32() }, &|p| kv.row(p), 0.0);
                    }
                    LayerView::Q8(kv) => {
                        assert!(kv_type == KvType::Q8_0 && kv.holds_heads(hkv, dh) && kv.covers(n));
                        let read = |key: bool, i: usize| KvBlockQ8::value(if key { kv.keys } else { kv.values }, i);
                        check(&read, &|p| kv.row(p), 2039.0 / 127.0 * 0.6);
                    }
                }
            }
            assert_eq!(
                pool.memory_bytes(),
                2 * 4 * n_layer * KV_BLOCK * hkv * dh * if kv_type == KvType::F16 { 2 } else { 34 } / if kv_type == KvType::F16 { 1 } else { 32 }
            );
        }
    }

    #[test]
    fn a_q8_cache_needs_heads_of_whole_blocks() {
        let err = KvPool::new(1, 2, 48, 4, 128, KvType::Q8_0).err().expect("heads of 48 split Q8_0 blocks");
        assert!(err.to_string().contains("multiple of 32") && err.to_string().contains("--kv-type f16"), "{err}");
        assert_eq!("Q8_0".parse::<KvType>(), Ok(KvType::Q8_0));
        assert!("q4_0".parse::<KvType>().unwrap_err().contains("f16 or q8_0"));
    }

    #[test]
    fn truncate_and_clear_forget_positions() {
        let mut c = KvCache::new(2, 8, 2, 2, KvType::F16).unwrap();
        c.pool.reserve(&mut c.seq, 5).unwrap();
        c.seq.len = 5;
        c.truncate(3);
        assert_eq!(c.len(), 3);
        c.truncate(7);
        assert_eq!(c.len(), 3);
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.memory_bytes(), 2 * (2 * KV_BLOCK * 4) * 2); // one block (of both layers), keys and values
    }

    #[test]
    fn a_dropped_sequence_gives_its_blocks_back() {
        let mut pool = KvPool::new(1, 1, 2, 4, 128, KvType::F16).unwrap();
        let mut a = pool.sequence();
        pool.reserve(&mut a, 70).unwrap(); // 3 blocks
        assert_eq!(pool.free_blocks(), 1);
        drop(a);
        pool.reclaim();
        assert_eq!(pool.free_blocks(), 4);
        // A fork dropped while its source lives gives back only its references.
        let mut a = pool.sequence();
        pool.reserve(&mut a, 40).unwrap();
        a.len = 40;
        let b = pool.fork(&a);
        drop(b);
        pool.reclaim();
        assert_eq!(pool.free_blocks(), 2);
        pool.release(&mut a);
        assert_eq!(pool.free_blocks(), 4);
        // Without a reclaim: a reservation that finds no free block takes them back itself.
        let mut a = pool.sequence();
        pool.reserve(&mut a, 4 * KV_BLOCK).unwrap();
        drop(a);
        let mut b = pool.sequence();
        pool.reserve(&mut b, 4 * KV_BLOCK).unwrap();
    }

    #[test]
    fn a_sequence_of_another_pool_is_refused() {
        let mut p1 = KvPool::new(1, 1, 2, 4, 128, KvType::F16).unwrap();
        let p2 = KvPool::new(1, 1, 2, 4, 128, KvType::F16).unwrap();
        let mut seq = p2.sequence();
        assert!(matches!(p1.reserve(&mut seq, 1), Err(ModelError::ForeignSequence)));
        assert!(!p1.owns(&seq) && p2.owns(&seq));
        assert_eq!(p1.free_blocks(), 4);
    }

    #[test]
    fn cached_prefix_blocks_are_found_shared_and_never_written() {
        let mut pool = KvPool::new(1, 1, 2, 6, 256, KvType::F16).unwrap();
        let tokens: Vec<u32> = (0..100).collect();
        let mut a = pool.sequence();
        pool.reserve(&mut a, 100).unwrap();
        a.len = 100;
        pool.register_blocks(&mut a, &tokens);
        assert_eq!(pool.cached_blocks(), 3, "three full blocks of 32");
        let first: Vec<u32> = a.blocks()[..3].to_vec();
        pool.release(&mut a);
        assert_eq!(pool.free_blocks(), 6, "cached blocks are free");
        // The same prefix with another tail: two blocks hit (the third differs at position 70).
        let mut other = tokens.clone();
        other[70] = 999;
        let mut b = pool.sequence();
        assert_eq!(pool.match_prefix(&mut b, &other[..99]), 64);
        assert_eq!(b.blocks(), &first[..2]);
        assert_eq!(b.len(), 64);
        // A different first token misses everything: the hashes chain.
        let mut shifted = tokens.clone();
        shifted[0] = 500;
        let mut c = pool.sequence();
        assert_eq!(pool.match_prefix(&mut c, &shifted), 0);
        // Rewinding into a cached block and writing copies it first.
        pool.truncate(&mut b, 40);
        pool.reserve(&mut b, 1).unwrap();
        assert_ne!(b.blocks()[1], first[1], "the cached block was copied, not written");
        let mut d = pool.sequence();
        assert_eq!(pool.match_prefix(&mut d, &tokens), 96, "the cache still holds the original");
        // Taking every free block for new positions evicts the cache.
        pool.release(&mut b);
        pool.release(&mut d);
        let mut e = pool.sequence();
        pool.reserve(&mut e, 6 * KV_BLOCK).unwrap();
        assert_eq!(pool.cached_blocks(), 0);
    }
}
