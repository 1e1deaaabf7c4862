//! Causal scaled dot-product attention with grouped-query heads over a KV cache of f16 values or
//! Q8_0 blocks (`view.rs`; Q8_0 on the block order's kernel only).

use crate::matmul::{Level, SumOrder};
use crate::pool::{SharedMut, ThreadPool};
use crate::quant::{BlockQ8, QK};
use std::sync::atomic::AtomicUsize;

mod exact;
mod view;
#[cfg(target_arch = "x86_64")]
use exact::attend_online_avx2;
pub use exact::FLASH_MIN_POSITIONS;
use exact::{attend_one, attend_online, softmax_lanes, Order, BANKS, LANES};
pub use view::{KvBlockQ8, KvElem, KvView};

/// The shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    /// T, new tokens in this call.
    pub n_tokens: usize,
    /// Position of the first new token; token t is at `start + t` and sees positions `0..=start + t`.
    pub start: usize,
    /// H, query heads.
    pub n_head: usize,
    /// Hkv, key/value heads; query head h reads KV head `h / (H / Hkv)`.
    pub n_head_kv: usize,
    /// Dh, the width of a head.
    pub head_dim: usize,
}

/// Grouped-query attention (GQA; MQA when there is one KV head, plain multi-head attention when
/// there are as many as query heads): query head `head` of `n_head` reads KV head
/// `head / (n_head / n_head_kv)`, so consecutive query heads share one KV head. The kernels take
/// a KV head's whole group of query heads at once ([`MAX_GROUP`]), reading each key and value
/// row once for all of them.
#[inline(always)]
pub fn kv_head_of(head: usize, n_head: usize, n_head_kv: usize) -> usize {
    head / (n_head / n_head_kv)
}

/// Query heads per KV head up to which the grouped kernel handles a whole group at once.
const MAX_GROUP: usize = 8;

/// Tokens of a prompt that one unit of the block order's work takes at once (`avx2::attend_block`).
/// (Measured with `attention_bench 1 1 512 1 prefill 2000`, Zen 3: 52.2 ms with blocks of 8,
/// 48.6 with 16, 47.6 with 24.)
const MAX_BLOCK: usize = 24;

/// Scratch floats each thread needs for [`attention`]: rows of scores over S positions and
/// query heads for up to a group of heads, and the value accumulators (in the block order: two
/// tiles in f32 and two (G, Dh) states per token of a block, 448 Dh at most, within them).
pub fn attention_scratch_per_thread(max_positions: usize, head_dim: usize) -> usize {
    MAX_GROUP * (max_positions + head_dim) + head_dim * LANES * BANKS * MAX_GROUP
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;

mod online;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// q (T, H, Dh), keys and values of S positions through `kv` -> out (T, H, Dh).
///
/// Scores are `q . k / sqrt(Dh)`; the causal mask lets a token see every position up to and
/// including its own (the diagonal). The query and the attention probabilities are rounded to f16
/// before their products with the f16 keys and values, as the peers do when their cache is f16
/// (they convert the other operand of an f16 matrix product to f16), and sums follow their order
/// (see `Order`). `scratch` holds `n_threads * attention_scratch_per_thread(S, Dh)` floats;
/// (token, head) pairs are taken by the threads from a shared counter.
/// From [`FLASH_MIN_POSITIONS`] positions on, (token, head) pairs use the single-pass online-softmax kernel.
pub fn attention(pool: &ThreadPool, level: Level, shape: AttentionShape, q: &[f32], kv: KvView, out: &mut [f32], scratch: &mut [f32]) {
    attention_with(pool, level, SumOrder::LlamaCpp, shape, q, kv, out, scratch, FLASH_MIN_POSITIONS, false)
}

/// [`attention`] in the block order: the single-pass online-softmax kernel of `online.rs` at
/// every length, the same bits for a token whatever else the call holds.
pub fn attention_blocks(pool: &ThreadPool, level: Level, shape: AttentionShape, q: &[f32], kv: KvView, out: &mut [f32], scratch: &mut [f32]) {
    attention_with(pool, level, SumOrder::Blocks, shape, q, kv, out, scratch, FLASH_MIN_POSITIONS, false)
}

/// [`attention`] for several tokens that gives each token exactly the bits it would get alone in
/// a single-token call (the single-token summation order): what verifying drafted tokens in one
/// forward needs to reproduce step-by-step decoding.
#[allow(clippy::too_many_arguments)]
pub fn attention_per_token_order(
    pool: &ThreadPool,
    level: Level,
    shape: AttentionShape,
    q: &[f32],
    kv: KvView,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    attention_with(pool, level, SumOrder::LlamaCpp, shape, q, kv, out, scratch, FLASH_MIN_POSITIONS, true)
}

/// One sequence's share of a multi-sequence attention call: its `n_tokens` new tokens are rows
/// `first_token..first_token + n_tokens` of q and out, at positions `start..start + n_tokens` of
/// the sequence whose blocks `table` lists.
#[derive(Clone, Copy, Debug)]
pub struct AttentionSegment<'a> {
    /// Row of q/out of the segment's first token.
    pub first_token: usize,
    /// New tokens of this sequence.
    pub n_tokens: usize,
    /// Position of the first of them.
    pub start: usize,
    /// The sequence's block table (see [`KvView`]).
    pub table: &'a [u32],
}

