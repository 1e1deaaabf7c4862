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
//! The (token, head) rows are independent and split statically over the pool's threads. A thread
//! takes its rows by (sequence, head): it lays that head's keys out transposed, (Dh, n) with n
//! rounded up to [`LANES`], so that one query's scores against 16 keys are 16 lanes of fused
//! multiply-adds over Dh with no horizontal sums; then the stable softmax with the exponential of
//! [`exp_poly`] (branch-free for arguments <= 0), then the weighted sum of values. Each is one
//! fixed order of operations (written out at [`attend`]), so the scalar code, the AVX2 and the
//! AVX-512 compilations of it give the same bits, and so do all thread counts and batch
//! compositions (tested).

use crate::matmul::Level;
use crate::ops::exp_poly_parts_int;
use crate::pool::{split_range, SharedMut, ThreadPool};

/// Keys per vector of scores: the transposed keys' rows are padded to a multiple of this.
pub const LANES: usize = 16;
/// Partial sums of a score: chain c takes the depths d = c, c + 4, ... (4 chains keep four
/// multiply-adds in flight instead of one dependent chain of Dh).
const CHAINS: usize = 4;

/// Scratch floats [`encoder_attention`] needs: per thread, the transposed keys of one (sequence,
/// head), Dh rows of the longest sequence rounded up to [`LANES`], and one row of scores.
pub fn encoder_attention_scratch(n_threads: usize, max_seq_len: usize, head_dim: usize) -> usize {
    n_threads.max(1) * max_seq_len.div_ceil(LANES) * LANES * (head_dim + 1)
}

/// qkv (T, 3*H*Dh), row t = [q (H, Dh) | k (H, Dh) | v (H, Dh)] of token t; seq_starts (S+1), sequence
/// s = tokens `seq_starts[s]..seq_starts[s+1]` -> out (T, H*Dh). `scratch` holds at least
/// [`encoder_attention_scratch`]`(pool.n_threads(), longest sequence, Dh)` floats.
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
    let per_thread = encoder_attention_scratch(1, max_len, head_dim);
    assert!(scratch.len() >= pool.n_threads() * per_thread, "encoder_attention: scratch too small");
    if t == 0 || dim == 0 {
        return;
    }
    let scale = 1.0 / (head_dim as f32).sqrt();
    let (out_shared, scratch_shared) = (SharedMut::new(out), SharedMut::new(scratch));
    pool.run(&|i, nt| {
        let rows = split_range(t * n_head, i, nt);
        // SAFETY: thread i alone uses its part of the scratch and the out rows of its (token,
        // head) pairs, which no other thread has.
        let scratch = unsafe { scratch_shared.slice(i * per_thread, per_thread) };
        let job = Rows { qkv, seq_starts, n_head, head_dim, scale, out: out_shared };
        #[cfg(target_arch = "x86_64")]
        {
            if level >= Level::Avx512Vnni {
                // SAFETY: the level implies AVX-512 F and FMA.
                return unsafe { job.run_avx512(rows, scratch) };
            }
            if level >= Level::Avx2 {
                // SAFETY: the level implies AVX2 and FMA.
                return unsafe { job.run_avx2(rows, scratch) };
            }
        }
        let _ = level;
        job.run_generic(rows, scratch)
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
    unsafe fn run_avx2(&self, rows: std::ops::Range<usize>, scratch: &mut [f32]) {
        self.run_generic(rows, scratch)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
    unsafe fn run_avx512(&self, rows: std::ops::Range<usize>, scratch: &mut [f32]) {
        self.run_generic(rows, scratch)
    }

    /// The rows `rows` of (T*H) (token-major), each written to its own out slice, taken by
    /// (sequence, head) so that each head's keys are transposed once per thread.
    #[inline(always)]
    fn run_generic(&self, rows: std::ops::Range<usize>, scratch: &mut [f32]) {
        let (h_count, dh) = (self.n_head, self.head_dim);
        let (dim, stride) = (h_count * dh, 3 * h_count * dh);
        if rows.is_empty() {
            return;
        }
        let (first_token, last_token) = (rows.start / h_count, (rows.end - 1) / h_count);
        let mut s = self.seq_starts.partition_point(|&start| start <= first_token) - 1;
        while s + 1 < self.seq_starts.len() && self.seq_starts[s] <= last_token {
            let keys = self.seq_starts[s]..self.seq_starts[s + 1];
            s += 1;
            let n = keys.len();
            if n == 0 {
                continue;
            }
            let padded = n.div_ceil(LANES) * LANES;
            let (kt, rest) = scratch.split_at_mut(dh * padded);
            let scores = &mut rest[..padded];
            // The padding columns stay zero for every head of the sequence.
            kt.fill(0.0);
            // This thread's queries of the sequence: tokens whose (token, h) row is in `rows`.
            let queries = keys.start.max(first_token)..keys.end.min(last_token + 1);
            for h in 0..h_count {
                let mine = |t: &usize| rows.contains(&(t * h_count + h));
                if !queries.clone().any(|t| mine(&t)) {
                    continue;
                }
                // kt (Dh, padded): kt[d][j] = k[keys.start + j][h][d].
                for (j, tok) in keys.clone().enumerate() {
                    let k = &self.qkv[tok * stride + dim + h * dh..][..dh];
                    for (d, &v) in k.iter().enumerate() {
                        kt[d * padded + j] = v;
                    }
                }
                let v_off = 2 * dim + h * dh;
                for t in queries.clone().filter(mine) {
                    let q = &self.qkv[t * stride + h * dh..][..dh];
                    // SAFETY: (t, h) is this thread's row (see `encoder_attention`).
                    let o = unsafe { self.out.slice(t * dim + h * dh, dh) };
                    let values = Values { qkv: self.qkv, first: keys.start, stride, offset: v_off };
                    match dh {
                        32 => attend::<32>(q, kt, padded, n, self.scale, scores, &values, o),
                        64 => attend::<64>(q, kt, padded, n, self.scale, scores, &values, o),
                        _ => attend::<0>(q, kt, padded, n, self.scale, scores, &values, o),
                    }
                }
            }
        }
    }
}

/// Where the values of a (sequence, head) are: key j's at `qkv[(first + j) * stride + offset..][..Dh]`.
struct Values<'a> {
    qkv: &'a [f32],
    first: usize,
    stride: usize,
    offset: usize,
}

/// e^x for x <= 0 (and NaN), as [`exp_poly`](crate::ops::exp_poly) computes it, with no branch:
/// below -120 the result rounds to 0 either way, so the argument is raised to -120 where the
/// polynomial's parts stay meaningful; the scaling by 2^n in f64 rounds once, as exp_poly does.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    let (n, j) = exp_poly_parts_int(x.max(-120.0));
    // n is in [-174, 0] here: 2^n from its exponent bits.
    let two_n = f64::from_bits(((n + 1023) as u32 as u64) << 52);
    let e = (j as f64 * two_n) as f32;
    if x.is_nan() {
        x
    } else {
        e
    }
}

