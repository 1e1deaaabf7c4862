//! Attention kernels against plain references and each other.

use super::*;
use half::f16;

/// A contiguous cache: blocks of one position, identity table.
fn identity(n: usize) -> Vec<u32> {
    (0..n as u32).collect()
}

fn view<'a>(k: &'a [f16], v: &'a [f16], hkv: usize, dh: usize, table: &'a [u32]) -> KvView<'a> {
    KvView::position_major(k, v, table, 1, hkv * dh, dh)
}

fn to_f16(x: &[f32]) -> Vec<f16> {
    x.iter().map(|&v| f16::from_f32(v)).collect()
}

/// Plain f64 attention for one query row against `n` positions of one KV head.
fn naive(q: &[f32], k: &[f32], v: &[f32], n: usize, dh: usize) -> Vec<f64> {
    let scores: Vec<f64> = (0..n).map(|s| (0..dh).map(|d| q[d] as f64 * k[s * dh + d] as f64).sum::<f64>() / (dh as f64).sqrt()).collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let z: f64 = e.iter().sum();
    (0..dh).map(|d| (0..n).map(|s| e[s] / z * v[s * dh + d] as f64).sum()).collect()
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 200) as f32 / 100.0 - 1.0).collect()
}

#[test]
fn simd_attention_matches_scalar_bit_for_bit() {
    // Both orders (several tokens, one token), positions past 16 and 64, GQA groups of 3.
    let mut cases = vec![(5, 70, 6, 2, 64), (1, 83, 6, 2, 64), (1, 3, 6, 2, 64), (17, 0, 6, 2, 64), (9, 30, 9, 3, 32), (4, 5, 4, 4, 48)];
    // Groups of 4 and 8 query heads (fewer registers per head in the AVX2 value pass), heads of
    // 16 and 128 (two score passes of 64 dimensions).
    cases.extend([(6, 40, 8, 1, 128), (3, 20, 8, 2, 16), (7, 9, 12, 3, 64)]);
    // One token at every position count around the 16-position score blocks and the 64 value
    // slots, with heads of 64 and 128 (alone, a token's heads run one at a time; the grouped
    // kernel is checked against these in `per_token_order_equals_one_call_per_token_bit_for_bit`).
    for start in [0, 14, 15, 16, 62, 63, 64, 129, 199] {
        cases.extend([(1, start, 9, 3, 64), (1, start, 8, 1, 128), (1, start, 2, 2, 64)]);
    }
    for (t, start, h, hkv, dh) in cases {
        let s = start + t;
        let q = values(t * h * dh, 4);
        let k = to_f16(&values(s * hkv * dh, 5));
        let v = to_f16(&values(s * hkv * dh, 6));
        let pool = ThreadPool::new(2);
        let shape = AttentionShape { n_tokens: t, start, n_head: h, n_head_kv: hkv, head_dim: dh };
        let mut scratch = vec![0f32; 2 * attention_scratch_per_thread(s, dh)];
        let mut want = vec![0f32; t * h * dh];
        let table = identity(s);
        attention(&pool, Level::Scalar, shape, &q, view(&k, &v, hkv, dh, &table), &mut want, &mut scratch);
        for level in Level::all_available() {
            let mut got = vec![0f32; t * h * dh];
            attention(&pool, level, shape, &q, view(&k, &v, hkv, dh, &table), &mut got, &mut scratch);
            assert_eq!(got, want, "{level:?}, {t} tokens from {start}");
            // The same on the caller alone, as the pool runs jobs while the machine is contended.
            pool.force_solo(true);
            attention(&pool, level, shape, &q, view(&k, &v, hkv, dh, &table), &mut got, &mut scratch);
            pool.force_solo(false);
            assert_eq!(got, want, "{level:?}, {t} tokens from {start}, solo");
        }
    }
}

#[test]
fn paged_cache_in_shuffled_blocks_equals_contiguous() {
    // 37 positions in blocks of 8 (5 blocks), placed in a pool of 7 blocks in shuffled order;
    // and blocks of 32 (the model's size, where 16 positions always share a block) for one
    // token and for several, past the 64 value slots.
    paged_case(6, 31, 8, &[5, 0, 6, 2, 3], 7);
    paged_case(1, 100, 32, &[2, 0, 3, 1], 5);
    paged_case(6, 90, 32, &[3, 1, 0, 2], 4);
}

