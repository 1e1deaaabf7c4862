//! Exact top-K by inner product, without the N x M score matrix:
//!
//! ```text
//! score(q, x) = q . x, one chain of fused multiply-adds: acc = 0; acc = fma(q[d], x[d], acc), d = 0..D-1
//! top_k(q)    = the K rows x with the highest score(q, x); equal scores: the lower row first
//! ```
//!
//! The ranking is a total order (score descending, then row index ascending), so the answer is
//! unique: it does not depend on the thread count, the kernel level, the block sizes or the order
//! in which threads finish, and [`top_k_reference`] (score every row, sort) gives exactly the same
//! hits, scores bit for bit. A NaN score (only from NaN in the data) never ranks.
//!
//! How [`top_k`] runs: queries go in batches of up to [`QUERY_BATCH`], packed as the "weights" of
//! the f32 product (`kernels::f32mat`: panels of 16 queries side by side, one per SIMD lane). The
//! database is cut into blocks of about [`BLOCK_BYTES`] that stay in L2; threads take blocks from
//! a shared counter, and for each block pass every query panel over it, 6 database rows at a time
//! (`matmul_f32_tile`: 6 x 16 scores in 12 AVX2 registers, each one the chain above, on the
//! scalar twin below AVX2). A tile's scores are compared with each query's current K-th best
//! (a vectorizable compare, no branch per score), and only the few that beat it go into that
//! query's bounded heap. Each thread keeps its own heaps (K hits per query); at the end of a batch
//! they are merged and sorted. Memory: the packed batch (QUERY_BATCH x D floats) and K hits per
//! query per thread, never N x M. The database is read once per batch of queries.

use std::cmp::Ordering;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Mutex;

use kernels::f32mat::{matmul_f32_tile, PackedF32, MR, NR};
use kernels::{Level, ThreadPool};

use crate::cosine::rows_of;
use crate::RetrieveError;

/// Queries scored in one pass over the database. The batch, packed, is QUERY_BATCH x D floats
/// (1.5 MB at D = 384, in L3 beside the blocks being read), and every pass reads the whole
/// database, so larger batches read it less often.
pub const QUERY_BATCH: usize = 1024;

/// Bytes of database rows in a block (a thread's unit of work): 96 KB, 64 rows at D = 384, stays
/// in L2 while every query panel passes over it.
pub const BLOCK_BYTES: usize = 96 * 1024;

/// Heap memory per thread at most, in bytes: with a large K the query batch shrinks to fit.
const HEAP_BYTES: usize = 64 << 20;

/// One result: a row of the database and its score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// The row, 0-based.
    pub index: usize,
    /// `score(query, row)`.
    pub score: f32,
}

impl Hit {
    /// Whether `self` ranks before `other`: a higher score, or an equal score and a lower index.
    #[inline]
    pub fn ranks_before(&self, other: &Hit) -> bool {
        self.score > other.score || (self.score == other.score && self.index < other.index)
    }
}

/// The ranking as an ordering for `sort_by`: best first (score descending, then index ascending).
/// For hits without NaN scores, the total order [`Hit::ranks_before`] describes.
pub fn rank_order(a: &Hit, b: &Hit) -> Ordering {
    b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal).then(a.index.cmp(&b.index))
}

/// The definition of a score: q (D), x (D) -> q . x as one chain of fused multiply-adds in order
/// of d, from 0. The SIMD tiles compute exactly this, lane by lane.
pub fn score(q: &[f32], x: &[f32]) -> f32 {
    debug_assert_eq!(q.len(), x.len());
    q.iter().zip(x).fold(0f32, |acc, (&a, &b)| a.mul_add(b, acc))
}

