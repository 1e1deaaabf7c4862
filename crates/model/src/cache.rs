//! The key/value cache of one sequence.
//!
//! Keys and values are stored as f16 (half the memory of f32, and the precision the peers keep),
//! laid out (L, S, Hkv*Dh): one contiguous run of positions per layer, so attention reads a head's
//! keys with a fixed stride. The whole capacity is allocated once, when the sequence starts; a
//! decode step only writes its new position. The paged, multi-sequence cache of the server will
//! replace the contiguous run with fixed-size blocks addressed through a table.

use crate::ModelError;
use half::f16;

/// Keys and values of every layer for up to `capacity` positions of one sequence.
pub struct KvCache {
    n_layer: usize,
    capacity: usize, // S_max
    kv_dim: usize,   // Hkv * Dh
    len: usize,      // positions filled
    k: Vec<f16>,     // (L, S_max, Hkv*Dh)
    v: Vec<f16>,     // (L, S_max, Hkv*Dh)
}

impl KvCache {
    /// An empty cache for `capacity` positions; fails cleanly when it does not fit in memory.
    pub fn new(n_layer: usize, capacity: usize, kv_dim: usize) -> Result<KvCache, ModelError> {
        let size = n_layer.checked_mul(capacity).and_then(|n| n.checked_mul(kv_dim));
        let k = size.and_then(|n| zeroed(n, f16::ZERO));
        let v = size.and_then(|n| zeroed(n, f16::ZERO));
        match (k, v) {
            (Some(k), Some(v)) => Ok(KvCache { n_layer, capacity, kv_dim, len: 0, k, v }),
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

    /// The (keys, values) of layer `l`, each (S_max, Hkv*Dh).
    pub(crate) fn layer_mut(&mut self, l: usize) -> (&mut [f16], &mut [f16]) {
        let n = self.capacity * self.kv_dim;
        (&mut self.k[l * n..(l + 1) * n], &mut self.v[l * n..(l + 1) * n])
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
        assert_eq!(c.memory_bytes(), 2 * (2 * 8 * 4) * 2);
    }
}