/// Heads of an attention call: H query heads of width Dh over Hkv KV heads.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// H.
    pub n_head: usize,
    /// Hkv.
    pub n_head_kv: usize,
    /// Dh.
    pub head_dim: usize,
}

/// [`attention`] over a batch that holds tokens of several sequences whose caches share the
/// blocks of `layer` (its table is ignored: each segment brings its own): q (T, H, Dh) -> out
/// (T, H, Dh), each segment's tokens attending only to their own sequence's positions. Every segment
/// gets exactly the bits it would get in a call of its own (a segment of one token sums in the
/// single-token order, longer ones in the batch order unless `per_token_order`), so a sequence's
/// result does not depend on what else is in the batch. The work of all segments is dealt to the
/// threads in one pass. In the block order (`sums`) every segment runs on the online kernel of
/// `online.rs`.
#[allow(clippy::too_many_arguments)]
pub fn attention_segments<T: KvElem>(
    pool: &ThreadPool,
    level: Level,
    sums: SumOrder,
    heads: Heads,
    layer: KvView<T>,
    segments: &[AttentionSegment],
    q: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
    per_token_order: bool,
) {
    attention_segments_with(pool, level, sums, heads, layer, segments, q, out, None, scratch, FLASH_MIN_POSITIONS, per_token_order)
}

/// [`attention_segments`] that also writes out's 8-bit blocks, out_q (T, H*Dh/32), as
/// [`quantize_rows_q8`](crate::quant::quantize_rows_q8) would: each thread quantizes the heads
/// it just computed, so the output projection's input is ready at the pool's one barrier. Blocks
/// of rows that no segment covers are left as they are.
#[allow(clippy::too_many_arguments)]
pub fn attention_segments_q8<T: KvElem>(
    pool: &ThreadPool,
    level: Level,
    sums: SumOrder,
    heads: Heads,
    layer: KvView<T>,
    segments: &[AttentionSegment],
    q: &[f32],
    out: &mut [f32],
    out_q: &mut [BlockQ8],
    scratch: &mut [f32],
    per_token_order: bool,
) {
    assert_eq!(out_q.len() * QK, out.len(), "attention: out_q must hold out's blocks");
    if !heads.head_dim.is_multiple_of(QK) {
        // A head is not a whole number of blocks: quantize after the barrier.
        attention_segments_with(pool, level, sums, heads, layer, segments, q, out, None, scratch, FLASH_MIN_POSITIONS, per_token_order);
        return crate::quant::quantize_rows_q8(pool, out, out_q, out.len() / (heads.n_head * heads.head_dim).max(1));
    }
    attention_segments_with(pool, level, sums, heads, layer, segments, q, out, Some(out_q), scratch, FLASH_MIN_POSITIONS, per_token_order)
}

