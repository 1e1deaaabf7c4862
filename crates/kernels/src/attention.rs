//! Causal scaled dot-product attention with grouped-query heads over an f16 KV cache.

use crate::ops::softmax_inplace;
use crate::pool::{split_range, SharedMut, ThreadPool};
use half::f16;

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

/// Scratch floats each thread needs for [`attention`]: a row of scores over S positions and one
/// query head.
pub fn attention_scratch_per_thread(max_positions: usize, head_dim: usize) -> usize {
    max_positions + head_dim
}

/// q (T, H, Dh), k (S, Hkv, Dh) f16, v (S, Hkv, Dh) f16 -> out (T, H, Dh).
///
/// Scores are `q . k / sqrt(Dh)`; the causal mask lets a token see every position up to and
/// including its own (the diagonal). The query is rounded to f16 before the product, as the peers
/// do when their cache is f16. `scratch` holds `n_threads * attention_scratch_per_thread(S, Dh)`
/// floats; (token, head) pairs are split statically over the threads.
pub fn attention(
    pool: &ThreadPool,
    shape: AttentionShape,
    q: &[f32],
    k: &[f16],
    v: &[f16],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let AttentionShape { n_tokens, start, n_head, n_head_kv, head_dim } = shape;
    let kv_dim = n_head_kv * head_dim;
    let seen = start + n_tokens; // S: positions the last token sees
    assert!(n_head % n_head_kv == 0, "attention: {n_head} query heads are not a multiple of {n_head_kv} KV heads");
    assert!(q.len() == n_tokens * n_head * head_dim && out.len() == q.len(), "attention: q/out shape mismatch");
    assert!(k.len() >= seen * kv_dim && v.len() >= seen * kv_dim, "attention: KV cache shorter than {seen} positions");
    let per_thread = attention_scratch_per_thread(seen, head_dim);
    assert!(scratch.len() >= pool.n_threads() * per_thread, "attention: scratch too small");
    let group = n_head / n_head_kv;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let out_ptr = SharedMut::new(out);
    let scratch_ptr = SharedMut::new(scratch);
    pool.run(&|i, nt| {
        // SAFETY: thread i owns scratch[i * per_thread..][..per_thread] and the out rows of its pairs.
        let mine = unsafe { scratch_ptr.slice(i * per_thread, per_thread) };
        let (scores, qh) = mine.split_at_mut(seen);
        for pair in split_range(n_tokens * n_head, i, nt) {
            let (t, h) = (pair / n_head, pair % n_head);
            let kvh = h / group;
            let n_seen = start + t + 1;
            let q_row = &q[pair * head_dim..(pair + 1) * head_dim];
            for (d, &x) in qh.iter_mut().zip(q_row) {
                *d = f16::from_f32(x).to_f32();
            }
            for (s, score) in scores[..n_seen].iter_mut().enumerate() {
                let k_row = &k[s * kv_dim + kvh * head_dim..][..head_dim];
                let mut dot = 0.0f32;
                for (a, b) in qh.iter().zip(k_row) {
                    dot += a * b.to_f32();
                }
                *score = dot * scale;
            }
            softmax_inplace(&mut scores[..n_seen]);
            let o = unsafe { out_ptr.slice(pair * head_dim, head_dim) };
            o.iter_mut().for_each(|x| *x = 0.0);
            for (s, &p) in scores[..n_seen].iter().enumerate() {
                let v_row = &v[s * kv_dim + kvh * head_dim..][..head_dim];
                for (a, b) in o.iter_mut().zip(v_row) {
                    *a += p * b.to_f32();
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_f16(x: &[f32]) -> Vec<f16> {
        x.iter().map(|&v| f16::from_f32(v)).collect()
    }

    /// Plain f64 attention for one query row against `n` positions of one KV head.
    fn naive(q: &[f32], k: &[f32], v: &[f32], n: usize, dh: usize) -> Vec<f64> {
        let scores: Vec<f64> = (0..n)
            .map(|s| (0..dh).map(|d| q[d] as f64 * k[s * dh + d] as f64).sum::<f64>() / (dh as f64).sqrt())
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let z: f64 = e.iter().sum();
        (0..dh).map(|d| (0..n).map(|s| e[s] / z * v[s * dh + d] as f64).sum()).collect()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 200) as f32 / 100.0 - 1.0).collect()
    }

    #[test]
    fn causal_mask_includes_the_diagonal() {
        // One head, two positions. Token 0 must attend only to itself, so its output is v[0].
        let dh = 4;
        let k = to_f16(&[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        let v = to_f16(&[1.0, 2.0, 3.0, 4.0, -5.0, -6.0, -7.0, -8.0]);
        let q = [0.5f32, 0.5, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0];
        let mut out = [0f32; 8];
        let pool = ThreadPool::new(1);
        let shape = AttentionShape { n_tokens: 2, start: 0, n_head: 1, n_head_kv: 1, head_dim: dh };
        let mut scratch = vec![0f32; attention_scratch_per_thread(2, dh)];
        attention(&pool, shape, &q, &k, &v, &mut out, &mut scratch);
        assert_eq!(&out[..4], &[1.0, 2.0, 3.0, 4.0]);
        // Token 1 sees both with equal scores: the mean.
        for (o, want) in out[4..].iter().zip([-2.0, -2.0, -2.0, -2.0]) {
            assert!((o - want).abs() < 1e-6);
        }
    }

    #[test]
    fn scores_are_scaled_by_one_over_sqrt_head_dim() {
        // Two positions whose keys give raw scores 0 and 8 with Dh = 16: scaled 0 and 2.
        let dh = 16;
        let mut k = vec![0f32; 2 * dh];
        k[dh] = 8.0;
        let mut v = vec![0f32; 2 * dh];
        v[dh] = 1.0; // out[0] = p(position 1)
        let mut q = vec![0f32; dh];
        q[0] = 1.0;
        let mut out = vec![0f32; dh];
        let pool = ThreadPool::new(1);
        let shape = AttentionShape { n_tokens: 1, start: 1, n_head: 1, n_head_kv: 1, head_dim: dh };
        let mut scratch = vec![0f32; attention_scratch_per_thread(2, dh)];
        attention(&pool, shape, &q, &to_f16(&k), &to_f16(&v), &mut out, &mut scratch);
        let want = 2.0f32.exp() / (1.0 + 2.0f32.exp());
        assert!((out[0] - want).abs() < 1e-6, "{} vs {want}", out[0]);
    }

    #[test]
    fn grouped_query_heads_read_their_kv_head_and_match_naive() {
        let (t, start, h, hkv, dh) = (3, 2, 6, 2, 8);
        let s = start + t;
        let q = values(t * h * dh, 1).iter().map(|v| f16::from_f32(*v).to_f32()).collect::<Vec<_>>();
        let kf = values(s * hkv * dh, 2);
        let vf = values(s * hkv * dh, 3);
        let (k, v) = (to_f16(&kf), to_f16(&vf));
        let pool = ThreadPool::new(2);
        let shape = AttentionShape { n_tokens: t, start, n_head: h, n_head_kv: hkv, head_dim: dh };
        let mut out = vec![0f32; t * h * dh];
        let mut scratch = vec![0f32; 2 * attention_scratch_per_thread(s, dh)];
        attention(&pool, shape, &q, &k, &v, &mut out, &mut scratch);
        for ti in 0..t {
            for hi in 0..h {
                let kvh = hi / (h / hkv);
                let gather = |src: &[f16]| -> Vec<f32> {
                    (0..s).flat_map(|p| (0..dh).map(move |d| (p, d))).map(|(p, d)| src[p * hkv * dh + kvh * dh + d].to_f32()).collect()
                };
                let want = naive(&q[(ti * h + hi) * dh..][..dh], &gather(&k), &gather(&v), start + ti + 1, dh);
                for (o, w) in out[(ti * h + hi) * dh..][..dh].iter().zip(&want) {
                    assert!((*o as f64 - w).abs() < 1e-5, "t {ti} h {hi}: {o} vs {w}");
                }
            }
        }
    }
}
