//! Exact top-K on Intel AMX: a bf16 screen over every row, then exact rescoring of the few rows
//! that survive it. The hits are [`top_k_reference`](crate::top_k_reference)'s, bit for bit.
//!
//! ```text
//! a(q, x) = bf16(q) . bf16(x) on AMX             the screen's score, 16x the f32 multiply-adds per instruction
//! e(q, x) = score(q, x)                          the exact score (one f32 fused multiply-add chain)
//! |a - e| <= eps(q) = EPS_PER_NORM * |q|         for rows with |x| <= 1.01 (why below)
//! ```
//!
//! Each thread keeps, per query, a min-heap of the K best screen scores it has seen and a list of
//! candidate rows: every row whose screen score reaches (its K-th best so far) - 2 eps. After the
//! pass, with tau = the K-th best screen score over all threads, the rows with a >= tau - 2 eps
//! are rescored with `score` and ranked as the reference ranks them.
//!
//! Why nothing is lost: K rows have a >= tau, so their exact scores are >= tau - eps, so the K-th
//! best exact score is >= tau - eps; a row x of the exact top K has e(x) at least that, so
//! a(x) >= e(x) - eps >= tau - 2 eps. A thread's K-th best so far never exceeds tau (it has seen
//! a subset of the rows), so x passed its thread's cut when it arrived and every later pruning.
//!
//! The bound: bf16 rounding moves each value by at most 2^-9 of itself, so each product by at
//! most (2^-8 + 2^-18) of itself and the sum by 0.00391 * sum |q_i x_i| <= 0.00391 |q| |x| (Cauchy-
//! Schwarz); AMX's own f32 summation (measured within 5.5 ulps of sum |terms| per 32-deep step;
//! budgeted at 64 ulps) and the exact score's chain (D ulps) add under 1e-4 at D <= 1024. With
//! |x| <= 1.01: 0.00396 + 1e-4 < 0.0045 = [`EPS_PER_NORM`]. Rows are checked as their block is
//! rounded: a block with a longer row (or a NaN), possible only in a hand-made index, is scored
//! exactly instead (e <= eps of itself trivially). A query whose candidates outgrow
//! [`CANDIDATE_CAP`] (thousands of near-equal scores: duplicated rows) falls back to the exact
//! scan, so memory stays O(K) per query.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Mutex;

use kernels::bf16mat::{round_rows, AmxTiles, Bf16Rows, PackedBf16, TILE};
use kernels::{Level, ThreadPool};

use crate::topk::{keep_best, rank_order, score, top_k_blocked, Hit, BLOCK_BYTES};
use crate::RetrieveError;

/// |screen score - exact score| <= EPS_PER_NORM * |q| for rows of norm <= 1.01 and D <= 1024
/// (the derivation is in the module doc).
const EPS_PER_NORM: f64 = 0.0045;
/// Rows up to norm 1.01 (squared, with room for the f32 sum's rounding) are screened.
const MAX_ROW_NORM_SQUARED: f32 = 1.02;
/// Widest vectors the bound covers.
pub(crate) const MAX_SCREEN_DIM: usize = 1024;
/// Rows of a block, a thread's unit of work (a multiple of the kernel's 32): 128 KB of bf16 at
/// D = 384, in L2 beside the packed queries.
const BLOCK_ROWS: usize = 256;
/// Candidates a query may hold per thread beyond 4K before it falls back to the exact scan.
pub(crate) const CANDIDATE_CAP: usize = 2048;

/// Largest K the screen takes: its memory per query grows with K (the heap and up to 4K
/// candidates per thread), and a K in the thousands leaves little to screen out.
const MAX_SCREEN_K: usize = 4096;
/// Memory for the screens' heaps and candidates per thread, which bounds the queries of a batch.
const SCREEN_BYTES: usize = 64 << 20;

/// Whether [`top_k_screened`] runs here for D and K: AMX, the kernels not capped below AVX-512,
/// D and K within the screen's bounds.
pub(crate) fn available(level: Level, dim: usize, k: usize) -> bool {
    level >= Level::Avx512Vnni && dim <= MAX_SCREEN_DIM && k <= MAX_SCREEN_K && kernels::bf16mat::amx_available()
}

/// Queries per batch for K: as many as fit [`SCREEN_BYTES`] per thread (a heap of K floats and up
/// to 4K + [`CANDIDATE_CAP`] candidates of 16 bytes per query), from 32 to `max`.
pub(crate) fn batch_for(k: usize, max: usize) -> usize {
    (SCREEN_BYTES / (4 * k + 16 * (4 * k + CANDIDATE_CAP))).clamp(2 * TILE, max.max(2 * TILE))
}