/// acc[l] = fma(a, b[l], acc[l]) for the 16 lanes.
#[inline(always)]
fn fma_lanes(acc: &mut [f32; LANES], a: f32, b: &[f32; LANES]) {
    for l in 0..LANES {
        acc[l] = a.mul_add(b[l], acc[l]);
    }
}

/// One query row against the n keys of its (sequence, head): kt (Dh, padded) the transposed keys,
/// scores (padded) work space, o (Dh). `D` is Dh when the caller knows it at compile time (the
/// outputs are then kept in registers), 0 otherwise; the order of operations is the same:
///
/// ```text
/// score_j = ((c0 + c1) + (c2 + c3)) * scale    c_i = fma chain over d = i, i+4, ... of q[d] * k_j[d], from 0
/// e_j     = exp(score_j - max_j score_j)
/// sum     = e_0 + e_1 + ... + e_(n-1)           in order
/// o[d]    = a[d] + b[d]                          a: fma chain over even j of (e_j / sum) * v_j[d], b: odd j
/// ```
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend<const D: usize>(q: &[f32], kt: &[f32], padded: usize, n: usize, scale: f32, scores: &mut [f32], values: &Values, o: &mut [f32]) {
    let dh = q.len();
    debug_assert!(D == 0 || D == dh);
    let whole = dh / CHAINS * CHAINS;
    for (j0, out) in (0..padded).step_by(LANES).zip(scores[..padded].chunks_exact_mut(LANES)) {
        let row = |d: usize| -> &[f32; LANES] { kt[d * padded + j0..][..LANES].try_into().expect("LANES keys") };
        let (mut c0, mut c1, mut c2, mut c3) = ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
        for d in (0..whole).step_by(CHAINS) {
            fma_lanes(&mut c0, q[d], row(d));
            fma_lanes(&mut c1, q[d + 1], row(d + 1));
            fma_lanes(&mut c2, q[d + 2], row(d + 2));
            fma_lanes(&mut c3, q[d + 3], row(d + 3));
        }
        // The last Dh % 4 depths continue chains 0, 1, 2.
        for (i, d) in (whole..dh).enumerate() {
            match i {
                0 => fma_lanes(&mut c0, q[d], row(d)),
                1 => fma_lanes(&mut c1, q[d], row(d)),
                _ => fma_lanes(&mut c2, q[d], row(d)),
            }
        }
        for (l, o) in out.iter_mut().enumerate() {
            *o = ((c0[l] + c1[l]) + (c2[l] + c3[l])) * scale;
        }
    }
    // The padding keys get -inf (weight 0); the maximum is taken lane-wise (a maximum is the same
    // whatever the order; NaN scores are passed over, as f32::max does).
    scores[n..padded].fill(f32::NEG_INFINITY);
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for chunk in scores[..padded].chunks_exact(LANES) {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = lanes.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    // Stable softmax: every exponent is <= 0, and the maximum's is exactly 1, so the sum is >= 1.
    for chunk in scores[..padded].chunks_exact_mut(LANES) {
        for e in chunk.iter_mut() {
            *e = exp_nonpositive(*e - max);
        }
    }
    let scores = &scores[..n];
    let sum = scores.iter().fold(0f32, |a, &e| a + e);
    let inv_sum = 1.0 / sum;
    let value = |j: usize| &values.qkv[(values.first + j) * values.stride + values.offset..][..dh];
    if D > 0 {
        let (mut even, mut odd) = ([0f32; D], [0f32; D]);
        let pairs = n / 2;
        for i in 0..pairs {
            let (pe, ve) = (scores[2 * i] * inv_sum, &value(2 * i)[..D]);
            let (po, vo) = (scores[2 * i + 1] * inv_sum, &value(2 * i + 1)[..D]);
            for d in 0..D {
                even[d] = pe.mul_add(ve[d], even[d]);
                odd[d] = po.mul_add(vo[d], odd[d]);
            }
        }
        if n % 2 == 1 {
            let (pe, ve) = (scores[n - 1] * inv_sum, &value(n - 1)[..D]);
            for d in 0..D {
                even[d] = pe.mul_add(ve[d], even[d]);
            }
        }
        for d in 0..D {
            o[d] = even[d] + odd[d];
        }
    } else {
        // Any Dh: the same sums, 16 outputs at a time.
        for d0 in (0..dh).step_by(LANES) {
            let width = LANES.min(dh - d0);
            let (mut even, mut odd) = ([0f32; LANES], [0f32; LANES]);
            for (j, &e) in scores.iter().enumerate() {
                let (p, v) = (e * inv_sum, &value(j)[d0..d0 + width]);
                let acc = if j % 2 == 0 { &mut even } else { &mut odd };
                for d in 0..width {
                    acc[d] = p.mul_add(v[d], acc[d]);
                }
            }
            for d in 0..width {
                o[d0 + d] = even[d] + odd[d];
            }
        }
    }
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
        let mut scratch = vec![0f32; encoder_attention_scratch(pool.n_threads(), max_len, dh)];
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
        // Dh 21 takes the general path, 32 and 64 the ones with outputs in registers.
        for (h, dh) in [(3, 21), (2, 32), (2, 64)] {
            let qkv = pseudo_random(24 * 3 * h * dh, 2);
            let want = run(&ThreadPool::new(1), Level::Scalar, &qkv, &STARTS, h, dh);
            for level in Level::all_available() {
                for threads in [1, 2, 3, 5] {
                    let got = run(&ThreadPool::new(threads), level, &qkv, &STARTS, h, dh);
                    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "Dh={dh} {level:?}, {threads} threads");
                }
            }
        }
    }

    #[test]
    fn the_branch_free_exponential_is_exp_poly_at_and_below_zero() {
        let mut x = 0f32;
        while x > -130.0 {
            assert_eq!(exp_nonpositive(x).to_bits(), crate::ops::exp_poly(x).to_bits(), "e^{x}");
            x -= 0.0137;
        }
        for x in [-0.0, -1e-30, -87.3, -103.9, -103.98, -104.5, -1e10, f32::NEG_INFINITY] {
            assert_eq!(exp_nonpositive(x).to_bits(), crate::ops::exp_poly(x).to_bits(), "e^{x}");
        }
        assert!(exp_nonpositive(f32::NAN).is_nan());
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
