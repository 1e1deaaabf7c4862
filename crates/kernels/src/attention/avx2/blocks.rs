//! The block order's AVX2 kernels (`online.rs`'s scalar reference, tile by tile; also used at the
//! AVX-VNNI and AVX-512 levels): one chunk of a token's positions (`online_chunk`), the merge of
//! chunks, and blocks of a prompt's tokens that read each tile of keys and values once
//! (`attend_block`). The same operations in the same order as the reference (tested bit for bit).

use super::*;

/// The [`tree8`](crate::attention::online::tree8) sums of 8 registers at once: lane p of the result is the
/// tree of `a[p]`'s lanes, each addition one of the tree's, between the same operands.
#[inline(always)]
unsafe fn tree8_x8(a: &[__m256; 8]) -> __m256 {
    // (No closures here: intrinsics in a closure are not inlined into the AVX2 function that
    // holds it, and become calls.)
    // h[k] = [a_k[j] + a_k[j + 4] | a_(k+4)[j] + a_(k+4)[j + 4]], j = 0..4.
    let mut h = [_mm256_setzero_ps(); 4];
    for k in 0..4 {
        h[k] = _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(a[k], a[k + 4]), _mm256_permute2f128_ps::<0x31>(a[k], a[k + 4]));
    }
    // Per 128-bit lane [u0(e), u1(e), u0(f), u1(f)], u0 = h0 + h2, u1 = h1 + h3.
    let (g1, g2) = (u_pairs(h[0], h[1]), u_pairs(h[2], h[3]));
    _mm256_add_ps(_mm256_shuffle_ps::<0b10_00_10_00>(g1, g2), _mm256_shuffle_ps::<0b11_01_11_01>(g1, g2))
}

/// Per 128-bit lane: [e0 + e2, e1 + e3, f0 + f2, f1 + f3].
#[inline(always)]
unsafe fn u_pairs(e: __m256, f: __m256) -> __m256 {
    let (e, f) = (_mm256_castps_pd(e), _mm256_castps_pd(f));
    _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(e, f)), _mm256_castpd_ps(_mm256_unpackhi_pd(e, f)))
}

/// Calls `$f::<G, PP, W>(args)` for the group size G (1 to 8): PP positions per step of the score
/// pass (G * PP accumulators, PP keys and a query row within 15 registers) and W value registers
/// per head in the value pass (G * W accumulators, W values and a probability likewise). Each
/// accumulator is a chain of FMAs (4 cycles each, 2 per cycle): 8 or more chains keep the FMA
/// units busy, hence W = 3 for G = 3 (9 chains; 6 with W = 2 were 4-6% slower at 7680 positions).
macro_rules! by_chunk_group {
    ($group:expr, $f:ident, $($arg:expr),*) => {
        match $group {
            1 => $f::<1, 4, 4, _>($($arg),*),
            2 => $f::<2, 4, 4, _>($($arg),*),
            3 => $f::<3, 3, 3, _>($($arg),*),
            4 => $f::<4, 2, 2, _>($($arg),*),
            5 => $f::<5, 2, 2, _>($($arg),*),
            6 => $f::<6, 2, 2, _>($($arg),*),
            7 => $f::<7, 1, 1, _>($($arg),*),
            _ => $f::<8, 1, 1, _>($($arg),*),
        }
    };
}

/// Where a tile's key (or value) rows are read from: 8 dimensions of the tile's position p.
trait TileRows {
    unsafe fn load8(&self, p: usize, d: usize) -> __m256;
}

/// Rows of the cache (f16 or Q8_0): `base` plus the offsets (in values) of the tile's positions.
struct CacheRows<'a, T: KvElem> {
    base: *const T,
    rows: &'a [usize; TILE],
}

impl<T: KvElem> TileRows for CacheRows<'_, T> {
    #[inline(always)]
    unsafe fn load8(&self, p: usize, d: usize) -> __m256 {
        T::load8(self.base, *self.rows.get_unchecked(p) + d)
    }
}