/// [`crate::top_k`] by the AMX screen: vectors (N, D), queries (Q, D) -> each query's best `k`
/// hits, best first, in batches of `batch` queries; `cap` candidates per query and thread beyond
/// 4K (tests make it small to reach the fallback, which runs the f32 scan at `level`).
///
/// Without AMX every block is scored exactly (the same hits, slowly: check [`available`]).
///
/// # Panics
/// If D is past [`MAX_SCREEN_DIM`], where the error bound no longer holds.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn top_k_screened(
    pool: &ThreadPool,
    level: Level,
    vectors: &[f32],
    dim: usize,
    queries: &[f32],
    k: usize,
    batch: usize,
    cap: usize,
) -> Result<Vec<Vec<Hit>>, RetrieveError> {
    let n = crate::cosine::rows_of(vectors, dim, "the index vectors")?;
    let n_queries = crate::cosine::rows_of(queries, dim, "the queries")?;
    assert!(dim <= MAX_SCREEN_DIM, "top_k_screened: D = {dim} is past the bound's {MAX_SCREEN_DIM}");
    let k = k.min(n);
    if k == 0 {
        return Ok(vec![Vec::new(); n_queries]);
    }
    let n_blocks = n.div_ceil(BLOCK_ROWS);
    let mut results: Vec<Vec<Hit>> = Vec::with_capacity(n_queries);
    for (b, chunk) in queries.chunks(batch.max(1) * dim).enumerate() {
        let q = chunk.len() / dim;
        let packed = PackedBf16::pack(chunk, q, dim);
        let eps: Vec<f32> = chunk
            .chunks_exact(dim)
            .map(|v| (EPS_PER_NORM * v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()) as f32)
            .map(|e| if e.is_finite() { e } else { f32::INFINITY })
            .collect();
        let lanes = q.next_multiple_of(2 * TILE);
        let states: Vec<Mutex<Screen>> = (0..pool.n_threads()).map(|_| Mutex::new(Screen::new(q, lanes, k, cap, &eps))).collect();
        let next_block = AtomicUsize::new(0);
        pool.run(&|i, _| {
            let mut screen = states[i].lock().unwrap_or_else(|e| e.into_inner());
            let mut xb = Bf16Rows::new();
            let mut tiles = None;
            loop {
                let block = next_block.fetch_add(1, AtomicOrdering::Relaxed);
                if block >= n_blocks {
                    break;
                }
                let rows = block * BLOCK_ROWS..((block + 1) * BLOCK_ROWS).min(n);
                let x = &vectors[rows.start * dim..rows.end * dim];
                let short = x.chunks_exact(dim).all(|r| r.iter().map(|v| v * v).sum::<f32>() <= MAX_ROW_NORM_SQUARED);
                if short && tiles.is_none() {
                    tiles = AmxTiles::open();
                }
                // Without AMX (a caller that did not check `available`) every block is exact.
                if let (true, Some(tiles)) = (short, tiles.as_mut()) {
                    round_rows(x, dim, &mut xb);
                    screen.scan(tiles, &packed, &xb, rows.start, rows.len());
                } else {
                    // Exact scores pass the screen as they are.
                    for (r, row) in x.chunks_exact(dim).enumerate() {
                        for (query, qv) in chunk.chunks_exact(dim).enumerate() {
                            screen.offer(query, rows.start + r, score(qv, row));
                        }
                    }
                }
            }
        });
        let screens: Vec<Screen> = states.into_iter().map(|s| s.into_inner().unwrap_or_else(|e| e.into_inner())).collect();
        let mut fallback = Vec::new();
        for (query, qv) in chunk.chunks_exact(dim).enumerate() {
            if screens.iter().any(|s| s.overflow[query]) {
                fallback.push(query);
                results.push(Vec::new());
                continue;
            }
            // tau: the K-th best screen score over all threads (each kept its best K).
            let mut best: Vec<f32> = screens.iter().flat_map(|s| s.best_of(query)).copied().collect();
            let tau = if best.len() >= k {
                best.sort_by(|a, b| b.total_cmp(a));
                best[k - 1]
            } else {
                f32::NEG_INFINITY
            };
            let cut = tau - 2.0 * eps[query];
            let mut hits: Vec<Hit> = screens
                .iter()
                .flat_map(|s| &s.candidates[query])
                .filter(|c| c.1 >= cut)
                .map(|&(index, _)| Hit { index, score: score(qv, &vectors[index * dim..(index + 1) * dim]) })
                .filter(|h| !h.score.is_nan())
                .collect();
            hits.sort_by(rank_order);
            hits.dedup_by_key(|h| h.index);
            hits.truncate(k);
            results.push(hits);
        }
        if !fallback.is_empty() {
            let exact_queries: Vec<f32> = fallback.iter().flat_map(|&query| chunk[query * dim..(query + 1) * dim].iter().copied()).collect();
            let block_rows = (BLOCK_BYTES / (dim.max(1) * 4)).max(1).next_multiple_of(kernels::f32mat::MR);
            let exact = top_k_blocked(pool, level, vectors, dim, &exact_queries, k, block_rows, fallback.len())?;
            for (&query, hits) in fallback.iter().zip(exact) {
                results[b * batch.max(1) + query] = hits;
            }
        }
    }
    Ok(results)
}