fn paged_case(t: usize, start: usize, bs: usize, table: &[u32], pool_blocks: usize) {
    let (h, hkv, dh) = (6, 2, 64);
    let s = start + t;
    let kv_dim = hkv * dh;
    let q = values(t * h * dh, 11);
    let (k, v) = (to_f16(&values(s * kv_dim, 12)), to_f16(&values(s * kv_dim, 13)));
    let mut kp = vec![f16::ZERO; pool_blocks * bs * kv_dim];
    let mut vp = kp.clone();
    for pos in 0..s {
        let row = (table[pos / bs] as usize * bs + pos % bs) * kv_dim;
        kp[row..row + kv_dim].copy_from_slice(&k[pos * kv_dim..(pos + 1) * kv_dim]);
        vp[row..row + kv_dim].copy_from_slice(&v[pos * kv_dim..(pos + 1) * kv_dim]);
    }
    // The same positions head-major, as the model's pool holds them: blocks of (2 layers, Hkv,
    // bs, Dh), this being the second layer.
    let (layer_span, block_stride) = (bs * kv_dim, 2 * bs * kv_dim);
    let mut kh = vec![f16::ZERO; pool_blocks * block_stride];
    let mut vh = kh.clone();
    for pos in 0..s {
        for head in 0..hkv {
            let at = table[pos / bs] as usize * block_stride + layer_span + head * bs * dh + pos % bs * dh;
            let from = pos * kv_dim + head * dh;
            kh[at..at + dh].copy_from_slice(&k[from..from + dh]);
            vh[at..at + dh].copy_from_slice(&v[from..from + dh]);
        }
    }
    let head_major = KvView {
        keys: &kh[layer_span..],
        values: &vh[layer_span..],
        table,
        block_size: bs,
        kv_dim,
        block_stride,
        pos_stride: dh,
        head_stride: bs * dh,
    };
    assert!(head_major.holds_heads(hkv, dh) && head_major.covers(s));
    let pool = ThreadPool::new(2);
    let shape = AttentionShape { n_tokens: t, start, n_head: h, n_head_kv: hkv, head_dim: dh };
    let mut scratch = vec![0f32; 2 * attention_scratch_per_thread(s, dh)];
    for level in Level::all_available() {
        for per_token in [false, true] {
            let mut want = vec![0f32; t * h * dh];
            attention_with(
                &pool,
                level,
                SumOrder::LlamaCpp,
                shape,
                &q,
                view(&k, &v, hkv, dh, &identity(s)),
                &mut want,
                &mut scratch,
                FLASH_MIN_POSITIONS,
                per_token,
            );
            let mut got = vec![0f32; t * h * dh];
            let paged = KvView::position_major(&kp, &vp, table, bs, kv_dim, dh);
            attention_with(&pool, level, SumOrder::LlamaCpp, shape, &q, paged, &mut got, &mut scratch, FLASH_MIN_POSITIONS, per_token);
            assert_eq!(got, want, "{level:?}, blocks of {bs}, {t} tokens from {start}, per-token order {per_token}");
            let mut got = vec![0f32; t * h * dh];
            attention_with(&pool, level, SumOrder::LlamaCpp, shape, &q, head_major, &mut got, &mut scratch, FLASH_MIN_POSITIONS, per_token);
            assert_eq!(got, want, "{level:?}, head-major blocks of {bs}, {t} tokens from {start}, per-token order {per_token}");
        }
    }
}

#[test]
fn online_softmax_kernel_agrees_with_the_exact_kernels() {
    // 300 positions with the online kernel forced on from 0, against the exact kernels.
    let (t, start, h, hkv, dh) = (3, 297, 4, 2, 32);
    let s = start + t;
    let q = values(t * h * dh, 41);
    let (k, v) = (to_f16(&values(s * hkv * dh, 42)), to_f16(&values(s * hkv * dh, 43)));
    let table = identity(s);
    let pool = ThreadPool::new(2);
    let shape = AttentionShape { n_tokens: t, start, n_head: h, n_head_kv: hkv, head_dim: dh };
    let mut scratch = vec![0f32; 2 * attention_scratch_per_thread(s, dh)];
    let mut exact = vec![0f32; t * h * dh];
    attention(&pool, Level::Scalar, shape, &q, view(&k, &v, hkv, dh, &table), &mut exact, &mut scratch);
    for level in Level::all_available() {
        let mut online = vec![0f32; t * h * dh];
        attention_with(&pool, level, SumOrder::LlamaCpp, shape, &q, view(&k, &v, hkv, dh, &table), &mut online, &mut scratch, 0, false);
        let scale = exact.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (a, b) in online.iter().zip(&exact) {
            // The exact kernels round probabilities to f16 (2^-11 relative).
            assert!((a - b).abs() <= 1e-3 * scale, "{level:?}: {a} vs {b}");
        }
        // Against f64, with the query rounded to f16 as the kernels do.
        for ti in 0..t {
            for hi in 0..h {
                let kvh = hi / (h / hkv);
                let gather = |src: &[f16]| -> Vec<f32> {
                    (0..s).flat_map(|p| (0..dh).map(move |d| (p, d))).map(|(p, d)| src[p * hkv * dh + kvh * dh + d].to_f32()).collect()
                };
                let qr: Vec<f32> = q[(ti * h + hi) * dh..][..dh].iter().map(|x| f16::from_f32(*x).to_f32()).collect();
                let want = naive(&qr, &gather(&k), &gather(&v), start + ti + 1, dh);
                for (o, w) in online[(ti * h + hi) * dh..][..dh].iter().zip(&want) {
                    assert!((*o as f64 - w).abs() < 1e-5, "{level:?} t {ti} h {hi}: {o} vs {w}");
                }
            }
        }
    }
}