/// A tile already converted to f32: (TILE, Dh) from `base`.
struct F32Tile {
    base: *const f32,
    head_dim: usize,
}

impl TileRows for F32Tile {
    #[inline(always)]
    unsafe fn load8(&self, p: usize, d: usize) -> __m256 {
        _mm256_loadu_ps(self.base.add(p * self.head_dim + d))
    }
}

/// [`online::chunk`](crate::attention::online::chunk) with AVX2: the same operations in the same order
/// (tested bit for bit). Per tile, the scores of the group's heads with each key row converted
/// from f16 once for the group and PP positions per step, the 32 positions' lane trees 8 at a
/// time; then the value pass with each value row converted once for the group.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(in crate::attention) unsafe fn online_chunk<T: KvElem>(
    group: usize,
    head_dim: usize,
    q: &[f32],
    kv: &KvView<T>,
    kv_off: usize,
    positions: Range<usize>,
    scale: f32,
    state: &mut Partial,
) {
    debug_assert!(group <= MAX_GROUP && head_dim.is_multiple_of(8) && !positions.is_empty());
    debug_assert!(q.len() >= group * head_dim && state.acc.len() >= group * head_dim);
    by_chunk_group!(group, chunk_of, head_dim, q, kv, kv_off, positions, scale, state)
}

/// [`online_chunk`] for G heads. (Loops over indices: the arrays of registers stay in registers
/// only with constant indices after unrolling.)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn chunk_of<const G: usize, const PP: usize, const W: usize, T: KvElem>(
    head_dim: usize,
    q: &[f32],
    kv: &KvView<T>,
    kv_off: usize,
    positions: Range<usize>,
    scale: f32,
    state: &mut Partial,
) {
    let (kp, vp) = (kv.keys.as_ptr(), kv.values.as_ptr());
    // Offsets of the tile's rows of the KV head, and of the next tile's.
    let (mut rows, mut next_rows) = ([0usize; TILE], [0usize; TILE]);
    tile_rows(kv, kv_off, positions.start, (positions.end - positions.start).min(TILE), &mut rows);
    let lines = T::bytes(head_dim).div_ceil(64); // cache lines of one head's row of keys (or values)
    let mut bufs = TileBuffers::<G>::new();
    let mut p0 = positions.start;
    while p0 < positions.end {
        let np = (positions.end - p0).min(TILE);
        // The next tile's keys and values are another block of the pool, which the hardware
        // prefetchers do not guess: asked for a position at a time while this tile's scores are
        // computed (all at once, the requests stall the loads of the scores).
        let next = p0 + TILE;
        let n_next = if next < positions.end { (positions.end - next).min(TILE) } else { 0 };
        tile_rows(kv, kv_off, next, n_next, &mut next_rows);
        let prefetch = |p: Range<usize>| {
            for r in &next_rows[p.start.min(n_next)..p.end.min(n_next)] {
                prefetch_row(T::unit_ptr(kp, *r), T::unit_ptr(vp, *r), lines);
            }
        };
        let (keys, values) = (CacheRows { base: kp, rows: &rows }, CacheRows { base: vp, rows: &rows });
        let (m, l, ap) = (&mut state.m, &mut state.l, state.acc.as_mut_ptr());
        tile_step::<G, PP, W>(head_dim, q.as_ptr(), &keys, &values, np, scale, m, l, ap, &mut bufs, prefetch);
        p0 += TILE;
        std::mem::swap(&mut rows, &mut next_rows);
    }
}

/// A tile step's lane sums and probabilities: lanes[g][p] the 8 lane sums of head g and the
/// tile's position p, e[g][p] its probability. Kept from one tile to the next (their 3 KB are
/// not cleared for each): lanes and probabilities past a partial tile hold stale values, which
/// the scores' mask and the value pass skip.
struct TileBuffers<const G: usize> {
    lanes: [[__m256; TILE]; G],
    e: [[f32; TILE]; G],
}

impl<const G: usize> TileBuffers<G> {
    #[inline(always)]
    unsafe fn new() -> Self {
        TileBuffers { lanes: [[_mm256_setzero_ps(); TILE]; G], e: [[0.0; TILE]; G] }
    }
}