/// One thread's screen over a batch of queries.
struct Screen {
    k: usize,
    cap: usize,
    /// (Q, K): query q's min-heap of its best screen scores in `best[q*K..q*K + lens[q]]`.
    best: Vec<f32>,
    lens: Vec<usize>,
    /// (Q rounded up to 32 lanes): what a screen score must reach to be a candidate: -inf until K
    /// scores are in, then the K-th best - 2 eps; +inf for padding lanes and fallen-back queries.
    cut: Vec<f32>,
    /// (Q): 2 eps of each query.
    band: Vec<f32>,
    /// (Q): rows (index, screen score) that passed the cut when they came.
    candidates: Vec<Vec<(usize, f32)>>,
    /// (Q): the length at which the candidates are next pruned.
    prune_at: Vec<usize>,
    /// (Q): too many candidates: the query goes to the exact scan.
    overflow: Vec<bool>,
}

impl Screen {
    fn new(queries: usize, lanes: usize, k: usize, cap: usize, eps: &[f32]) -> Screen {
        let mut cut = vec![f32::INFINITY; lanes];
        cut[..queries].fill(f32::NEG_INFINITY);
        Screen {
            k,
            cap,
            best: vec![0.0; queries * k],
            lens: vec![0; queries],
            cut,
            band: eps.iter().map(|e| 2.0 * e).collect(),
            candidates: vec![Vec::new(); queries],
            prune_at: vec![2 * k + 64; queries],
            overflow: vec![false; queries],
        }
    }

    fn best_of(&self, query: usize) -> &[f32] {
        &self.best[query * self.k..query * self.k + self.lens[query]]
    }

    /// The block's `count` rows (bf16 in `xb`, [`round_rows`]'s layout; row r is database row
    /// `first + r`) against every query of `packed`, 32 rows x 32 queries per AMX step.
    fn scan(&mut self, tiles: &mut AmxTiles, packed: &PackedBf16, xb: &Bf16Rows, first: usize, count: usize) {
        let pairs = packed.rows().div_ceil(2 * TILE);
        let mut out = [[0f32; TILE * TILE]; 4];
        for r0 in (0..count).step_by(2 * TILE) {
            for pair in 0..pairs {
                tiles.block(packed, pair, xb, r0, &mut out);
                for (c, scores) in out.iter().enumerate() {
                    let lane0 = (2 * pair + c % 2) * TILE;
                    if lane0 >= packed.rows() {
                        continue; // a lone last panel's copy
                    }
                    let mut cut: [f32; TILE] = self.cut[lane0..lane0 + TILE].try_into().expect("TILE lanes");
                    let row0 = r0 + (c / 2) * TILE;
                    for (i, s) in scores.chunks_exact(TILE).enumerate().take(count.saturating_sub(row0)) {
                        // Most rows pass no query's cut: one vector compare, then a closer look.
                        let any = s.iter().zip(&cut).fold(false, |any, (a, c)| any | (a >= c));
                        if !any {
                            continue;
                        }
                        for (j, &a) in s.iter().enumerate() {
                            if a >= cut[j] {
                                self.offer(lane0 + j, first + row0 + i, a);
                            }
                        }
                        cut.copy_from_slice(&self.cut[lane0..lane0 + TILE]);
                    }
                }
            }
        }
    }