#[test]
fn per_token_order_equals_one_call_per_token_bit_for_bit() {
    // Short and long contexts (past 64 slots), groups of 3 and 2, Dh 64 and 128: with enough
    // units the batch groups heads, alone a token does not; the bits must not change.
    // (10, 20, 8, 1) and (8, 30, 8, 2) have enough units for the grouped kernel with groups of 8 and 4.
    for (t, start, h, hkv, dh) in
        [(5, 20, 6, 2, 64), (4, 150, 9, 3, 64), (5, 70, 4, 2, 128), (4, 0, 8, 1, 64), (6, 60, 8, 1, 128), (10, 20, 8, 1, 64), (8, 30, 8, 2, 64)]
    {
        per_token_order_case(t, start, h, hkv, dh);
    }
}

fn per_token_order_case(t: usize, start: usize, h: usize, hkv: usize, dh: usize) {
    let s = start + t;
    let q = values(t * h * dh, 51);
    let (k, v) = (to_f16(&values(s * hkv * dh, 52)), to_f16(&values(s * hkv * dh, 53)));
    let table = identity(s);
    let pool = ThreadPool::new(2);
    let mut scratch = vec![0f32; 2 * attention_scratch_per_thread(s, dh)];
    for level in Level::all_available() {
        let shape = AttentionShape { n_tokens: t, start, n_head: h, n_head_kv: hkv, head_dim: dh };
        let mut batch = vec![0f32; t * h * dh];
        attention_per_token_order(&pool, level, shape, &q, view(&k, &v, hkv, dh, &table), &mut batch, &mut scratch);
        for ti in 0..t {
            let one = AttentionShape { n_tokens: 1, start: start + ti, ..shape };
            let mut single = vec![0f32; h * dh];
            attention(&pool, level, one, &q[ti * h * dh..(ti + 1) * h * dh], view(&k, &v, hkv, dh, &table), &mut single, &mut scratch);
            assert_eq!(&batch[ti * h * dh..(ti + 1) * h * dh], &single[..], "{level:?} token {ti}");
        }
    }
}

#[test]
fn segments_of_several_sequences_equal_one_call_each_bit_for_bit() {
    // Three sequences in one shared pool of blocks of 8: a 1-token decode at 40, a 5-token
    // chunk at 9 and a 1-token decode at 2; each must get the bits of a call of its own.
    let (h, hkv, dh, bs) = (6, 2, 64, 8);
    let kv_dim = hkv * dh;
    let n_blocks = 12;
    let kp = to_f16(&values(n_blocks * bs * kv_dim, 61));
    let vp = to_f16(&values(n_blocks * bs * kv_dim, 62));
    let tables: [Vec<u32>; 3] = [vec![3, 7, 0, 9, 11, 1], vec![5, 2], vec![10]];
    let parts = [(1usize, 40usize), (5, 9), (1, 2)];
    let t: usize = parts.iter().map(|p| p.0).sum();
    let q = values(t * h * dh, 63);
    let pool = ThreadPool::new(2);
    let heads = Heads { n_head: h, n_head_kv: hkv, head_dim: dh };
    let mut scratch = vec![0f32; 2 * attention_scratch_per_thread(41, dh)];
    for (level, sums) in Level::all_available().into_iter().flat_map(|l| [(l, SumOrder::LlamaCpp), (l, SumOrder::Blocks)]) {
        for per_token in [false, true] {
            let mut segs = Vec::new();
            let mut first = 0;
            let layer = KvView::position_major(&kp, &vp, &[], bs, kv_dim, dh);
            for ((n, start), table) in parts.iter().zip(&tables) {
                segs.push(AttentionSegment { first_token: first, n_tokens: *n, start: *start, table });
                first += n;
            }
            let mut got = vec![0f32; t * h * dh];
            attention_segments(&pool, level, sums, heads, layer, &segs, &q, &mut got, &mut scratch, per_token);
            // The fused quantization: the same output, and its blocks as a separate pass makes them.
            let (mut fused, mut fused_q) = (vec![0f32; t * h * dh], vec![crate::BlockQ8::default(); t * h * dh / crate::QK]);
            attention_segments_q8(&pool, level, sums, heads, layer, &segs, &q, &mut fused, &mut fused_q, &mut scratch, per_token);
            let mut want_q = vec![crate::BlockQ8::default(); t * h * dh / crate::QK];
            crate::quant::quantize_row_q8(&got, &mut want_q);
            assert_eq!((&fused, &fused_q), (&got, &want_q), "{level:?} {sums:?} per_token {per_token}: fused quantization");
            for seg in &segs {
                let rows = seg.first_token * h * dh..(seg.first_token + seg.n_tokens) * h * dh;
                let shape = AttentionShape { n_tokens: seg.n_tokens, start: seg.start, n_head: h, n_head_kv: hkv, head_dim: dh };
                let mut want = vec![0f32; rows.len()];
                let kv = KvView { table: seg.table, ..layer };
                attention_with(&pool, level, sums, shape, &q[rows.clone()], kv, &mut want, &mut scratch, FLASH_MIN_POSITIONS, per_token);
                assert_eq!(&got[rows], &want[..], "{level:?} {sums:?} per_token {per_token} segment at {}", seg.start);
            }
        }
    }
}

