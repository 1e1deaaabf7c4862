//! The key/value cache of one sequence, in fixed-size blocks.
//!
//! Keys and values are stored as f16 (half the memory of f32, and the precision the peers keep)
//! in blocks of [`KV_BLOCK`] positions, per layer (L, blocks, KV_BLOCK, Hkv*Dh), and the sequence
//! reaches its positions through a block table. A single sequence owns all blocks in order (an
//! identity table); the same layout lets a multi-sequence pool hand blocks to several sequences,
//! share a prompt's blocks between them and cache prefixes, with the attention kernel unchanged.
//! Everything is allocated once, when the cache is made; a decode step only writes its position.

use crate::ModelError;
use half::f16;
use kernels::attention::KvView;

/// Positions per block.
pub const KV_BLOCK: usize = 32;

/// Keys and values of every layer for up to `capacity` positions of one sequence.
pub struct KvCache {
    n_layer: usize,
    capacity: usize, // S_max
    kv_dim: usize,   // Hkv * Dh
    len: usize,      // positions filled
    n_blocks: usize,
    table: Vec<u32>, // (blocks) the sequence's blocks in position order
    k: Vec<f16>,     // (L, blocks, KV_BLOCK, Hkv*Dh)
    v: Vec<f16>,     // (L, blocks, KV_BLOCK, Hkv*Dh)
}

impl KvCache {
    /// An empty cache for `capacity` positions; fails cleanly when it does not fit in memory.
    pub fn new(n_layer: usize, capacity: usize, kv_dim: usize) -> Result<KvCache, ModelError> {
        let n_blocks = capacity.div_ceil(KV_BLOCK);
        let size = n_layer.checked_mul(n_blocks).and_then(|n| n.checked_mul(KV_BLOCK)).and_then(|n| n.checked_mul(kv_dim));
        let k = size.and_then(|n| zeroed(n, f16::ZERO));
        let v = size.and_then(|n| zeroed(n, f16::ZERO));
        let table = u32::try_from(n_blocks).ok().and_then(|n| {
            let mut t = Vec::new();
            t.try_reserve_exact(n as usize).ok()?;
            t.extend(0..n);
            Some(t)
        });
        match (k, v, table) {
            (Some(k), Some(v), Some(table)) => Ok(KvCache { n_layer, capacity, kv_dim, len: 0, n_blocks, table, k, v }),
            _ => Err(ModelError::OutOfMemory {
                what: "KV cache",
                bytes: (n_layer as u128) * (capacity as u128) * (kv_dim as u128) * 4,
                hint: "use a smaller context size (--ctx)",
            }),
        }
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most positions this cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Hkv * Dh.
    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    /// L.
    pub fn n_layer(&self) -> usize {
        self.n_layer
    }

    /// Forgets every position (the memory is kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Forgets positions from `len` on (e.g. to rewind a rejected draft); no-op if already shorter.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes the cache holds.
    pub fn memory_bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * std::mem::size_of::<f16>()
    }

    fn layer_len(&self) -> usize {
        self.n_blocks * KV_BLOCK * self.kv_dim
    }

    /// Layer `l` as the attention kernel reads it.
    pub(crate) fn layer(&self, l: usize) -> KvView<'_> {
        let n = self.layer_len();
        KvView { keys: &self.k[l * n..(l + 1) * n], values: &self.v[l * n..(l + 1) * n], table: &self.table, block_size: KV_BLOCK, kv_dim: self.kv_dim }
    }

    /// Stores position `pos` of layer `l`: the keys (Hkv*Dh) rotated by RoPE (`cos_sin` of the
    /// position, heads of `head_dim`) and the values, both rounded to f16, in one pass.
    pub(crate) fn write_rotated(&mut self, l: usize, pos: usize, key: &[f32], value: &[f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
        let n = self.layer_len();
        let row = l * n + (self.table[pos / KV_BLOCK] as usize * KV_BLOCK + pos % KV_BLOCK) * self.kv_dim;
        kernels::ops::rope_to_f16(key, head_dim, cos_sin, &mut self.k[row..row + self.kv_dim]);
        for (dst, src) in self.v[row..row + self.kv_dim].iter_mut().zip(value) {
            *dst = f16::from_f32(*src);
        }
    }

    /// Marks `t` more positions as filled.
    pub(crate) fn advance(&mut self, t: usize) {
        debug_assert!(self.len + t <= self.capacity);
        self.len += t;
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
        let err = KvCache::new(1 << 20, 1 << 24, 1 << 10).err().expect("must fail");
        assert!(err.to_string().contains("KV cache"), "{err}");
        // Sizes whose product overflows usize.
        assert!(KvCache::new(usize::MAX, 2, 2).is_err());
    }

    #[test]
    fn truncate_and_clear_forget_positions() {
        let mut c = KvCache::new(2, 8, 4).unwrap();
        c.advance(5);
        c.truncate(3);
        assert_eq!(c.len(), 3);
        c.truncate(7);
        assert_eq!(c.len(), 3);
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.memory_bytes(), 2 * (2 * KV_BLOCK * 4) * 2); // one block per layer
    }
}