/// The plain definition: vectors (N, D), queries (Q, D) -> for each query its best `k` hits (all N
/// when `k >= N`), best first. Scores every row and sorts them: O(N) memory per query, for tests
/// and as the reference of [`top_k`].
///
/// # Errors
/// If `dim` is 0 or a length is not a multiple of it.
pub fn top_k_reference(vectors: &[f32], dim: usize, queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>, RetrieveError> {
    rows_of(vectors, dim, "the index vectors")?;
    rows_of(queries, dim, "the queries")?;
    Ok(queries
        .chunks_exact(dim)
        .map(|q| {
            let mut hits: Vec<Hit> =
                vectors.chunks_exact(dim).enumerate().map(|(index, x)| Hit { index, score: score(q, x) }).filter(|h| !h.score.is_nan()).collect();
            hits.sort_by(rank_order);
            hits.truncate(k);
            hits
        })
        .collect())
}

/// vectors (N, D), queries (Q, D) -> for each query its best `k` hits (all N when `k >= N`),
/// best first, exactly as [`top_k_reference`] ranks them, on the pool's threads at `level`.
/// Where AMX runs (and `level` is AVX-512, D <= 1024, K <= 4096), by the bf16 screen of
/// [`crate::top_k_screened`]; elsewhere by the f32 scan described above.
/// For cosine similarity pass unit vectors (see [`crate::normalize_rows`]).
///
/// # Errors
/// If `dim` is 0 or a length is not a multiple of it.
pub fn top_k(pool: &ThreadPool, level: Level, vectors: &[f32], dim: usize, queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>, RetrieveError> {
    if crate::screen::available(level, dim, k) {
        let batch = crate::screen::batch_for(k, QUERY_BATCH);
        return crate::screen::top_k_screened(pool, level, vectors, dim, queries, k, batch, crate::screen::CANDIDATE_CAP);
    }
    // A whole number of tiles per block, at least one tile.
    let block_rows = (BLOCK_BYTES / (dim.max(1) * 4)).max(1).next_multiple_of(MR);
    // Heaps hold K hits per query per thread: a large K takes fewer queries per pass.
    let batch = (HEAP_BYTES / (k.max(1) * size_of::<Hit>())).clamp(NR, QUERY_BATCH);
    top_k_blocked(pool, level, vectors, dim, queries, k, block_rows, batch)
}

/// [`top_k`] with the database cut into blocks of `block_rows` rows and the queries into batches
/// of `batch`, both at least 1 (for tests that make blocks, tiles and panels end anywhere).
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn top_k_blocked(
    pool: &ThreadPool,
    level: Level,
    vectors: &[f32],
    dim: usize,
    queries: &[f32],
    k: usize,
    block_rows: usize,
    batch: usize,
) -> Result<Vec<Vec<Hit>>, RetrieveError> {
    let n = rows_of(vectors, dim, "the index vectors")?;
    let n_queries = rows_of(queries, dim, "the queries")?;
    let k = k.min(n);
    if k == 0 {
        return Ok(vec![Vec::new(); n_queries]);
    }
    let (block_rows, batch) = (block_rows.max(1), batch.max(1));
    let n_blocks = n.div_ceil(block_rows);
    let states: Vec<Mutex<Heaps>> = (0..pool.n_threads()).map(|_| Mutex::new(Heaps::new(batch.min(n_queries), k))).collect();
    let mut results = Vec::with_capacity(n_queries);
    for chunk in queries.chunks(batch * dim) {
        let q = chunk.len() / dim;
        // The queries as the "weights" of the product: panels of NR queries, one per lane.
        let packed = PackedF32::pack(chunk, q, dim);
        for state in &states {
            lock(state).reset(q, packed.panels() * NR);
        }
        let next_block = AtomicUsize::new(0);
        pool.run(&|i, _| {
            let mut heaps = lock(&states[i]);
            loop {
                let b = next_block.fetch_add(1, AtomicOrdering::Relaxed);
                if b >= n_blocks {
                    break;
                }
                let rows = b * block_rows..((b + 1) * block_rows).min(n);
                scan_block(level, vectors, dim, rows, &packed, &mut heaps);
            }
        });
        // Each query's best K overall are among the best K of some thread: merge and sort.
        let heaps: Vec<_> = states.iter().map(lock).collect();
        for query in 0..q {
            let mut hits: Vec<Hit> = heaps.iter().flat_map(|h| h.hits_of(query)).copied().collect();
            hits.sort_by(rank_order);
            hits.truncate(k);
            results.push(hits);
        }
    }
    Ok(results)
}

/// The lock of a thread's heaps (no thread panics while holding one, but a poisoned lock still
/// holds valid heaps).
fn lock(state: &Mutex<Heaps>) -> std::sync::MutexGuard<'_, Heaps> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Scores `rows` of the database against every query of `packed` and offers the ones that beat a
/// query's current K-th best to its heap.
fn scan_block(level: Level, vectors: &[f32], dim: usize, rows: Range<usize>, packed: &PackedF32, heaps: &mut Heaps) {
    for p in 0..packed.panels() {
        let lanes = p * NR..(p + 1) * NR;
        let mut threshold: [f32; NR] = heaps.thresholds[lanes.clone()].try_into().unwrap_or([f32::INFINITY; NR]);
        for r0 in rows.clone().step_by(MR) {
            let tile_rows = MR.min(rows.end - r0);
            let mut acc = [[0f32; NR]; MR];
            matmul_f32_tile(level, packed, p, 0, dim, &vectors[r0 * dim..], dim, tile_rows, &mut acc);
            // acc[r][j] = score(query p*NR + j, row r0 + r). Most tiles beat no threshold once the
            // heaps are full: one compare per score, folded without branches (the compiler
            // vectorizes it), and a closer look only when some score passes.
            let mut any = false;
            for row in &acc[..tile_rows] {
                for (s, t) in row.iter().zip(&threshold) {
                    any |= s >= t;
                }
            }
            if !any {
                continue;
            }
            for (r, row) in acc[..tile_rows].iter().enumerate() {
                for (j, &s) in row.iter().enumerate() {
                    if s >= threshold[j] {
                        heaps.offer(p * NR + j, Hit { index: r0 + r, score: s });
                    }
                }
            }
            threshold.copy_from_slice(&heaps.thresholds[lanes.clone()]);
        }
    }
}

/// The best `k` hits so far of each query of a batch: one bounded min-heap per query, its root the
/// worst hit kept, so a better hit replaces the root in O(log K). O(K) memory per query.
struct Heaps {
    k: usize,
    /// (Q, K): query q's heap in `hits[q*K..q*K + lens[q]]`.
    hits: Vec<Hit>,
    /// (Q)
    lens: Vec<usize>,
    /// (Q rounded up to whole panels): what a score must reach to be offered: -inf while the heap
    /// is not full, then the root's score (an equal score may still rank by its index); +inf for
    /// the padding lanes of the last panel.
    thresholds: Vec<f32>,
}

impl Heaps {
    fn new(queries: usize, k: usize) -> Heaps {
        Heaps { k, hits: Vec::with_capacity(queries * k), lens: Vec::with_capacity(queries), thresholds: Vec::new() }
    }

    /// Empty heaps for `queries` queries, thresholds for `lanes` >= queries lanes.
    fn reset(&mut self, queries: usize, lanes: usize) {
        self.hits.clear();
        self.hits.resize(queries * self.k, Hit { index: 0, score: 0.0 });
        self.lens.clear();
        self.lens.resize(queries, 0);
        self.thresholds.clear();
        self.thresholds.resize(lanes, f32::INFINITY);
        self.thresholds[..queries].fill(f32::NEG_INFINITY);
    }

    fn hits_of(&self, query: usize) -> &[Hit] {
        &self.hits[query * self.k..query * self.k + self.lens[query]]
    }

    /// Keeps `hit` if it ranks among the query's best K so far.
    #[inline]
    fn offer(&mut self, query: usize, hit: Hit) {
        if hit.score.is_nan() {
            return;
        }
        let k = self.k;
        let heap = &mut self.hits[query * k..(query + 1) * k];
        // The root is the worst hit kept.
        if !keep_best(heap, &mut self.lens[query], hit, |a, b| b.ranks_before(a)) {
            return;
        }
        if self.lens[query] == k {
            self.thresholds[query] = heap[0].score;
        }
    }
}

/// The best `heap.len()` items so far in a binary heap whose root is the least by `less`
/// (`*len` of them in use): `item` goes in while there is room, or replaces the root when the
/// root is less than it. Whether it was kept.
pub(crate) fn keep_best<T>(heap: &mut [T], len: &mut usize, item: T, less: impl Fn(&T, &T) -> bool) -> bool {
    if *len < heap.len() {
        heap[*len] = item;
        sift_up_by(heap, *len, &less);
        *len += 1;
    } else if less(&heap[0], &item) {
        heap[0] = item;
        sift_down_by(heap, 0, &less);
    } else {
        return false;
    }
    true
}

/// A binary heap whose root is its least element by `less`: moves `heap[i]` up while it is less
/// than its parent.
fn sift_up_by<T>(heap: &mut [T], mut i: usize, less: impl Fn(&T, &T) -> bool) {
    while i > 0 {
        let parent = (i - 1) / 2;
        if !less(&heap[i], &heap[parent]) {
            break;
        }
        heap.swap(i, parent);
        i = parent;
    }
}

/// The same heap: moves `heap[i]` down while a child is less than it.
fn sift_down_by<T>(heap: &mut [T], mut i: usize, less: impl Fn(&T, &T) -> bool) {
    loop {
        let (left, right) = (2 * i + 1, 2 * i + 2);
        let mut least = i;
        if left < heap.len() && less(&heap[left], &heap[least]) {
            least = left;
        }
        if right < heap.len() && less(&heap[right], &heap[least]) {
            least = right;
        }
        if least == i {
            return;
        }
        heap.swap(i, least);
        i = least;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_scores_rank_the_lower_index_first() {
        // Every row scores the same: the first K rows, in order, whatever the threads.
        let (d, n) = (3, 50);
        let vectors = vec![0.5f32; n * d];
        let queries = [1.0f32, 1.0, 1.0];
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            for level in Level::all_available() {
                let hits = top_k(&pool, level, &vectors, d, &queries, 7).unwrap();
                assert_eq!(hits[0].iter().map(|h| h.index).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_zero_query_scores_zero_everywhere_and_keeps_the_first_rows() {
        let pool = ThreadPool::new(2);
        let vectors: Vec<f32> = (0..40).map(|i| i as f32 - 20.0).collect();
        let hits = top_k(&pool, Level::current(), &vectors, 4, &[0.0; 4], 3).unwrap();
        assert_eq!(hits[0], [0, 1, 2].map(|index| Hit { index, score: 0.0 }));
    }

    #[test]
    fn k_past_n_gives_every_row_and_k_zero_gives_none() {
        let pool = ThreadPool::new(2);
        let vectors = [1.0f32, 0.0, 0.0, 1.0, 0.6, 0.8];
        let hits = top_k(&pool, Level::current(), &vectors, 2, &[0.0, 1.0], 10).unwrap();
        assert_eq!(hits[0].iter().map(|h| h.index).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(top_k(&pool, Level::current(), &vectors, 2, &[0.0, 1.0], 0).unwrap(), vec![Vec::<Hit>::new()]);
        assert_eq!(top_k(&pool, Level::current(), &[], 2, &[0.0, 1.0], 3).unwrap(), vec![Vec::<Hit>::new()]);
    }

    #[test]
    fn nan_rows_never_rank() {
        let pool = ThreadPool::new(1);
        let vectors = [f32::NAN, 0.0, 1.0, 0.0, 0.5, 0.0];
        let hits = top_k(&pool, Level::current(), &vectors, 2, &[1.0, 0.0], 3).unwrap();
        assert_eq!(hits[0].iter().map(|h| h.index).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(hits, top_k_reference(&vectors, 2, &[1.0, 0.0], 3).unwrap());
    }

    #[test]
    fn heap_keeps_the_best_k_in_any_arrival_order() {
        let mut heaps = Heaps::new(1, 4);
        heaps.reset(1, NR);
        let offered: Vec<Hit> =
            [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0].iter().enumerate().map(|(index, &score)| Hit { index, score }).collect();
        for hit in offered.iter().rev() {
            heaps.offer(0, *hit);
        }
        let mut kept = heaps.hits_of(0).to_vec();
        kept.sort_by(rank_order);
        assert_eq!(kept.iter().map(|h| h.index).collect::<Vec<_>>(), [5, 7, 4, 8]);
        assert_eq!(heaps.thresholds[0], 5.0);
    }
}