#[test]
fn split_decode_steps_equal_one_thread_bit_for_bit() {
    // A decode step of three sequences with one KV head (a group of 8) has 3 units for 2 threads: each token's
    // chunks of 256 positions are spread over the threads and merged by whoever finishes last.
    // The bits must be those of one thread doing the chunks in turn, for every sequence.
    let (h, hkv, dh, bs) = (8, 1, 64, 24); // blocks of 24: not a power of two, nor a multiple of the tiles // blocks of 24: not a power of two, nor a multiple of the tiles
    let kv_dim = hkv * dh;
    let n_blocks = 100;
    let kp = to_f16(&values(n_blocks * bs * kv_dim, 91));
    let vp = to_f16(&values(n_blocks * bs * kv_dim, 92));
    // Shuffled, disjoint tables: 37, 50 and 10 blocks.
    let order: Vec<u32> = (0..n_blocks as u32).map(|b| (b * 37 + 11) % n_blocks as u32).collect();
    let tables = [&order[..37], &order[37..87], &order[87..97]];
    let starts = [37 * bs - 1, 50 * bs - 3, 10 * bs - 1];
    let q = values(3 * h * dh, 93);
    let heads = Heads { n_head: h, n_head_kv: hkv, head_dim: dh };
    let layer = KvView::position_major(&kp, &vp, &[], bs, kv_dim, dh);
    let segs: Vec<AttentionSegment> =
        starts.iter().zip(tables).enumerate().map(|(i, (&start, table))| AttentionSegment { first_token: i, n_tokens: 1, start, table }).collect();
    let mut scratch = vec![0f32; 4 * attention_scratch_per_thread(50 * bs, dh)];
    for level in Level::all_available() {
        let mut results = Vec::new();
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            let mut out = vec![0f32; 3 * h * dh];
            attention_segments(&pool, level, SumOrder::Blocks, heads, layer, &segs, &q, &mut out, &mut scratch, false);
            results.push(out);
        }
        assert_eq!(results[0], results[1], "{level:?}: 2 threads");
        assert_eq!(results[0], results[2], "{level:?}: 3 threads");
        // And each sequence alone, against f64.
        let (k16, v16): (Vec<f32>, Vec<f32>) = (kp.iter().map(|x| x.to_f32()).collect(), vp.iter().map(|x| x.to_f32()).collect());
        for (i, seg) in segs.iter().enumerate() {
            let n = seg.start + 1;
            let kv = KvView { table: seg.table, ..layer };
            let pick = |x: &[f32]| -> Vec<f32> { (0..n).flat_map(|p| x[kv.row(p)..][..dh].to_vec()).collect() };
            for head in 0..h {
                let exact = naive(&q[(i * h + head) * dh..][..dh], &pick(&k16), &pick(&v16), n, dh);
                for (d, e) in exact.iter().enumerate() {
                    let got = results[1][(i * h + head) * dh + d] as f64;
                    assert!((got - e).abs() < 2e-6, "{level:?} sequence {i} head {head} dim {d}: {got} vs {e}");
                }
            }
        }
    }
}