/// [`attention_segments_q8`] through a sliding window: a token at position p sees positions
/// `max(0, p + 1 - window)..=p` (Gemma's local layers). Each (token, KV head) unit runs the
/// block order's online kernel over its window, cut at the same multiples of 256 positions as
/// every other path, and merges the pieces in order: a token whose window reaches back to
/// position 0 gets the bits of [`attention_segments_q8`] in the block order, and every token the
/// same bits alone or in any batch. (In llama.cpp's order too: there is no windowed kernel in
/// that order.)
#[allow(clippy::too_many_arguments)]
pub fn attention_window_q8<T: KvElem>(
    pool: &ThreadPool,
    level: Level,
    heads: Heads,
    layer: KvView<T>,
    segments: &[AttentionSegment],
    window: usize,
    q: &[f32],
    out: &mut [f32],
    out_q: &mut [BlockQ8],
    scratch: &mut [f32],
) {
    let Heads { n_head, n_head_kv, head_dim } = heads;
    let group = n_head / n_head_kv.max(1);
    assert!(n_head_kv > 0 && n_head % n_head_kv == 0 && group <= MAX_GROUP, "attention: {n_head} query heads over {n_head_kv} KV heads");
    assert!(head_dim.is_multiple_of(8), "attention: the windowed kernel needs heads of a multiple of 8 values, not {head_dim}");
    // Heads of whole blocks are quantized by the unit that computes them, others after the barrier.
    let per_unit_q = head_dim.is_multiple_of(QK);
    assert!(window > 0, "attention: a window of 0 positions");
    assert!(out.len() == q.len() && q.len().is_multiple_of(n_head * head_dim) && out_q.len() * QK == out.len(), "attention: q/out shape mismatch");
    let n_rows = q.len() / (n_head * head_dim);
    let mut max_seen = 0;
    for seg in segments {
        let seen = seg.start + seg.n_tokens;
        let kv = layer.with_table(seg.table);
        assert!(seg.first_token + seg.n_tokens <= n_rows, "attention: segment rows outside q");
        assert!(kv.holds_heads(n_head_kv, head_dim) && kv.covers(seen), "attention: the KV cache does not hold the segment");
        max_seen = max_seen.max(seen);
    }
    let per_thread = attention_scratch_per_thread(max_seen, head_dim);
    assert!(scratch.len() >= pool.n_threads() * per_thread, "attention: scratch too small");
    let scale = 1.0 / (head_dim as f32).sqrt();
    // Units: (token, KV head) of every segment in one sequence, taken from a shared counter.
    let total: usize = segments.iter().map(|s| s.n_tokens * n_head_kv).sum();
    let next = AtomicUsize::new(0);
    let (out_ptr, out_q_ptr, scratch_ptr) = (SharedMut::new(out), SharedMut::new(out_q), SharedMut::new(scratch));
    pool.run(&|i, _| {
        // SAFETY: thread i owns its part of the scratch, and the out rows of the units it takes.
        let work = unsafe { scratch_ptr.slice(i * per_thread, per_thread) };
        loop {
            let mut unit = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if unit >= total {
                break;
            }
            let Some(seg) = segments.iter().find(|s| {
                let here = unit < s.n_tokens * n_head_kv;
                if !here {
                    unit -= s.n_tokens * n_head_kv;
                }
                here
            }) else {
                break;
            };
            let (t, kv_head) = (unit / n_head_kv, unit % n_head_kv);
            let n_seen = seg.start + t + 1;
            let first_seen = n_seen.saturating_sub(window);
            let kv = &layer.with_table(seg.table);
            let kv_off = kv.head(kv_head);
            let first = ((seg.first_token + t) * n_head + kv_head * group) * head_dim;
            let q_group = &q[first..first + group * head_dim];
            let (state_acc, rest) = work.split_at_mut(group * head_dim);
            let mut state = online::Partial::empty(state_acc);
            // The window's pieces: cut at the multiples of the chunk length.
            let mut lo = first_seen;
            let mut started = false;
            while lo < n_seen {
                let hi = ((lo / online::CHUNK + 1) * online::CHUNK).min(n_seen);
                if !started {
                    online_chunk(level, group, head_dim, q_group, kv, kv_off, lo..hi, scale, &mut state);
                    started = true;
                } else {
                    let mut part = online::Partial::empty(&mut rest[..group * head_dim]);
                    online_chunk(level, group, head_dim, q_group, kv, kv_off, lo..hi, scale, &mut part);
                    let (m, l) = (part.m, part.l);
                    online_merge(level, group, head_dim, &mut state, &m[..group], &l[..group], part.acc);
                }
                lo = hi;
            }
            // SAFETY: this unit owns the out rows (and their blocks) of its group's heads.
            let o = unsafe { out_ptr.slice(first, group * head_dim) };
            online::finish(group, head_dim, &state, o);
            if per_unit_q {
                // SAFETY: as above: heads are whole blocks.
                unsafe { crate::quant::quantize_row_q8(o, out_q_ptr.slice(first / QK, group * head_dim / QK)) };
            }
        }
    });
    if !per_unit_q {
        // SAFETY: the pool is done; these are the whole buffers again.
        let (out, out_q) = unsafe { (out_ptr.slice(0, n_rows * n_head * head_dim), out_q_ptr.slice(0, n_rows * n_head * head_dim / QK)) };
        crate::quant::quantize_rows_q8(pool, out, out_q, n_rows);
    }
}

