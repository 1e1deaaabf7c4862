//! Bidirectional (encoder) attention over a flat batch of sequences, in f32: every token sees
//! every token of its own sequence, before and after it, and nothing of the others.
//!
//! ```text
//! for each token t of sequence s, each head h:
//!     score_j = (q[t,h] . k[j,h]) / sqrt(Dh)      for the tokens j of s only
//!     out[t,h] = sum_j softmax(score)_j * v[j,h]
//! ```
//!
//! A flat batch holds no padding, so the padding mask of a padded batch (keys past a sequence's
//! length get -inf) is the sequence bounds here: a query's keys are exactly its sequence's
//! tokens, and no work is spent on padding. For the same reason a token's output does not
//! depend on what else is in the batch.
//!
//! The (token, head) rows are independent and split statically over the pool's threads; each is
//! computed by the same code at every level (8 lanes of fused multiply-adds for the dot products,
//! the stable softmax with [`exp_poly`], then the weighted sum of values), so results are
//! bit-identical across levels, thread counts and batch compositions (tested).

use crate::matmul::Level;
use crate::ops::exp_poly;
use crate::pool::{split_range, SharedMut, ThreadPool};

/// Scratch floats [`encoder_attention`] needs: one row of scores per thread.
pub fn encoder_attention_scratch(n_threads: usize, max_seq_len: usize) -> usize {
    n_threads.max(1) * max_seq_len
}

/// qkv (T, 3*H*Dh), row t = [q (H, Dh) | k (H, Dh) | v (H, Dh)] of token t; seq_starts (S+1), sequence
/// s = tokens `seq_starts[s]..seq_starts[s+1]` -> out (T, H*Dh). `scratch` holds at least
/// [`encoder_attention_scratch`]`(pool.n_threads(), longest sequence)` floats.
///
/// # Panics
/// If the slices do not match the shapes or `seq_starts` is not a non-decreasing list from 0 to T
/// (the model checks its batch before it calls).
#[allow(clippy::too_many_arguments)]
pub fn encoder_attention(
    pool: &ThreadPool,
    level: Level,
    qkv: &[f32],
    seq_starts: &[usize],
    n_head: usize,
    head_dim: usize,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let dim = n_head * head_dim;
    let t = seq_starts.last().copied().unwrap_or(0);
    assert!(
        seq_starts.first().is_none_or(|&s| s == 0) && seq_starts.windows(2).all(|w| w[0] <= w[1]),
        "encoder_attention: bad seq_starts {seq_starts:?}"
    );
    assert_eq!(qkv.len(), t * 3 * dim, "encoder_attention: qkv has {} values, expected T*3*D = {t}*3*{dim}", qkv.len());
    assert_eq!(out.len(), t * dim, "encoder_attention: out has {} values, expected T*D = {t}*{dim}", out.len());
    let max_len = seq_starts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(scratch.len() >= encoder_attention_scratch(pool.n_threads(), max_len), "encoder_attention: scratch too small");
    if t == 0 || dim == 0 {
        return;
    }
    let scale = 1.0 / (head_dim as f32).sqrt();
    let (out_shared, scratch_shared) = (SharedMut::new(out), SharedMut::new(scratch));
    pool.run(&|i, nt| {
        let rows = split_range(t * n_head, i, nt);
        // SAFETY: thread i alone uses scratch[i*max_len..][..max_len] and the out rows of its
        // (token, head) pairs, which no other thread has.
        let scores = unsafe { scratch_shared.slice(i * max_len, max_len) };
        let job = Rows { qkv, seq_starts, n_head, head_dim, scale, out: out_shared };
        #[cfg(target_arch = "x86_64")]
        if level >= Level::Avx2 {
            // SAFETY: the level implies AVX2 and FMA.
            return unsafe { job.run_avx2(rows, scores) };
        }
        let _ = level;
        job.run_generic(rows, scores)
    });
}

/// One thread's share: the inputs of a call and the shared output.
struct Rows<'a> {
    qkv: &'a [f32],
    seq_starts: &'a [usize],
    n_head: usize,
    head_dim: usize,
    scale: f32,
    out: SharedMut<f32>,
}

