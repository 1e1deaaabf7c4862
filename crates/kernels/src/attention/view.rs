//! How the attention kernels find a sequence's keys and values in a cache of blocks, and the two
//! element types a cache can hold: f16 values, or Q8_0 blocks of 32 (`--kv-type q8_0`).

use half::f16;

/// What a KV cache stores: f16 values, or [`KvBlockQ8`] blocks of 32 values. The kernels address
/// values (a [`KvView`]'s offsets and strides count values, not stored units); a type reads value
/// `i` of its slice its own way.
pub trait KvElem: Copy + Send + Sync + 'static {
    /// Values per stored unit: 1 for f16, 32 for a Q8_0 block.
    const VALUES: usize;
    /// The view itself when the cache holds f16 (the only type the kernels of llama.cpp's order
    /// read); `None` otherwise.
    fn as_f16<'a>(kv: &KvView<'a, Self>) -> Option<KvView<'a, f16>>;
    /// Value `i` of `data` in f32 (exact: an f16, or a Q8_0 scale times an integer of 7 bits).
    fn value(data: &[Self], i: usize) -> f32;
    /// Bytes that `n` values take (n a multiple of [`KvElem::VALUES`]).
    fn bytes(n: usize) -> usize;
    /// The address of the stored unit that holds value `i` (for prefetching).
    fn unit_ptr(data: *const Self, i: usize) -> *const u8;
    /// Values `i..i + 8` from `data` in f32 (i % 8 == 0; the caller has AVX2 and F16C).
    ///
    /// # Safety
    /// The values lie inside the allocation `data` points into, and the CPU has AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(data: *const Self, i: usize) -> std::arch::x86_64::__m256;
}

impl KvElem for f16 {
    const VALUES: usize = 1;

    fn as_f16<'a>(kv: &KvView<'a, f16>) -> Option<KvView<'a, f16>> {
        Some(*kv)
    }

    #[inline(always)]
    fn value(data: &[f16], i: usize) -> f32 {
        data[i].to_f32()
    }

    fn bytes(n: usize) -> usize {
        2 * n
    }

    #[inline(always)]
    fn unit_ptr(data: *const f16, i: usize) -> *const u8 {
        data.wrapping_add(i).cast()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(data: *const f16, i: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(data.add(i) as *const __m128i))
    }
}

/// 32 keys (or values) of a Q8_0 cache: value i is `d * qs[i]`, as GGUF's Q8_0 block (34 bytes
/// for 64 of f16). Made by rounding like the activations' quantizer (`quant::quantize_row_q8`):
/// `d = f16(max |x| / 127)`, `qs[i] = round(x[i] * 127 / max |x|)` (ties to even).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct KvBlockQ8 {
    /// Scale.
    pub d: f16,
    /// Quantized values.
    pub qs: [i8; 32],
}

impl KvBlockQ8 {
    /// Blocks of `x` (a multiple of 32 values) into `out`, at `level`.
    pub fn quantize(level: crate::Level, x: &[f32], out: &mut [KvBlockQ8]) {
        assert!(x.len() == out.len() * 32, "KV quantization: {} values into {} blocks", x.len(), out.len());
        let mut blocks = [crate::quant::BlockQ8::default(); 8];
        for (x, out) in x.chunks(8 * 32).zip(out.chunks_mut(8)) {
            let blocks = &mut blocks[..out.len()];
            crate::quant::quantize_row_q8_at(level, x, blocks);
            for (o, b) in out.iter_mut().zip(blocks.iter()) {
                // d is already rounded to f16: the conversion is exact.
                *o = KvBlockQ8 { d: f16::from_f32(b.d), qs: b.qs };
            }
        }
    }
}

impl KvElem for KvBlockQ8 {
    const VALUES: usize = 32;

    fn as_f16<'a>(_: &KvView<'a, KvBlockQ8>) -> Option<KvView<'a, f16>> {
        None
    }

    #[inline(always)]
    fn value(data: &[KvBlockQ8], i: usize) -> f32 {
        let b = &data[i / 32];
        b.d.to_f32() * b.qs[i % 32] as f32
    }

    fn bytes(n: usize) -> usize {
        n / 32 * std::mem::size_of::<KvBlockQ8>()
    }

    #[inline(always)]
    fn unit_ptr(data: *const KvBlockQ8, i: usize) -> *const u8 {
        data.wrapping_add(i / 32).cast()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(data: *const KvBlockQ8, i: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let b = data.add(i / 32);
        let qs = _mm_loadl_epi64((*b).qs.as_ptr().add(i % 32) as *const __m128i);
        let d = _mm256_cvtph_ps(_mm_set1_epi16((*b).d.to_bits() as i16));
        // d * q is exact in f32 (11 + 7 significant bits): the same value as `value`.
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(qs)), d)
    }
}