#[test]
fn kv_view_rejects_tables_outside_the_pool() {
    let k = vec![f16::ZERO; 2 * 4 * 8];
    let table = [1u32, 2];
    let kv = KvView::position_major(&k, &k, &table, 4, 8, 4);
    assert!(kv.covers(4)); // block 1 exists
    assert!(!kv.covers(5)); // block 2 does not
    assert!(!kv.covers(9)); // the table holds 8 positions
    assert!(kv.holds_heads(2, 4));
    assert!(!kv.holds_heads(1, 4)); // Hkv * Dh must be the row width
                                    // Strides that would run a head past its block's elements.
    assert!(!KvView { head_stride: 8, ..kv }.holds_heads(2, 4));
    assert!(!KvView { pos_stride: 16, ..kv }.holds_heads(2, 4));
    // Head-major with layers side by side: a block's second layer reaches the end exactly.
    let k = vec![f16::ZERO; 2 * 2 * 4 * 8];
    let table = [1u32];
    let layer1 =
        KvView { keys: &k[32..], values: &k[32..], table: &table, block_size: 4, kv_dim: 8, block_stride: 64, pos_stride: 4, head_stride: 16 };
    assert!(layer1.holds_heads(2, 4) && layer1.covers(4));
    assert!(!KvView { keys: &k[33..], values: &k[33..], ..layer1 }.covers(4));
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
    attention(&pool, Level::Scalar, shape, &q, view(&k, &v, 1, dh, &identity(2)), &mut out, &mut scratch);
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
    let (k, v) = (to_f16(&k), to_f16(&v));
    attention(&pool, Level::Scalar, shape, &q, view(&k, &v, 1, dh, &identity(2)), &mut out, &mut scratch);
    let want = 2.0f32.exp() / (1.0 + 2.0f32.exp());
    // Probabilities are rounded to f16 (relative error 2^-11) before the value product.
    assert!((out[0] - want).abs() < 5e-4, "{} vs {want}", out[0]);
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
    attention(&pool, Level::Scalar, shape, &q, view(&k, &v, hkv, dh, &identity(s)), &mut out, &mut scratch);
    for ti in 0..t {
        for hi in 0..h {
            let kvh = hi / (h / hkv);
            let gather = |src: &[f16]| -> Vec<f32> {
                (0..s).flat_map(|p| (0..dh).map(move |d| (p, d))).map(|(p, d)| src[p * hkv * dh + kvh * dh + d].to_f32()).collect()
            };
            let want = naive(&q[(ti * h + hi) * dh..][..dh], &gather(&k), &gather(&v), start + ti + 1, dh);
            for (o, w) in out[(ti * h + hi) * dh..][..dh].iter().zip(&want) {
                // f16 probabilities: relative error 2^-11 per term.
                assert!((*o as f64 - w).abs() < 1e-3, "t {ti} h {hi}: {o} vs {w}");
            }
        }
    }
}

/// Shapes for the block-order kernel: one token and several, positions around its tiles of 32
/// and chunks of 256 and far past them, groups of 1 to 8 heads, head widths from 8 to 128. With
/// two threads, the one-token cases with few KV heads split their chunks over the threads; at
/// SIMD levels prompts go in blocks of consecutive tokens, whose later tokens' extra positions
/// may fall inside a tile, open a tile (32, 288) or open a chunk (256).
const BLOCK_ORDER_CASES: [(usize, usize, usize, usize, usize); 24] = [
    (1, 0, 9, 3, 64),
    (1, 7, 9, 3, 64),
    (1, 8, 9, 3, 64),
    (5, 70, 6, 2, 64),
    (17, 0, 6, 2, 64),
    (9, 30, 9, 3, 32),
    (4, 5, 4, 4, 48),
    (6, 40, 8, 1, 128),
    (3, 20, 8, 2, 16),
    (7, 9, 12, 3, 64),
    (2, 300, 2, 2, 8),
    (1, 1000, 9, 3, 64),
    (3, 13, 7, 1, 24),
    (2, 33, 10, 2, 40),
    (1, 31, 9, 3, 64),
    (1, 255, 9, 3, 64),
    (1, 256, 9, 3, 64),
    (3, 510, 4, 1, 32),
    (1, 700, 4, 4, 64),
    (2, 767, 8, 1, 64),
    (2, 31, 9, 3, 64),
    (2, 255, 6, 2, 64),
    (4, 62, 6, 3, 64),
    (3, 287, 9, 3, 64),
];

#[test]
fn block_order_kernel_matches_its_reference_and_f64() {
    // Every level gives the bits of the scalar reference (`online.rs`), and all are within a
    // few f32 roundings of exact attention on the same f16 keys and values.
    let mut worst = 0.0f64;
    for (t, start, h, hkv, dh) in BLOCK_ORDER_CASES {
        let s = start + t;
        let q = values(t * h * dh, 71);
        let (kf, vf) = (values(s * hkv * dh, 72), values(s * hkv * dh, 73));
        let (k, v) = (to_f16(&kf), to_f16(&vf));
        let pool = ThreadPool::new(2);
        let shape = AttentionShape { n_tokens: t, start, n_head: h, n_head_kv: hkv, head_dim: dh };
        let mut scratch = vec![0f32; 2 * attention_scratch_per_thread(s, dh)];
        let table = identity(s);
        let mut want = vec![0f32; t * h * dh];
        attention_with(
            &pool,
            Level::Scalar,
            SumOrder::Blocks,
            shape,
            &q,
            view(&k, &v, hkv, dh, &table),
            &mut want,
            &mut scratch,
            FLASH_MIN_POSITIONS,
            false,
        );
        for level in Level::all_available() {
            let mut got = vec![0f32; t * h * dh];
            attention_with(
                &pool,
                level,
                SumOrder::Blocks,
                shape,
                &q,
                view(&k, &v, hkv, dh, &table),
                &mut got,
                &mut scratch,
                FLASH_MIN_POSITIONS,
                false,
            );
            assert_eq!(got, want, "{level:?}, {t} tokens from {start}, {h}/{hkv} heads of {dh}");
        }
        // Against f64 on the f16 values, head by head.
        let (k16, v16): (Vec<f32>, Vec<f32>) = (k.iter().map(|x| x.to_f32()).collect(), v.iter().map(|x| x.to_f32()).collect());
        for ti in 0..t {
            let n = start + ti + 1;
            for head in 0..h {
                let kvh = head / (h / hkv);
                let pick = |x: &[f32]| -> Vec<f32> { (0..n).flat_map(|p| x[(p * hkv + kvh) * dh..][..dh].to_vec()).collect() };
                let exact = naive(&q[(ti * h + head) * dh..][..dh], &pick(&k16), &pick(&v16), n, dh);
                for (d, e) in exact.iter().enumerate() {
                    let err = (want[(ti * h + head) * dh + d] as f64 - e).abs();
                    worst = worst.max(err);
                    assert!(err < 2e-6, "{t} tokens from {start}, head {head}, dim {d}: {} vs {e}", want[(ti * h + head) * dh + d]);
                }
            }
        }
    }
    eprintln!("block order: largest difference from f64 {worst:.2e}");
}