/// [`attention`] with the position count from which the online kernel is used.
#[allow(clippy::too_many_arguments)]
fn attention_with(
    pool: &ThreadPool,
    level: Level,
    sums: SumOrder,
    shape: AttentionShape,
    q: &[f32],
    kv: KvView,
    out: &mut [f32],
    scratch: &mut [f32],
    flash_min: usize,
    per_token_order: bool,
) {
    let AttentionShape { n_tokens, start, n_head, n_head_kv, head_dim } = shape;
    let segment = AttentionSegment { first_token: 0, n_tokens, start, table: kv.table };
    assert!(q.len() == n_tokens * n_head * head_dim && out.len() == q.len(), "attention: q/out shape mismatch");
    attention_segments_with(
        pool,
        level,
        sums,
        Heads { n_head, n_head_kv, head_dim },
        kv,
        &[segment],
        q,
        out,
        None,
        scratch,
        flash_min,
        per_token_order,
    )
}

/// How one segment is computed.
struct Plan {
    order: Order,
    /// Whether units run the single-pass kernel of the block order (`online.rs`), grouped.
    online: bool,
    /// Whether a unit is one chunk of the segment's one token (`online.rs`) for one KV head,
    /// merged by the thread that computes the token's last chunk (flash-decoding).
    split: bool,
    /// Consecutive tokens of the segment per unit (for one KV head): more than one for a block
    /// (`avx2::attend_block`: each tile of keys and values read and converted once for the
    /// block), else 1.
    block: usize,
    /// Whether a unit of work is a token's whole group of query heads (AVX-512 in either order,
    /// AVX2 in the tiled order), else one head.
    grouped: bool,
    /// Units of work of the segment.
    units: usize,
}