/// One tile of [`online::chunk`](crate::attention::online::chunk) for the G heads of one token (q (G, Dh)
/// from `qp`, state m, l (G) and acc (G, Dh) from `ap`), over the tile's first `np` positions:
/// scores PP positions per step (`between(p..p + PP)` after each step: the caller's prefetches),
/// the 32 positions' lane trees 8 at a time, the softmax update, then the value pass.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tile_step<const G: usize, const PP: usize, const W: usize>(
    head_dim: usize,
    qp: *const f32,
    keys: &impl TileRows,
    values: &impl TileRows,
    np: usize,
    scale: f32,
    m: &mut [f32; MAX_GROUP],
    l: &mut [f32; MAX_GROUP],
    ap: *mut f32,
    bufs: &mut TileBuffers<G>,
    between: impl Fn(Range<usize>),
) {
    let TileBuffers { lanes, e } = bufs;
    let mut p = 0;
    while p + PP <= np {
        score_lanes::<G, PP>(head_dim, qp, keys, p, lanes);
        between(p..p + PP);
        p += PP;
    }
    while p < np {
        score_lanes::<G, 1>(head_dim, qp, keys, p, lanes);
        p += 1;
    }
    between(p..TILE);
    // Scores of 8 positions per register, -inf past the tile's end (the row's end).
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let full = np.div_ceil(8);
    let mut scores = [[_mm256_set1_ps(f32::NEG_INFINITY); 4]; G];
    let mut new_m = [0.0f32; G];
    let mut diff = [0.0f32; 8];
    for g in 0..G {
        let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
        for j in 0..full {
            let t = _mm256_mul_ps(tree8_x8(&*(lanes[g].as_ptr().add(8 * j) as *const [__m256; 8])), _mm256_set1_ps(scale));
            // A whole tile's registers need no mask.
            scores[g][j] = if np == TILE {
                t
            } else {
                let absent = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                    _mm256_add_epi32(lane, _mm256_set1_epi32(8 * j as i32)),
                    _mm256_set1_epi32(np as i32 - 1),
                ));
                _mm256_blendv_ps(t, _mm256_set1_ps(f32::NEG_INFINITY), absent)
            };
            mx = _mm256_max_ps(mx, scores[g][j]);
        }
        new_m[g] = m[g].max(hmax8(mx));
        diff[g] = m[g] - new_m[g];
    }
    // The G corrections exp(m - m') in one exp8 (the same bits as exp_poly lane by lane).
    let mut c = [0.0f32; 8];
    _mm256_storeu_ps(c.as_mut_ptr(), exp8(_mm256_loadu_ps(diff.as_ptr())));
    for g in 0..G {
        let mut ex = [_mm256_setzero_ps(); 4]; // exp(-inf) = 0 for registers past the end
        for j in 0..full {
            ex[j] = exp8(_mm256_sub_ps(scores[g][j], _mm256_set1_ps(new_m[g])));
            _mm256_storeu_ps(e[g].as_mut_ptr().add(8 * j), ex[j]);
        }
        let sum = reduce8(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(ex[0], ex[1]), ex[2]), ex[3]));
        l[g] = l[g] * c[g] + sum;
        m[g] = new_m[g];
    }
    // acc = acc * c, then fma(e[p], v[p], acc) position by position, 8W dimensions at a time.
    let mut d0 = 0;
    while d0 < head_dim {
        if head_dim - d0 >= 8 * W {
            value_pass::<G, W>(d0, head_dim, values, np, &c, e, ap);
            d0 += 8 * W;
        } else if W > 2 && head_dim - d0 >= 16 {
            value_pass::<G, 2>(d0, head_dim, values, np, &c, e, ap);
            d0 += 16;
        } else {
            value_pass::<G, 1>(d0, head_dim, values, np, &c, e, ap);
            d0 += 8;
        }
    }
}