#[test]
fn block_order_gives_a_token_the_same_bits_in_any_batch() {
    // A token alone, in a batch (a prompt), and in a batch with per-token order asked for: the
    // same bits, so that verifying drafts in one forward reproduces step-by-step decoding and a
    // prompt's last logits are those of decoding it token by token.
    for (t, start, h, hkv, dh) in BLOCK_ORDER_CASES {
        let s = start + t;
        let q = values(t * h * dh, 81);
        let (k, v) = (to_f16(&values(s * hkv * dh, 82)), to_f16(&values(s * hkv * dh, 83)));
        let table = identity(s);
        let pool = ThreadPool::new(2);
        let mut scratch = vec![0f32; 2 * attention_scratch_per_thread(s, dh)];
        for level in Level::all_available() {
            let shape = AttentionShape { n_tokens: t, start, n_head: h, n_head_kv: hkv, head_dim: dh };
            let (mut batch, mut per_token) = (vec![0f32; t * h * dh], vec![0f32; t * h * dh]);
            attention_with(
                &pool,
                level,
                SumOrder::Blocks,
                shape,
                &q,
                view(&k, &v, hkv, dh, &table),
                &mut batch,
                &mut scratch,
                FLASH_MIN_POSITIONS,
                false,
            );
            attention_with(
                &pool,
                level,
                SumOrder::Blocks,
                shape,
                &q,
                view(&k, &v, hkv, dh, &table),
                &mut per_token,
                &mut scratch,
                FLASH_MIN_POSITIONS,
                true,
            );
            assert_eq!(batch, per_token, "{level:?}");
            for ti in 0..t {
                let one = AttentionShape { n_tokens: 1, start: start + ti, ..shape };
                let mut single = vec![0f32; h * dh];
                attention_blocks(&pool, level, one, &q[ti * h * dh..(ti + 1) * h * dh], view(&k, &v, hkv, dh, &table), &mut single, &mut scratch);
                assert_eq!(&batch[ti * h * dh..(ti + 1) * h * dh], &single[..], "{level:?} token {ti}");
            }
        }
    }
}

#[test]
fn attention_softmax_is_stable_for_scores_near_1e4() {
    // 20 positions (a chunk of 16 and a partial one), scores 1e4 - i/4.
    let mut scores: Vec<f32> = (0..20).map(|i| 1e4 - i as f32 * 0.25).collect();
    softmax_lanes(&mut scores);
    let z: f64 = (0..20).map(|i| (-(i as f64) * 0.25).exp()).sum();
    for (i, &p) in scores.iter().enumerate() {
        let want = (-(i as f64) * 0.25).exp() / z;
        assert!(p.is_finite() && (p as f64 - want).abs() < 1e-6, "position {i}: {p} vs {want}");
    }
}

#[test]
fn consecutive_query_heads_share_a_kv_head() {
    // The trap: `head % n_head_kv` would interleave the groups.
    let map = |h, hkv| (0..h).map(|i| super::kv_head_of(i, h, hkv)).collect::<Vec<_>>();
    assert_eq!(map(9, 3), vec![0, 0, 0, 1, 1, 1, 2, 2, 2], "GQA");
    assert_eq!(map(4, 1), vec![0; 4], "MQA");
    assert_eq!(map(4, 4), vec![0, 1, 2, 3], "multi-head");
}