    /// A row's screen score `a` for `query`: into the heap of the best K, and a candidate if it
    /// reaches the cut.
    fn offer(&mut self, query: usize, index: usize, a: f32) {
        if a.is_nan() || a < self.cut[query] {
            return;
        }
        let k = self.k;
        let heap = &mut self.best[query * k..(query + 1) * k];
        // A min-heap: the root is the K-th best so far. A score below it is still a candidate.
        keep_best(heap, &mut self.lens[query], a, |x, y| x < y);
        if self.lens[query] == k {
            self.cut[query] = heap[0] - self.band[query];
        }
        let list = &mut self.candidates[query];
        list.push((index, a));
        if list.len() >= self.prune_at[query] {
            let cut = self.cut[query];
            list.retain(|c| c.1 >= cut);
            if list.len() > 4 * k + self.cap {
                self.overflow[query] = true;
                self.cut[query] = f32::INFINITY;
                *list = Vec::new();
            } else {
                self.prune_at[query] = (2 * list.len()).max(2 * k + 64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{normalize_rows, top_k_reference};

    fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let raw: Vec<f32> = (0..n * dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        normalize_rows(&raw, dim).unwrap()
    }

    fn check(vectors: &[f32], dim: usize, queries: &[f32], k: usize, batch: usize, cap: usize, threads: usize) {
        let want = top_k_reference(vectors, dim, queries, k).unwrap();
        let got = top_k_screened(&ThreadPool::new(threads), Level::best_available(), vectors, dim, queries, k, batch, cap).unwrap();
        assert_eq!(got.len(), want.len());
        for (q, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.len(), w.len(), "query {q}");
            for (a, b) in g.iter().zip(w) {
                assert!(a.index == b.index && a.score.to_bits() == b.score.to_bits(), "query {q}: {g:?} vs {w:?}");
            }
        }
    }

    #[test]
    fn batches_fit_the_memory_bound() {
        assert_eq!(batch_for(10, 1024), 1024);
        let b = batch_for(MAX_SCREEN_K, 1024);
        assert!(b >= 2 * TILE && b * (4 * MAX_SCREEN_K + 16 * (4 * MAX_SCREEN_K + CANDIDATE_CAP)) <= SCREEN_BYTES, "{b}");
        assert!(!available(Level::Avx512Vnni, 384, MAX_SCREEN_K + 1) && !available(Level::Avx2, 384, 10));
    }

    #[test]
    fn the_screen_gives_the_reference_hits_bit_for_bit() {
        if !kernels::bf16mat::amx_available() {
            eprintln!("no AMX on this machine: the screen does not run here");
            return;
        }
        // Blocks, tiles and query panels ending anywhere; K past and below N.
        for (n, dim, nq, k, batch, threads) in
            [(1000, 384, 70, 10, 1024, 2), (37, 40, 5, 50, 3, 3), (600, 64, 33, 1, 16, 1), (513, 100, 40, 25, 40, 2)]
        {
            let vectors = unit_rows(n, dim, 1);
            let queries = unit_rows(nq, dim, 2);
            check(&vectors, dim, &queries, k, batch, CANDIDATE_CAP, threads);
        }
    }

    #[test]
    fn near_ties_duplicates_and_long_rows_stay_exact() {
        if !kernels::bf16mat::amx_available() {
            eprintln!("no AMX on this machine: the screen does not run here");
            return;
        }
        let dim = 64;
        let mut vectors = unit_rows(700, dim, 3);
        let queries = unit_rows(9, dim, 4);
        // Rows that differ from a query's best row in the last bits: screen scores tie, exact
        // scores do not.
        let base = vectors[..dim].to_vec();
        for r in 1..40 {
            for d in 0..dim {
                vectors[r * dim + d] = base[d] * (1.0 + (r as f32) * 1e-7 * if d % 2 == 0 { 1.0 } else { -1.0 });
            }
        }
        let mut queries = queries;
        queries[..dim].copy_from_slice(&base);
        check(&vectors, dim, &queries, 5, 1024, CANDIDATE_CAP, 2);
        // 300 copies of one row: every copy a candidate; with a small cap the query falls back
        // to the exact scan, and the answer is the same.
        for r in 100..400 {
            vectors.copy_within(..dim, r * dim);
        }
        check(&vectors, dim, &queries, 5, 1024, CANDIDATE_CAP, 2);
        check(&vectors, dim, &queries, 5, 4, 10, 2);
        // A row of norm 3 (a hand-made index) and a NaN row: their blocks are scored exactly.
        for d in 0..dim {
            vectors[500 * dim + d] *= 3.0;
        }
        vectors[650 * dim] = f32::NAN;
        check(&vectors, dim, &queries, 7, 1024, CANDIDATE_CAP, 2);
    }
}