/// rows[..n]: the offsets of positions `first..first + n` (at most a tile) of the KV head at
/// `kv_off`, by one table lookup when they lie in one block of the pool, as a tile does in the
/// model's blocks of 32.
#[inline(always)]
fn tile_rows<T: KvElem>(kv: &KvView<T>, kv_off: usize, first: usize, n: usize, rows: &mut [usize; TILE]) {
    if n == 0 {
        return;
    }
    let base = kv.row(first) + kv_off;
    if first / kv.block_size == (first + n - 1) / kv.block_size {
        for (p, r) in rows.iter_mut().enumerate().take(n) {
            *r = base + p * kv.pos_stride;
        }
    } else {
        for (p, r) in rows.iter_mut().enumerate().take(n) {
            *r = kv.row(first + p) + kv_off;
        }
    }
}

/// Asks for one row of keys and of values (`lines` cache lines each) to be brought into L1.
#[inline(always)]
unsafe fn prefetch_row(k: *const u8, v: *const u8, lines: usize) {
    for line in 0..lines {
        _mm_prefetch::<_MM_HINT_T0>((k as *const i8).add(64 * line));
        _mm_prefetch::<_MM_HINT_T0>((v as *const i8).add(64 * line));
    }
}

/// lanes[g][p..p + PP]: the 8 lane sums of q[g] . k[p + j] (one fma chain per lane over the
/// dimensions, in order), each key chunk loaded once for the G heads.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn score_lanes<const G: usize, const PP: usize>(
    head_dim: usize,
    qp: *const f32,
    keys: &impl TileRows,
    p: usize,
    lanes: &mut [[__m256; TILE]; G],
) {
    let mut s = [[_mm256_setzero_ps(); PP]; G];
    let mut c = 0;
    while c < head_dim {
        let mut k = [_mm256_setzero_ps(); PP];
        for j in 0..PP {
            k[j] = keys.load8(p + j, c);
        }
        for g in 0..G {
            let qv = _mm256_loadu_ps(qp.add(g * head_dim + c));
            for j in 0..PP {
                s[g][j] = _mm256_fmadd_ps(qv, k[j], s[g][j]);
            }
        }
        c += 8;
    }
    for g in 0..G {
        for j in 0..PP {
            lanes[g][p + j] = s[g][j];
        }
    }
}

/// One tile's value update of acc (G, Dh) at dimensions d0..d0 + 8W: acc * c, then
/// fma(e[p], v[p], acc) for the tile's np positions in order.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn value_pass<const G: usize, const W: usize>(
    d0: usize,
    head_dim: usize,
    values: &impl TileRows,
    np: usize,
    c: &[f32; 8],
    e: &[[f32; TILE]; G],
    ap: *mut f32,
) {
    let mut r = [[_mm256_setzero_ps(); W]; G];
    for g in 0..G {
        for j in 0..W {
            r[g][j] = _mm256_mul_ps(_mm256_loadu_ps(ap.add(g * head_dim + d0 + 8 * j)), _mm256_set1_ps(c[g]));
        }
    }
    for p in 0..np {
        let mut v = [_mm256_setzero_ps(); W];
        for j in 0..W {
            v[j] = values.load8(p, d0 + 8 * j);
        }
        for g in 0..G {
            let b = _mm256_set1_ps(e[g][p]);
            for j in 0..W {
                r[g][j] = _mm256_fmadd_ps(b, v[j], r[g][j]);
            }
        }
    }
    for g in 0..G {
        for j in 0..W {
            _mm256_storeu_ps(ap.add(g * head_dim + d0 + 8 * j), r[g][j]);
        }
    }
}

/// [`online::merge_chunk`](crate::attention::online::merge_chunk) compiled with FMA (its `mul_add`s are
/// otherwise library calls): the same bits.
#[target_feature(enable = "avx2,fma")]
pub(in crate::attention) unsafe fn merge_chunk(group: usize, head_dim: usize, state: &mut Partial, m: &[f32], l: &[f32], acc: &[f32]) {
    crate::attention::online::merge_chunk(group, head_dim, state, m, l, acc)
}