impl Rows<'_> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, rows: std::ops::Range<usize>, scores: &mut [f32]) {
        self.run_generic(rows, scores)
    }

    /// The rows `rows` of (T*H) (token-major), each written to its own out slice.
    #[inline(always)]
    fn run_generic(&self, rows: std::ops::Range<usize>, scores: &mut [f32]) {
        let (dh, dim) = (self.head_dim, self.n_head * self.head_dim);
        let stride = 3 * dim;
        let Some(first) = rows.clone().next() else { return };
        // The sequence of the first token; later tokens move it forward.
        let mut s = self.seq_starts.partition_point(|&start| start <= first / self.n_head) - 1;
        for row in rows {
            let (t, h) = (row / self.n_head, row % self.n_head);
            while self.seq_starts[s + 1] <= t {
                s += 1;
            }
            let keys = self.seq_starts[s]..self.seq_starts[s + 1];
            let q = &self.qkv[t * stride + h * dh..][..dh];
            let scores = &mut scores[..keys.len()];
            // SAFETY: (t, h) is this thread's row (see `encoder_attention`).
            let o = unsafe { self.out.slice(t * dim + h * dh, dh) };
            attend(q, self.qkv, keys, stride, dim + h * dh, 2 * dim + h * dh, self.scale, scores, o);
        }
    }
}

/// One query row against the keys `keys` (token indices): scores (len) work space, o (Dh).
/// Keys of token j are at `qkv[j*stride + k_off..][..Dh]`, values at `v_off`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend(
    q: &[f32],
    qkv: &[f32],
    keys: std::ops::Range<usize>,
    stride: usize,
    k_off: usize,
    v_off: usize,
    scale: f32,
    scores: &mut [f32],
    o: &mut [f32],
) {
    let dh = q.len();
    let mut max = f32::NEG_INFINITY;
    for (j, score) in keys.clone().zip(scores.iter_mut()) {
        *score = dot8(q, &qkv[j * stride + k_off..][..dh]) * scale;
        max = max.max(*score);
    }
    // Stable softmax: every exponent is <= 0, and the maximum's is exactly 1, so the sum is >= 1.
    let mut sum = 0f32;
    for score in scores.iter_mut() {
        *score = exp_poly(*score - max);
        sum += *score;
    }
    let inv_sum = 1.0 / sum;
    o.fill(0.0);
    for (j, &e) in keys.zip(scores.iter()) {
        let p = e * inv_sum;
        for (acc, &v) in o.iter_mut().zip(&qkv[j * stride + v_off..][..dh]) {
            *acc = p.mul_add(v, *acc);
        }
    }
}

