//! Top-K against brute force: the blocked, threaded search must return exactly the hits of
//! scoring every row and sorting (scores bit for bit, ties by the lower row), at every kernel
//! level, thread count, block size and query batch, including data full of exact ties.

use kernels::{Level, ThreadPool};
use proptest::prelude::*;
use retrieve::{rank_order, top_k, top_k_blocked, top_k_reference, Hit};

fn same_hits(got: &[Vec<Hit>], want: &[Vec<Hit>]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| g.len() == w.len() && g.iter().zip(w).all(|(a, b)| a.index == b.index && a.score.to_bits() == b.score.to_bits()))
}

/// The reference is right too: sorted best first, ties by index, and nothing left out ranks
/// before the last hit kept (checked with scores summed in f64, which cannot reorder hits whose
/// f32 scores differ by more than the rounding).
fn check_reference(vectors: &[f32], dim: usize, queries: &[f32], k: usize, hits: &[Vec<Hit>]) {
    for (q, hits) in queries.chunks_exact(dim).zip(hits) {
        assert_eq!(hits.len(), k.min(vectors.len() / dim));
        assert!(hits.windows(2).all(|w| rank_order(&w[0], &w[1]).is_lt()), "not sorted: {hits:?}");
        for h in hits {
            let exact: f64 = q.iter().zip(&vectors[h.index * dim..(h.index + 1) * dim]).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((h.score as f64 - exact).abs() <= 1e-5 * (1.0 + exact.abs()), "{} vs {exact}", h.score);
        }
    }
}

/// Values from a small grid, so many rows score exactly the same (small integer sums are exact).
fn grid_values(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec((-2i8..=2).prop_map(|v| v as f32 * 0.5), n)
}

fn float_values(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-1.0f32..1.0, n)
}

fn case(values: fn(usize) -> BoxedStrategy<Vec<f32>>) -> impl Strategy<Value = (usize, Vec<f32>, Vec<f32>, usize, usize, usize)> {
    (1usize..20, 0usize..120, 1usize..40, 0usize..15, 1usize..30, 1usize..40)
        .prop_flat_map(move |(dim, n, q, k, block, batch)| (Just(dim), values(n * dim), values(q * dim), Just(k), Just(block), Just(batch)))
}

fn run_case(dim: usize, vectors: &[f32], queries: &[f32], k: usize, block: usize, batch: usize) -> Result<(), TestCaseError> {
    let want = top_k_reference(vectors, dim, queries, k).unwrap();
    check_reference(vectors, dim, queries, k, &want);
    for threads in [1, 3] {
        let pool = ThreadPool::new(threads);
        for level in Level::all_available() {
            let got = top_k_blocked(&pool, level, vectors, dim, queries, k, block, batch).unwrap();
            prop_assert!(same_hits(&got, &want), "{level:?}, {threads} threads, block {block}, batch {batch}:\n got {got:?}\nwant {want:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn top_k_equals_brute_force_with_ties((dim, vectors, queries, k, block, batch) in case(|n| grid_values(n).boxed())) {
        run_case(dim, &vectors, &queries, k, block, batch)?;
    }

    #[test]
    fn top_k_equals_brute_force_on_random_floats((dim, vectors, queries, k, block, batch) in case(|n| float_values(n).boxed())) {
        run_case(dim, &vectors, &queries, k, block, batch)?;
    }
}

#[test]
fn default_blocks_and_batches_equal_brute_force_on_a_larger_set() {
    // Several default-sized blocks (BLOCK_BYTES / (D * 4) = 640 rows at D = 37), a query batch
    // that ends mid-panel, and all rows tied in pairs (every vector appears twice).
    let (dim, n, q) = (37, 3000, 21);
    let mut state = 7u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let half: Vec<f32> = (0..n / 2 * dim).map(|_| next()).collect();
    let vectors = [half.clone(), half].concat();
    let queries: Vec<f32> = (0..q * dim).map(|_| next()).collect();
    let want = top_k_reference(&vectors, dim, &queries, 10).unwrap();
    for hits in &want {
        // Each hit's twin (index + n/2) has the same score: the twins come right after.
        assert!(hits.windows(2).any(|w| w[0].score == w[1].score && w[1].index == w[0].index + n / 2), "{hits:?}");
    }
    for threads in [1, 2] {
        let got = top_k(&ThreadPool::new(threads), Level::current(), &vectors, dim, &queries, 10).unwrap();
        assert!(same_hits(&got, &want), "{threads} threads");
    }
}

#[test]
fn a_pool_running_solo_gives_the_same_hits() {
    // Under contention the pool runs jobs on the caller alone: the search must not depend on it.
    let (dim, n) = (5, 200);
    let vectors: Vec<f32> = (0..n * dim).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
    let queries: Vec<f32> = (0..3 * dim).map(|i| ((i * 104729) % 5) as f32 - 2.0).collect();
    let pool = ThreadPool::new(3);
    let want = top_k_blocked(&pool, Level::current(), &vectors, dim, &queries, 9, 12, 2).unwrap();
    pool.force_solo(true);
    let got = top_k_blocked(&pool, Level::current(), &vectors, dim, &queries, 9, 12, 2).unwrap();
    assert!(same_hits(&got, &want));
}

#[test]
fn shapes_are_checked_not_panicked_on() {
    let pool = ThreadPool::new(1);
    assert!(top_k(&pool, Level::current(), &[1.0; 5], 2, &[1.0; 2], 1).is_err());
    assert!(top_k(&pool, Level::current(), &[1.0; 4], 2, &[1.0; 3], 1).is_err());
    assert!(top_k(&pool, Level::current(), &[1.0; 4], 0, &[], 1).is_err());
    assert_eq!(top_k(&pool, Level::current(), &[1.0; 4], 2, &[], 1).unwrap(), Vec::<Vec<Hit>>::new());
}