/// Floats of `work` that [`attend_block`] needs for `n_tokens` tokens of G heads of Dh: a tile of
/// keys and one of values in f32 (TILE, Dh), and per token a state and a chunk's partial (G, Dh).
pub(in crate::attention) fn block_work(n_tokens: usize, group: usize, head_dim: usize) -> usize {
    2 * TILE * head_dim + 2 * n_tokens * group * head_dim
}

/// Consecutive tokens of a prompt (at most [`MAX_BLOCK`]) for one KV head at `kv_off`: token t
/// has q (G, Dh) at `q[t * q_stride..]`, sees positions `0..first_seen + t` and gets
/// out[t] (G, Dh). Each tile of keys and values is read and converted to f32 once for the whole
/// block, and every token that sees the tile takes its step on it: per token the tiles, chunks
/// and merges of [`attend_group_with`](crate::attention::online::attend_group_with) with
/// [`online_chunk`] and [`merge_chunk`], the same operations in the same order, so a token gets
/// the bits it gets alone whatever block it is in (tested). `work` holds
/// [`block_work`]`(n_tokens, G, Dh)` floats.
///
/// (Measured on SmolLM2-135M's shape, Zen 3, one thread: a prompt's cost per (token, position)
/// is the same at depth 0, all in L2, as at depth 8000, about 45 ns, some 65-70% of the FMA
/// units' peak for the 16 FMAs of 8 lanes that each (row, position) needs; so it is not the
/// streaming of the cache but the work per row that counts. The block saves the f16
/// conversions, 8/3 per row and position for the pairs of tokens that came before it, and some
/// loads: `attention_bench 1 1 512 1 prefill 2000` 51.3 ms with pairs, 47.6 in blocks.)
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(in crate::attention) unsafe fn attend_block<T: KvElem>(
    group: usize,
    head_dim: usize,
    q: &[f32],
    q_stride: usize,
    first_seen: usize,
    kv: &KvView<T>,
    kv_off: usize,
    scale: f32,
    work: &mut [f32],
    out: &mut [Option<&mut [f32]>],
) {
    let n_tokens = out.len();
    debug_assert!(group <= MAX_GROUP && head_dim.is_multiple_of(8) && first_seen > 0 && (1..=MAX_BLOCK).contains(&n_tokens));
    debug_assert!(q.len() >= (n_tokens - 1) * q_stride + group * head_dim && work.len() >= block_work(n_tokens, group, head_dim));
    // SmolLM2's and Llama's heads of 64 get a copy of their own, where the loops over the
    // dimensions unroll with constant offsets.
    if head_dim == 64 {
        by_chunk_group!(group, block_of_64, head_dim, q, q_stride, first_seen, kv, kv_off, scale, work, out)
    } else {
        by_chunk_group!(group, block_of, head_dim, q, q_stride, first_seen, kv, kv_off, scale, work, out)
    }
}

/// [`block_of`] for heads of 64.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_of_64<const G: usize, const PP: usize, const W: usize, T: KvElem>(
    _head_dim: usize,
    q: &[f32],
    q_stride: usize,
    first_seen: usize,
    kv: &KvView<T>,
    kv_off: usize,
    scale: f32,
    work: &mut [f32],
    out: &mut [Option<&mut [f32]>],
) {
    block_of::<G, PP, W, T>(64, q, q_stride, first_seen, kv, kv_off, scale, work, out)
}