/// a (n) . b (n) in 8 lanes of fused multiply-adds (lane l takes elements l, l+8, ...), summed
/// `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`: one fixed order, vectorized where AVX2 is on.
#[inline(always)]
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    for (l, (&x, &y)) in ar.iter().zip(br).enumerate() {
        acc[l] = x.mul_add(y, acc[l]);
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The definition in f64, one sequence at a time: qkv (T, 3D) -> (T, D).
    fn naive(qkv: &[f32], seq_starts: &[usize], h: usize, dh: usize) -> Vec<f64> {
        let dim = h * dh;
        let t = *seq_starts.last().unwrap();
        let mut out = vec![0f64; t * dim];
        for w in seq_starts.windows(2) {
            for ti in w[0]..w[1] {
                for hi in 0..h {
                    let q = |d: usize| qkv[ti * 3 * dim + hi * dh + d] as f64;
                    let k = |j: usize, d: usize| qkv[j * 3 * dim + dim + hi * dh + d] as f64;
                    let v = |j: usize, d: usize| qkv[j * 3 * dim + 2 * dim + hi * dh + d] as f64;
                    let scores: Vec<f64> = (w[0]..w[1]).map(|j| (0..dh).map(|d| q(d) * k(j, d)).sum::<f64>() / (dh as f64).sqrt()).collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for d in 0..dh {
                        out[ti * dim + hi * dh + d] = (w[0]..w[1]).zip(&e).map(|(j, p)| p / sum * v(j, d)).sum();
                    }
                }
            }
        }
        out
    }

    fn run(pool: &ThreadPool, level: Level, qkv: &[f32], seq_starts: &[usize], h: usize, dh: usize) -> Vec<f32> {
        let t = *seq_starts.last().unwrap();
        let max_len = seq_starts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        let mut out = vec![f32::NAN; t * h * dh];
        let mut scratch = vec![0f32; encoder_attention_scratch(pool.n_threads(), max_len)];
        encoder_attention(pool, level, qkv, seq_starts, h, dh, &mut out, &mut scratch);
        out
    }

    /// Sequences of lengths 1, 7, 0 (empty), 13 and 3; heads of odd width (tails of the dot).
    const STARTS: [usize; 6] = [0, 1, 8, 8, 21, 24];

    #[test]
    fn matches_the_definition_in_f64() {
        for (h, dh) in [(1, 1), (3, 5), (2, 32), (4, 19)] {
            let qkv: Vec<f32> = pseudo_random(24 * 3 * h * dh, 1).iter().map(|v| v * 3.0).collect();
            let want = naive(&qkv, &STARTS, h, dh);
            let got = run(&ThreadPool::new(2), Level::best_available(), &qkv, &STARTS, h, dh);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((*g as f64 - w).abs() < 1e-5, "H={h} Dh={dh} [{i}]: {g} vs {w}");
            }
        }
    }

    #[test]
    fn every_level_and_thread_count_gives_the_same_bits() {
        let (h, dh) = (3, 21);
        let qkv = pseudo_random(24 * 3 * h * dh, 2);
        let want = run(&ThreadPool::new(1), Level::Scalar, &qkv, &STARTS, h, dh);
        for level in Level::all_available() {
            for threads in [1, 2, 3, 5] {
                let got = run(&ThreadPool::new(threads), level, &qkv, &STARTS, h, dh);
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{level:?}, {threads} threads");
            }
        }
    }

    #[test]
    fn a_sequence_gets_the_same_bits_alone_and_in_a_batch() {
        // The padding-mask trap: nothing of another sequence may reach a token's output.
        let (h, dh) = (2, 16);
        let d3 = 3 * h * dh;
        let qkv = pseudo_random(24 * d3, 3);
        let pool = ThreadPool::new(2);
        let batch = run(&pool, Level::best_available(), &qkv, &STARTS, h, dh);
        for w in STARTS.windows(2) {
            let alone = run(&pool, Level::best_available(), &qkv[w[0] * d3..w[1] * d3], &[0, w[1] - w[0]], h, dh);
            assert_eq!(alone, batch[w[0] * h * dh..w[1] * h * dh], "sequence {w:?}");
        }
    }

    #[test]
    fn attention_is_bidirectional() {
        // The first token of a sequence sees the later ones: change only the last token's value
        // and the first token's output moves (a causal mask would keep it).
        let (h, dh) = (1, 4);
        let mut qkv = pseudo_random(5 * 3 * dh, 4);
        let pool = ThreadPool::new(1);
        let before = run(&pool, Level::best_available(), &qkv, &[0, 5], h, dh);
        qkv[4 * 3 * dh + 2 * dh] += 10.0;
        let after = run(&pool, Level::best_available(), &qkv, &[0, 5], h, dh);
        assert_ne!(before[..dh], after[..dh]);
    }

    #[test]
    fn large_scores_do_not_overflow() {
        // Scores near 1e4: an unshifted exp overflows to inf and the output to NaN.
        let (h, dh) = (1, 1);
        let qkv = [100.0f32, 100.0, 1.0, 100.0, 99.0, 2.0];
        let out = run(&ThreadPool::new(1), Level::best_available(), &qkv, &[0, 2], h, dh);
        assert!(out.iter().all(|v| v.is_finite()), "{out:?}");
        // Scores 1e4 and 9.9e3: the second key's weight is e^-100, so both outputs are value 1.
        assert!((out[0] - 1.0).abs() < 1e-6, "{out:?}");
    }
}