#[test]
fn prompt_blocks_give_each_token_the_bits_of_the_reference() {
    // Blocks of consecutive tokens (2 to 24 per block, as the thread count leaves them: 24, 15
    // and 10 for 40 tokens of 3 KV heads on 1, 2 and 3 threads) that
    // start before a chunk boundary and end past it, straddle tiles, start on a chunk or a tile,
    // or hold a token whose last tile or chunk has one position; contiguous and in shuffled
    // blocks of 8 and 32 positions: every token gets the scalar reference's bits, which are those
    // of the token alone.
    let cases = [
        (40, 230, 9, 3, 64),
        (33, 240, 9, 3, 64),
        (17, 495, 9, 3, 64),
        (16, 256, 9, 3, 64),
        (50, 0, 9, 3, 64),
        (64, 480, 9, 3, 64),
        (20, 250, 8, 1, 128),
        (31, 1, 6, 2, 32),
        (19, 31, 4, 4, 8),
    ];
    for (t, start, h, hkv, dh) in cases {
        let s = start + t;
        let q = values(t * h * dh, 91);
        let (kf, vf) = (values(s * hkv * dh, 92), values(s * hkv * dh, 93));
        let (k, v) = (to_f16(&kf), to_f16(&vf));
        let table = identity(s);
        let shape = AttentionShape { n_tokens: t, start, n_head: h, n_head_kv: hkv, head_dim: dh };
        let one = ThreadPool::new(1);
        let mut scratch = vec![0f32; 3 * attention_scratch_per_thread(s, dh)];
        let mut want = vec![0f32; t * h * dh];
        attention_blocks(&one, Level::Scalar, shape, &q, view(&k, &v, hkv, dh, &table), &mut want, &mut scratch);
        // The same positions in shuffled blocks of `bs` of a larger pool.
        let kv_dim = hkv * dh;
        let paged = |bs: usize| {
            let n_blocks = s.div_ceil(bs);
            // Every other block from the end of the pool, the rest from its start: no two alike.
            let table: Vec<u32> = (0..n_blocks).map(|b| if b % 2 == 0 { n_blocks + 1 - b / 2 } else { b / 2 } as u32).collect();
            let (mut kp, mut vp) = (vec![f16::ZERO; (n_blocks + 2) * bs * kv_dim], vec![f16::ZERO; (n_blocks + 2) * bs * kv_dim]);
            for pos in 0..s {
                let row = (table[pos / bs] as usize * bs + pos % bs) * kv_dim;
                kp[row..row + kv_dim].copy_from_slice(&k[pos * kv_dim..(pos + 1) * kv_dim]);
                vp[row..row + kv_dim].copy_from_slice(&v[pos * kv_dim..(pos + 1) * kv_dim]);
            }
            (table, kp, vp)
        };
        let (paged8, paged32) = (paged(8), paged(32));
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            for level in Level::all_available() {
                let mut got = vec![0f32; t * h * dh];
                attention_blocks(&pool, level, shape, &q, view(&k, &v, hkv, dh, &table), &mut got, &mut scratch);
                assert_eq!(got, want, "{level:?}, {threads} threads, {t} tokens from {start}, {h}/{hkv} heads of {dh}");
                if threads != 2 {
                    continue;
                }
                for (bs, (table, kp, vp)) in [(8, &paged8), (32, &paged32)] {
                    let mut got = vec![0f32; t * h * dh];
                    attention_blocks(&pool, level, shape, &q, KvView::position_major(kp, vp, table, bs, kv_dim, dh), &mut got, &mut scratch);
                    assert_eq!(got, want, "{level:?}, {threads} threads, blocks of {bs}, {t} tokens from {start}, {h}/{hkv} heads of {dh}");
                }
            }
        }
    }
}

/// f32 values into Q8_0 blocks, and the values the blocks hold.
fn to_q8(x: &[f32]) -> (Vec<KvBlockQ8>, Vec<f32>) {
    let mut blocks = vec![KvBlockQ8::default(); x.len() / 32];
    KvBlockQ8::quantize(Level::Scalar, x, &mut blocks);
    for level in Level::all_available() {
        let mut again = vec![KvBlockQ8::default(); x.len() / 32];
        KvBlockQ8::quantize(level, x, &mut again);
        assert_eq!(again, blocks, "{level:?}: KV quantization");
    }
    let held = (0..x.len()).map(|i| KvBlockQ8::value(&blocks, i)).collect();
    (blocks, held)
}