/// [`attend_block`] for G heads.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_of<const G: usize, const PP: usize, const W: usize, T: KvElem>(
    head_dim: usize,
    q: &[f32],
    q_stride: usize,
    first_seen: usize,
    kv: &KvView<T>,
    kv_off: usize,
    scale: f32,
    work: &mut [f32],
    out: &mut [Option<&mut [f32]>],
) {
    use crate::attention::online::{chunk_positions, finish, n_chunks, CHUNK};
    let (n_tokens, gd) = (out.len(), G * head_dim);
    let (tiles, rest) = work.split_at_mut(2 * TILE * head_dim);
    let (k32, v32) = tiles.split_at_mut(TILE * head_dim); // (TILE, Dh) each
    let (state_acc, part_acc) = rest.split_at_mut(n_tokens * gd); // (tokens, G, Dh) each
    state_acc.fill(0.0);
    let empty = ([f32::NEG_INFINITY; MAX_GROUP], [0.0f32; MAX_GROUP]);
    let mut state_ml = [empty; MAX_BLOCK];
    let mut part_ml = [empty; MAX_BLOCK];
    let (kp, vp) = (kv.keys.as_ptr(), kv.values.as_ptr());
    let (mut rows, mut next_rows) = ([0usize; TILE], [0usize; TILE]);
    let lines = T::bytes(head_dim).div_ceil(64);
    let mut bufs = TileBuffers::<G>::new();
    let last_seen = first_seen + n_tokens - 1; // positions the last token sees
    for c in 0..n_chunks(last_seen) {
        let chunk = chunk_positions(c, last_seen);
        // Tokens that have this chunk (the later ones): they see more than c * CHUNK positions.
        let t0 = (c * CHUNK + 1).saturating_sub(first_seen);
        // Chunk 0 goes into the state itself, later chunks into empty partials merged after.
        let (ml, acc) = if c == 0 {
            (&mut state_ml, &mut *state_acc)
        } else {
            part_ml[t0..n_tokens].fill(empty);
            part_acc[t0 * gd..n_tokens * gd].fill(0.0);
            (&mut part_ml, &mut *part_acc)
        };
        tile_rows(kv, kv_off, chunk.start, chunk.len().min(TILE), &mut rows);
        for p0 in chunk.clone().step_by(TILE) {
            let np_last = (chunk.end - p0).min(TILE);
            for (p, r) in rows.iter().enumerate().take(np_last) {
                for d in (0..head_dim).step_by(8) {
                    _mm256_storeu_ps(k32.as_mut_ptr().add(p * head_dim + d), T::load8(kp, r + d));
                    _mm256_storeu_ps(v32.as_mut_ptr().add(p * head_dim + d), T::load8(vp, r + d));
                }
            }
            // The next tile's rows are asked for now, and come while the block works on this one.
            let next = p0 + TILE;
            let n_next = if next < chunk.end { (chunk.end - next).min(TILE) } else { 0 };
            tile_rows(kv, kv_off, next, n_next, &mut next_rows);
            for r in &next_rows[..n_next] {
                prefetch_row(T::unit_ptr(kp, *r), T::unit_ptr(vp, *r), lines);
            }
            let (keys, values) = (F32Tile { base: k32.as_ptr(), head_dim }, F32Tile { base: v32.as_ptr(), head_dim });
            // The tokens that see this tile: token t sees first_seen + t > p0 positions.
            let seeing = (p0 + 1).saturating_sub(first_seen)..n_tokens;
            for (t, (m, l)) in ml.iter_mut().enumerate().take(seeing.end).skip(seeing.start) {
                let np = (first_seen + t - p0).min(TILE);
                let qp = q.as_ptr().add(t * q_stride);
                tile_step::<G, PP, W>(head_dim, qp, &keys, &values, np, scale, m, l, acc.as_mut_ptr().add(t * gd), &mut bufs, |_| {});
            }
            std::mem::swap(&mut rows, &mut next_rows);
        }
        if c > 0 {
            for t in t0..n_tokens {
                let (m, l) = &state_ml[t];
                let mut state = Partial { m: *m, l: *l, acc: &mut state_acc[t * gd..(t + 1) * gd] };
                let (pm, pl) = &part_ml[t];
                crate::attention::online::merge_chunk(G, head_dim, &mut state, pm, pl, &part_acc[t * gd..(t + 1) * gd]);
                state_ml[t] = (state.m, state.l);
            }
        }
    }
    for (t, o) in out.iter_mut().enumerate() {
        let (m, l) = state_ml[t];
        let state = Partial { m, l, acc: &mut state_acc[t * gd..(t + 1) * gd] };
        if let Some(o) = o {
            finish(G, head_dim, &state, o);
        }
    }
}