#[allow(clippy::too_many_arguments)]
fn attention_segments_with<T: KvElem>(
    pool: &ThreadPool,
    level: Level,
    sums: SumOrder,
    heads: Heads,
    layer: KvView<T>,
    segments: &[AttentionSegment],
    q: &[f32],
    out: &mut [f32],
    out_q: Option<&mut [BlockQ8]>,
    scratch: &mut [f32],
    flash_min: usize,
    per_token_order: bool,
) {
    let Heads { n_head, n_head_kv, head_dim } = heads;
    assert!(n_head_kv > 0 && n_head % n_head_kv == 0, "attention: {n_head} query heads are not a multiple of {n_head_kv} KV heads");
    assert!(out.len() == q.len() && q.len().is_multiple_of(n_head * head_dim), "attention: q/out shape mismatch");
    let n_rows = q.len() / (n_head * head_dim);
    let mut max_seen = 0;
    let mut rows_end = 0;
    for seg in segments {
        // Disjoint rows, in order: each thread writes the out rows of its units only.
        assert!(seg.first_token >= rows_end, "attention: segments overlap or are out of order");
        rows_end = seg.first_token + seg.n_tokens;
        let seen = seg.start + seg.n_tokens; // S: positions the segment's last token sees
        assert!(seg.first_token + seg.n_tokens <= n_rows, "attention: segment rows outside q");
        let kv = layer.with_table(seg.table);
        assert!(kv.holds_heads(n_head_kv, head_dim), "attention: the KV cache layout does not hold {n_head_kv} heads of {head_dim}");
        assert!(kv.covers(seen), "attention: the KV cache does not hold {seen} positions");
        max_seen = max_seen.max(seen);
    }
    let per_thread = attention_scratch_per_thread(max_seen, head_dim);
    assert!(scratch.len() >= pool.n_threads() * per_thread, "attention: scratch too small");
    let group = n_head / n_head_kv;
    let scale = 1.0 / (head_dim as f32).sqrt();
    // The single-token order groups heads only when the call has enough (token, KV head) units
    // to keep every thread busy: one decode step alone has as few as Hkv units.
    let total_tokens: usize = segments.iter().map(|s| s.n_tokens).sum();
    let vector_grouped = total_tokens * n_head_kv >= 4 * pool.n_threads() && head_dim.is_multiple_of(LANES * BANKS);
    // The block order runs every segment, of any length, on the online kernel with grouped heads:
    // a token gets the same bits whether it is decoded alone, verified in a batch of drafts or
    // processed in a prompt. (Measured with `attention_bench 1 1 512 1 prefill`, Zen 3 AVX2: a
    // prompt of 512 tokens 11.9-18.5 us per token against 19.5-29.3 in llama.cpp's order; one
    // token at 6000 positions 0.47 ms against 7.9-11.7.) Heads whose width is not a multiple of
    // 8, or groups of more than 8, fall back to the kernels of llama.cpp's order.
    // A Q8_0 cache has the online kernel only, whatever the order of the products.
    let f16_cache = T::as_f16(&layer).is_some();
    let online = (sums == SumOrder::Blocks || !f16_cache) && head_dim.is_multiple_of(8) && group <= MAX_GROUP;
    assert!(online || f16_cache, "attention: a Q8_0 cache needs heads of a multiple of 32 values in groups of at most {MAX_GROUP}");
    // A call with too few (token, KV head) units to keep every thread busy (a decode step of a
    // few sequences) splits each one-token segment into its chunks, spread over the threads; the
    // chunks are fixed by position, so the bits are those of one thread doing them in turn.
    let split_calls = online && pool.n_threads() > 1 && total_tokens * n_head_kv < 4 * pool.n_threads();
    // A prompt's tokens go in blocks of consecutive tokens (SIMD levels only: the scalar
    // reference takes them one by one, and gives the same bits), as many as leave about four
    // units per thread, at most `avx2::MAX_BLOCK`.
    let blocks = cfg!(target_arch = "x86_64") && online && level != Level::Scalar;
    let plan = |seg: &AttentionSegment| {
        if online {
            let chunks = online::n_chunks(seg.start + seg.n_tokens);
            let split = split_calls && seg.n_tokens == 1 && chunks > 1;
            let block = if blocks && seg.n_tokens > 1 { (seg.n_tokens * n_head_kv).div_ceil(4 * pool.n_threads()).clamp(2, MAX_BLOCK) } else { 1 };
            let units = if split { n_head_kv * chunks } else { seg.n_tokens.div_ceil(block) * n_head_kv };
            return Plan { order: Order::Tiled, online, split, block, grouped: true, units };
        }
        let order = if seg.n_tokens == 1 || per_token_order { Order::Vector } else { Order::Tiled };
        // On AVX-512 one unit of work can be a token's whole group of query heads.
        let grouped = cfg!(target_arch = "x86_64")
            && (level == Level::Avx512Vnni && (order == Order::Tiled || vector_grouped)
                || matches!(level, Level::Avx2 | Level::AvxVnni) && order == Order::Tiled)
            && head_dim.is_multiple_of(LANES)
            && group <= MAX_GROUP
            && seg.start + seg.n_tokens < flash_min;
        Plan { order, online, split: false, block: 1, grouped, units: seg.n_tokens * if grouped { n_head_kv } else { n_head } }
    };
    // Split segments' chunk partials, a slot of (acc (G, Dh), m (G), l (G)) per (segment, KV head,
    // chunk), and per (segment, KV head) the chunks still to come; in buffers kept between calls,
    // so that a decode step allocates nothing once they have grown.
    let slot = group * head_dim + 2 * group;
    let (mut partials, mut remaining) = SPLIT_BUFFERS.take();
    partials.clear();
    remaining.clear();
    for seg in segments.iter().filter(|seg| plan(seg).split) {
        let chunks = online::n_chunks(seg.start + 1);
        partials.resize(partials.len() + n_head_kv * chunks * slot, 0.0);
        remaining.extend((0..n_head_kv).map(|_| AtomicUsize::new(chunks)));
    }
    // Slot of (segment i, KV head, chunk), and counter of (segment i, KV head): split segments in
    // order, each KV head's chunks together.
    let split_before = |i: usize| -> (usize, usize) {
        let before = segments[..i].iter().filter(|s| plan(s).split);
        before.fold((0, 0), |(slots, counters), s| (slots + n_head_kv * online::n_chunks(s.start + 1), counters + n_head_kv))
    };
    let slot_of = |i: usize, kv_head: usize, chunk: usize| (split_before(i).0 + kv_head * online::n_chunks(segments[i].start + 1) + chunk) * slot;
    let partials_ptr = SharedMut::new(&mut partials);
    let out_ptr = SharedMut::new(out);
    let scratch_ptr = SharedMut::new(scratch);
    // Quantizes out[first..first + len] (whole blocks) into out_q, when asked.
    let out_q = out_q.map(SharedMut::new);
    let quantize = |first: usize, len: usize| {
        if let Some(out_q) = out_q {
            // SAFETY: the unit that owns these out rows owns their blocks (heads are whole blocks).
            unsafe { crate::quant::quantize_row_q8(out_ptr.slice(first, len), out_q.slice(first / QK, len / QK)) };
        }
    };
    // Units of all segments are numbered in one sequence and taken one at a time from a shared
    // counter, so sequences of different lengths and a thread that falls behind even out; last
    // first: within a segment later tokens cost more (the causal mask), so its expensive units go
    // first and the cheap ones fill the end.
    let total: usize = segments.iter().map(|seg| plan(seg).units).sum();
    let next = AtomicUsize::new(0);
    pool.run(&|i, _| {
        // SAFETY: thread i owns scratch[i * per_thread..][..per_thread] and the out rows of its units.
        let work = unsafe { scratch_ptr.slice(i * per_thread, per_thread) };
        // Unit `taken` (counted from the end): its segment, its number there, and the KV head
        // and positions it reads (the unit's token sees positions 0..n_seen).
        let locate = |taken: usize| {
            let mut unit = total - 1 - taken;
            for (i, seg) in segments.iter().enumerate() {
                let p = plan(seg);
                if unit < p.units {
                    let per_token = if p.grouped { n_head_kv } else { n_head };
                    // A split segment's units are (chunk, KV head) of its one token, others'
                    // (block of tokens, KV head); t is the unit's first token.
                    let t = if p.split { 0 } else { p.block * (unit / per_token) };
                    let kv_head = if p.grouped { unit % n_head_kv } else { kv_head_of(unit % n_head, n_head, n_head_kv) };
                    return Some((i, seg, unit, kv_head, seg.start + t + 1));
                }
                unit -= p.units;
            }
            None
        };
        // Each thread claims its next unit before computing the current one and asks for that
        // unit's keys and values meanwhile: a batch's cache does not stay in the caches between
        // layers, and without this every unit would start by waiting on memory (measured with
        // `attention_bench 1 8 128 30`, position-major blocks: 250-275 -> 175-190 us per layer;
        // with the model's head-major blocks 126-130, against 84 with everything in cache).
        let claim = || {
            let c = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if c < total {
                locate(c)
            } else {
                None
            }
        };
        let mut claimed = claim();
        while let Some((seg_index, seg, unit, kv_head, n_seen)) = claimed {
            claimed = claim();
            let Plan { order, online, split, block, grouped, .. } = plan(seg);
            if let (Some((_, next_seg, next_unit, next_head, next_seen)), true) = (claimed, prefetch_next_unit()) {
                // Decode units only: a segment of several tokens (a prompt) reads its keys and
                // values once per token, from the caches after the first. Heads of one group
                // read the same keys and values: ask once.
                let next_kv = layer.with_table(next_seg.table);
                if plan(next_seg).split {
                    let positions = online::chunk_positions(next_unit / n_head_kv, next_seen);
                    prefetch_kv(&next_kv, layer.head(next_head), head_dim, positions);
                } else if next_seg.n_tokens == 1 && !(std::ptr::eq(next_seg, seg) && next_head == kv_head && next_seen == n_seen) {
                    prefetch_kv(&next_kv, layer.head(next_head), head_dim, 0..next_seen);
                }
            }
            let kv = &layer.with_table(seg.table);
            let row0 = seg.first_token * n_head; // first (token, head) pair of the segment
            if online {
                let t = if split { 0 } else { block * (unit / n_head_kv) };
                let first = (row0 + t * n_head + kv_head * group) * head_dim; // q/out rows of the group's heads
                let q_group = &q[first..first + group * head_dim];
                let kv_off = kv.head(kv_head);
                let chunk_fn = |q: &[f32], positions: std::ops::Range<usize>, state: &mut online::Partial| {
                    online_chunk(level, group, head_dim, q, kv, kv_off, positions, scale, state)
                };
                let merge_fn =
                    |state: &mut online::Partial, m: &[f32], l: &[f32], acc: &[f32]| online_merge(level, group, head_dim, state, m, l, acc);
                #[cfg(target_arch = "x86_64")]
                if block > 1 {
                    // Tokens t..t + n of the segment; q and out rows of one token to the next: H Dh.
                    let (n, gd, stride) = (block.min(seg.n_tokens - t), group * head_dim, n_head * head_dim);
                    // SAFETY: the unit owns its tokens' rows of the group.
                    debug_assert!(work.len() >= avx2::block_work(n, group, head_dim));
                    let mut outs: [Option<&mut [f32]>; MAX_BLOCK] =
                        std::array::from_fn(|i| (i < n).then(|| unsafe { out_ptr.slice(first + i * stride, gd) }));
                    let q_block = &q[first..first + (n - 1) * stride + gd];
                    // SAFETY: blocks are planned at the SIMD levels only, which imply AVX2, FMA and F16C.
                    unsafe { avx2::attend_block(group, head_dim, q_block, stride, n_seen, kv, kv_off, scale, work, &mut outs[..n]) };
                    for i in 0..n {
                        quantize(first + i * stride, gd);
                    }
                    continue;
                }
                if !split {
                    let o = unsafe { out_ptr.slice(first, group * head_dim) };
                    online::attend_group_with(&chunk_fn, &merge_fn, group, head_dim, q_group, n_seen, work, o);
                    quantize(first, group * head_dim);
                    continue;
                }
                // One chunk into its slot; the thread that completes the token's last chunk
                // merges them all in order.
                let chunk = unit / n_head_kv;
                let chunks = online::n_chunks(n_seen);
                // SAFETY: each (segment, KV head, chunk) slot is written by the one unit that owns it,
                // and read only after every unit of the token is done (the counter below).
                let mine = unsafe { partials_ptr.slice(slot_of(seg_index, kv_head, chunk), slot) };
                let (acc, ml) = mine.split_at_mut(group * head_dim);
                let mut part = online::Partial::empty(acc);
                chunk_fn(q_group, online::chunk_positions(chunk, n_seen), &mut part);
                ml[..group].copy_from_slice(&part.m[..group]);
                ml[group..2 * group].copy_from_slice(&part.l[..group]);
                let counter = &remaining[split_before(seg_index).1 + kv_head];
                if counter.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) != 1 {
                    continue;
                }
                // SAFETY: every chunk of this (segment, KV head) is written (the counter reached 0
                // with acquire ordering) and no other thread touches them any more.
                let all = unsafe { partials_ptr.slice(slot_of(seg_index, kv_head, 0), chunks * slot) };
                let (state_acc, _) = work.split_at_mut(group * head_dim);
                let mut state = online::Partial::empty(state_acc);
                state.acc.copy_from_slice(&all[..group * head_dim]);
                state.m[..group].copy_from_slice(&all[group * head_dim..][..group]);
                state.l[..group].copy_from_slice(&all[group * head_dim + group..][..group]);
                for c in 1..chunks {
                    let s = &all[c * slot..(c + 1) * slot];
                    let (acc, ml) = s.split_at(group * head_dim);
                    merge_fn(&mut state, &ml[..group], &ml[group..], acc);
                }
                let o = unsafe { out_ptr.slice(first, group * head_dim) };
                online::finish(group, head_dim, &state, o);
                quantize(first, group * head_dim);
                continue;
            }
            // The kernels of llama.cpp's order, over an f16 cache only (see `online` above).
            let Some(kv) = T::as_f16(kv) else { unreachable!("attention: a Q8_0 cache is planned on the online kernel") };
            let kv = &kv;
            if grouped {
                #[cfg(target_arch = "x86_64")]
                {
                    let t = unit / n_head_kv;
                    let first = (row0 + t * n_head + kv_head * group) * head_dim; // q/out rows of the group's heads
                    let o = unsafe { out_ptr.slice(first, group * head_dim) };
                    let q_group = &q[first..first + group * head_dim];
                    // SAFETY: Level::Avx512Vnni is only chosen when the CPU has AVX-512 F/BW/VL/DQ.
                    // Level::Avx2 and Level::AvxVnni (tiled order only) when it has AVX2, FMA and F16C.
                    match (level, order) {
                        (Level::Avx2 | Level::AvxVnni, _) => unsafe {
                            avx2::attend_group(group, head_dim, q_group, kv, kv.head(kv_head), n_seen, scale, work, o)
                        },
                        (_, Order::Tiled) => unsafe { avx512::attend_group(group, head_dim, q_group, kv, kv.head(kv_head), n_seen, scale, work, o) },
                        (_, Order::Vector) => unsafe {
                            avx512::attend_group_vector(group, head_dim, q_group, kv, kv.head(kv_head), n_seen, scale, work, o)
                        },
                    }
                    quantize(first, group * head_dim);
                }
                continue;
            }
            let kv_off = kv.head(kv_head);
            let pair = row0 + unit;
            let q_row = &q[pair * head_dim..(pair + 1) * head_dim];
            let o = unsafe { out_ptr.slice(pair * head_dim, head_dim) };
            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: these levels imply AVX2, FMA and F16C.
                Level::Avx2 | Level::AvxVnni | Level::Avx512Vnni if n_seen >= flash_min => unsafe {
                    attend_online_avx2(q_row, kv, kv_off, n_seen, scale, work, o)
                },
                _ if n_seen >= flash_min => attend_online(q_row, kv, kv_off, n_seen, scale, work, o),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: Level::Avx512Vnni is only chosen when the CPU has AVX-512 F/BW/VL/DQ.
                Level::Avx512Vnni if order == Order::Vector && head_dim.is_multiple_of(LANES * BANKS) => unsafe {
                    avx512::attend_group_vector(1, head_dim, q_row, kv, kv_off, n_seen, scale, work, o)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: these levels are only chosen when the CPU has AVX2, FMA and F16C.
                Level::Avx2 | Level::AvxVnni | Level::Avx512Vnni => unsafe {
                    avx2::attend_one_avx2(order, q_row, kv, kv_off, n_seen, scale, work, o)
                },
                _ => attend_one(order, q_row, kv, kv_off, n_seen, scale, work, o),
            }
            quantize(pair * head_dim, head_dim);
        }
    });
    SPLIT_BUFFERS.set((partials, remaining));
}