#[test]
fn q8_cache_gives_the_scalar_bits_at_every_level_and_exact_attention_on_what_it_holds() {
    // The block order's kernel over Q8_0 keys and values: every level (and llama.cpp's order,
    // which a Q8_0 cache does not have) gives the scalar reference's bits, within a few f32
    // roundings of f64 attention on the values the blocks hold, and near attention on the
    // unquantized values (8-bit rounding).
    let (mut worst, mut worst_q) = (0.0f64, 0.0f64);
    for &(t, start, h, hkv, dh) in BLOCK_ORDER_CASES.iter().filter(|c| c.4 % 32 == 0) {
        let s = start + t;
        let q = values(t * h * dh, 81);
        let (kf, vf) = (values(s * hkv * dh, 82), values(s * hkv * dh, 83));
        let ((k, kq), (v, vq)) = (to_q8(&kf), to_q8(&vf));
        let table = identity(s);
        let layer = KvView::position_major(&k, &v, &table, 1, hkv * dh, dh);
        let heads = Heads { n_head: h, n_head_kv: hkv, head_dim: dh };
        let seg = [AttentionSegment { first_token: 0, n_tokens: t, start, table: &table }];
        let pool = ThreadPool::new(2);
        let mut scratch = vec![0f32; 2 * attention_scratch_per_thread(s, dh)];
        let mut want = vec![0f32; t * h * dh];
        attention_segments(&pool, Level::Scalar, SumOrder::Blocks, heads, layer, &seg, &q, &mut want, &mut scratch, false);
        for level in Level::all_available() {
            for sums in [SumOrder::Blocks, SumOrder::LlamaCpp] {
                let mut got = vec![0f32; t * h * dh];
                attention_segments(&pool, level, sums, heads, layer, &seg, &q, &mut got, &mut scratch, false);
                assert_eq!(got, want, "{level:?} {sums:?}, {t} tokens from {start}, {h}/{hkv} heads of {dh}");
            }
        }
        for ti in 0..t {
            let n = start + ti + 1;
            for head in 0..h {
                let kvh = head / (h / hkv);
                let pick = |x: &[f32]| -> Vec<f32> { (0..n).flat_map(|p| x[(p * hkv + kvh) * dh..][..dh].to_vec()).collect() };
                let qh = &q[(ti * h + head) * dh..][..dh];
                let exact = naive(qh, &pick(&kq), &pick(&vq), n, dh);
                let unquantized = naive(qh, &pick(&kf), &pick(&vf), n, dh);
                for d in 0..dh {
                    let got = want[(ti * h + head) * dh + d] as f64;
                    worst = worst.max((got - exact[d]).abs());
                    worst_q = worst_q.max((got - unquantized[d]).abs());
                    assert!((got - exact[d]).abs() < 2e-6, "{t} tokens from {start}, head {head}, dim {d}: {got} vs {}", exact[d]);
                    assert!((got - unquantized[d]).abs() < 2e-2, "{t} tokens from {start}, head {head}, dim {d}: {got} vs {}", unquantized[d]);
                }
            }
        }
    }
    eprintln!("Q8_0 cache: largest difference from f64 on its values {worst:.2e}, from the unquantized values {worst_q:.2e}");
}

#[test]
fn q8_cache_split_decode_and_windows_give_the_bits_of_one_thread() {
    // Three sequences decoding one token each over shuffled blocks of 32 (the model's), a group
    // of 8 query heads over one KV head: the chunks spread over 1, 2 or 3 threads, and the
    // windowed kernel, give the same bits at every level.
    let (h, hkv, dh, bs) = (8, 1, 64, 32);
    let kv_dim = hkv * dh;
    let n_blocks = 60;
    let (k, _) = to_q8(&values(n_blocks * bs * kv_dim, 94));
    let (v, _) = to_q8(&values(n_blocks * bs * kv_dim, 95));
    let order: Vec<u32> = (0..n_blocks as u32).map(|b| (b * 37 + 11) % n_blocks as u32).collect();
    let tables = [&order[..25], &order[25..50], &order[50..60]];
    let starts = [25 * bs - 1, 25 * bs - 7, 10 * bs - 1];
    let q = values(3 * h * dh, 96);
    let heads = Heads { n_head: h, n_head_kv: hkv, head_dim: dh };
    let layer = KvView::position_major(&k, &v, &[], bs, kv_dim, dh);
    let segs: Vec<AttentionSegment> =
        starts.iter().zip(tables).enumerate().map(|(i, (&start, table))| AttentionSegment { first_token: i, n_tokens: 1, start, table }).collect();
    let mut scratch = vec![0f32; 4 * attention_scratch_per_thread(25 * bs, dh)];
    let run = |level: Level, threads: usize, window: Option<usize>, scratch: &mut [f32]| {
        let pool = ThreadPool::new(threads);
        let mut out = vec![0f32; 3 * h * dh];
        let mut out_q = vec![BlockQ8::default(); 3 * h * dh / QK];
        match window {
            Some(w) => attention_window_q8(&pool, level, heads, layer, &segs, w, &q, &mut out, &mut out_q, scratch),
            None => attention_segments_q8(&pool, level, SumOrder::Blocks, heads, layer, &segs, &q, &mut out, &mut out_q, scratch, false),
        }
        out
    };
    for window in [None, Some(300)] {
        let want = run(Level::Scalar, 1, window, &mut scratch);
        for level in Level::all_available() {
            for threads in [1, 2, 3] {
                assert_eq!(run(level, threads, window, &mut scratch), want, "{level:?}, {threads} threads, window {window:?}");
            }
        }
    }
}

#[test]
fn q8_view_needs_runs_of_whole_blocks() {
    // 8 blocks of 32 values: two pool blocks of 2 positions of 64.
    let k = vec![KvBlockQ8::default(); 8];
    let table = [0u32, 1, 2];
    assert!(KvView::position_major(&k, &k, &table, 2, 64, 64).holds_heads(1, 64));
    assert!(KvView::position_major(&k, &k, &table, 2, 64, 64).covers(4));
    assert!(!KvView::position_major(&k, &k, &table, 2, 64, 64).covers(5), "a third block lies past the slices");
    assert!(!KvView::position_major(&k, &k, &table, 2, 48, 16).holds_heads(3, 16), "heads of 16 split blocks");
}