/// One layer of a KV cache made of fixed-size blocks: position s of the sequence lives in block
/// `table[s / block_size]` at position `s % block_size` of the block. Each (block, position, KV
/// head) holds Dh contiguous keys (values alike), f16 or Q8_0 blocks of 32 ([`KvElem`]); offsets
/// and strides count values, and the strides say where:
///
/// ```text
/// value d of KV head h at position s:  table[s / bs] * block_stride + (s % bs) * pos_stride + h * head_stride + d
/// position-major blocks (blocks, bs, Hkv*Dh):    block_stride = bs * Hkv * Dh, pos_stride = Hkv * Dh, head_stride = Dh
/// head-major blocks (blocks, [layers,] Hkv, bs, Dh): pos_stride = Dh, head_stride = bs * Dh
/// ```
///
/// A contiguous cache is position-major with the identity table. The model's pool is head-major
/// with every layer of a block side by side (see `model::cache`): one head's positions of a
/// block are one run of memory. In a Q8_0 view every run starts on a block of 32 (Dh and the
/// strides are multiples of 32).
#[derive(Debug)]
pub struct KvView<'a, T: KvElem = f16> {
    /// Keys of every block of the pool.
    pub keys: &'a [T],
    /// Values, laid out as the keys.
    pub values: &'a [T],
    /// The sequence's blocks, in position order.
    pub table: &'a [u32],
    /// Positions per block.
    pub block_size: usize,
    /// Hkv * Dh, the width of one position's keys (or values).
    pub kv_dim: usize,
    /// Values from one block to the next.
    pub block_stride: usize,
    /// Values from one position of a block to the next.
    pub pos_stride: usize,
    /// Values from one KV head to the next.
    pub head_stride: usize,
}

impl<T: KvElem> Clone for KvView<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: KvElem> Copy for KvView<'_, T> {}

impl<'a, T: KvElem> KvView<'a, T> {
    /// Position-major blocks (blocks, block_size, Hkv*Dh) of heads `head_dim` wide.
    pub fn position_major(keys: &'a [T], values: &'a [T], table: &'a [u32], block_size: usize, kv_dim: usize, head_dim: usize) -> KvView<'a, T> {
        KvView { keys, values, table, block_size, kv_dim, block_stride: block_size * kv_dim, pos_stride: kv_dim, head_stride: head_dim }
    }

    /// The same view over another sequence's table.
    pub fn with_table(&self, table: &'a [u32]) -> KvView<'a, T> {
        KvView { table, ..*self }
    }

    /// Offset of position `s` of KV head 0 in `keys` and `values` (add [`KvView::head`]).
    #[inline(always)]
    pub fn row(&self, s: usize) -> usize {
        let bs = self.block_size;
        // Blocks are a power of two in practice: a shift and a mask instead of a division.
        let (block, within) = if bs.is_power_of_two() { (s >> bs.trailing_zeros(), s & (bs - 1)) } else { (s / bs, s % bs) };
        self.table[block] as usize * self.block_stride + within * self.pos_stride
    }

    /// Offset of KV head `h` from a position's [`KvView::row`].
    #[inline(always)]
    pub fn head(&self, h: usize) -> usize {
        h * self.head_stride
    }

    /// Whether the view holds `n_head_kv` heads of `head_dim` per position: Hkv * Dh is
    /// `kv_dim`, every (position, head) run lies inside its block's `block_size * kv_dim`
    /// values, and (Q8_0) runs start and end on whole blocks of 32.
    pub fn holds_heads(&self, n_head_kv: usize, head_dim: usize) -> bool {
        let last = |n: usize, stride: usize| n.saturating_sub(1).checked_mul(stride);
        let extent =
            last(self.block_size, self.pos_stride).zip(last(n_head_kv, self.head_stride)).and_then(|(a, b)| a.checked_add(b)?.checked_add(head_dim));
        let span = self.block_size.checked_mul(self.kv_dim);
        let whole = [head_dim, self.block_stride, self.pos_stride, self.head_stride].iter().all(|n| n.is_multiple_of(T::VALUES));
        whole && n_head_kv > 0 && n_head_kv.checked_mul(head_dim) == Some(self.kv_dim) && extent.zip(span).is_some_and(|(e, span)| e <= span)
    }

    /// Whether positions `0..n` are addressable: the table covers them and every block they use
    /// (its `block_size * kv_dim` values from `table[b] * block_stride`) lies inside the slices.
    pub fn covers(&self, n: usize) -> bool {
        let len = self.keys.len().min(self.values.len()).saturating_mul(T::VALUES);
        let Some(span) = self.block_size.checked_mul(self.kv_dim) else { return false };
        let fits = |b: u32| (b as usize).checked_mul(self.block_stride).and_then(|o| o.checked_add(span)).is_some_and(|end| end <= len);
        self.block_size > 0
            && self.table.len().checked_mul(self.block_size).is_some_and(|held| held >= n)
            && self.table[..n.div_ceil(self.block_size)].iter().all(|&b| fits(b))
    }
}