thread_local! {
    /// The split decode steps' chunk partials and counters (see `attention_segments_with`), kept
    /// by the calling thread from one call to the next.
    static SPLIT_BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<AtomicUsize>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// One chunk of the block order's kernel (`online.rs`) at `level`, into an empty `state`.
#[allow(clippy::too_many_arguments)]
fn online_chunk<T: KvElem>(
    level: Level,
    group: usize,
    head_dim: usize,
    q: &[f32],
    kv: &KvView<T>,
    kv_off: usize,
    positions: std::ops::Range<usize>,
    scale: f32,
    state: &mut online::Partial,
) {
    match level {
        Level::Scalar => online::chunk(group, head_dim, q, kv, kv_off, positions, scale, state),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both other levels imply AVX2, FMA and F16C.
        _ => unsafe { avx2::online_chunk(group, head_dim, q, kv, kv_off, positions, scale, state) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => online::chunk(group, head_dim, q, kv, kv_off, positions, scale, state),
    }
}

/// [`online::merge_chunk`] at `level`.
fn online_merge(level: Level, group: usize, head_dim: usize, state: &mut online::Partial, m: &[f32], l: &[f32], acc: &[f32]) {
    match level {
        Level::Scalar => online::merge_chunk(group, head_dim, state, m, l, acc),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both other levels imply AVX2 and FMA.
        _ => unsafe { avx2::merge_chunk(group, head_dim, state, m, l, acc) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => online::merge_chunk(group, head_dim, state, m, l, acc),
    }
}

/// Whether a thread prefetches the keys and values of its next decode unit ([`prefetch_kv`]): on
/// AMD CPUs, where it made batched decoding of 8 sequences 12% faster (Zen 3, 1 and 2 threads);
/// not on others: on an Intel Xeon (AVX-512, 2 cores) it made one sequence at depth 4000 3-8%
/// slower, 16 serving clients 2-3% slower and 8 sequences no faster (its own prefetchers already
/// stream each head's run of the cache).
fn prefetch_next_unit() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AMD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AMD.get_or_init(|| {
            let id = std::arch::x86_64::__cpuid(0); // leaf 0: the vendor string
            [id.ebx, id.edx, id.ecx] == [u32::from_le_bytes(*b"Auth"), u32::from_le_bytes(*b"enti"), u32::from_le_bytes(*b"cAMD")]
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Asks for the keys and values of `positions` of the KV head at `kv_off` to be brought into the
/// core's L2 cache (at most the first [`PREFETCH_POSITIONS`]; streaming takes over after those).
fn prefetch_kv<T: KvElem>(kv: &KvView<T>, kv_off: usize, head_dim: usize, positions: std::ops::Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    for s in positions.start..positions.end.min(positions.start + PREFETCH_POSITIONS) {
        let r = kv.row(s) + kv_off;
        let (k, v) = (T::unit_ptr(kv.keys.as_ptr(), r), T::unit_ptr(kv.values.as_ptr(), r));
        for line in (0..T::bytes(head_dim)).step_by(64) {
            // SAFETY: prefetching reads nothing and cannot fault.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
                _mm_prefetch::<_MM_HINT_T1>(k.wrapping_add(line).cast::<i8>());
                _mm_prefetch::<_MM_HINT_T1>(v.wrapping_add(line).cast::<i8>());
            }
        }
    }
}

/// Positions of a unit [`prefetch_kv`] asks for: 256 positions of a 64-wide head are 64 KB.
const PREFETCH_POSITIONS: usize = 256;

#[cfg(test)]
mod tests;
