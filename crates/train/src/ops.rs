//! The ops of a Llama block, each forward beside its backward, over a flat batch of N rows
//! (the tokens of every sequence, one after another). Backward functions that produce the
//! gradient of an input which also flows elsewhere (the residual stream, a LoRA input) add to it
//! (`_add`); the others write.
//!
//! Every backward is checked against finite differences in f64 (`tests.rs`).

use crate::real::Real;
use kernels::pool::SharedMut;
use kernels::ThreadPool;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Defines `pub fn $name<F: Real>(args) body` compiled twice, for AVX2 and FMA (taken when the
/// kernels' level has them) and for the baseline: the same source, so the same operations in the
/// same order and the same bits (nothing is contracted into fused multiply-adds), 8 lanes wide
/// instead of 4. The closures of the body, which the pool runs, are compiled with the features of
/// the copy they are written in.
macro_rules! twin_fn {
    ($(#[$attr:meta])* pub fn $name:ident<F: Real>($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$attr])*
        pub fn $name<F: Real>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn simd<F: Real>($($arg: $ty),*) $body
                if kernels::Level::current() >= kernels::Level::Avx2 {
                    // SAFETY: these levels are only chosen on CPUs with AVX2 and FMA.
                    return unsafe { simd::<F>($($arg),*) };
                }
            }
            #[allow(clippy::too_many_arguments)]
            fn plain<F: Real>($($arg: $ty),*) $body
            plain::<F>($($arg),*)
        }
    };
}

/// a . b, in 32 independent lanes (four chains of 8, which the compiler vectorizes; one chain
/// alone waits on its adds), then 8 lanes for the rest of the multiples of 8, then one by one.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub fn dot<F: Real>(a: &[F], b: &[F]) -> F {
    debug_assert_eq!(a.len(), b.len());
    let mut wide = [[F::ZERO; 8]; 4];
    let (ac, bc) = (a.chunks_exact(32), b.chunks_exact(32));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        let (x, y): (&[F; 32], &[F; 32]) = (x.try_into().expect("32 values"), y.try_into().expect("32 values"));
        for c in 0..4 {
            for i in 0..8 {
                wide[c][i] += x[8 * c + i] * y[8 * c + i];
            }
        }
    }
    let mut lanes = [F::ZERO; 8];
    for i in 0..8 {
        lanes[i] = (wide[0][i] + wide[2][i]) + (wide[1][i] + wide[3][i]);
    }
    let (ac, bc) = (ar.chunks_exact(8), br.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let mut tail = F::ZERO;
    for (x, y) in ar.iter().zip(br) {
        tail += *x * *y;
    }
    ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7])) + tail
}

/// y += ((a0 x0 + a1 x1) + a2 x2) + a3 x3: four axpys in one pass over y.
#[inline(always)]
pub fn axpy4<F: Real>(a: [F; 4], x: [&[F]; 4], y: &mut [F]) {
    let n = y.len();
    let (x0, x1, x2, x3) = (&x[0][..n], &x[1][..n], &x[2][..n], &x[3][..n]);
    for i in 0..n {
        y[i] += ((a[0] * x0[i] + a[1] * x1[i]) + a[2] * x2[i]) + a[3] * x3[i];
    }
}

/// y += a * x.
#[inline(always)]
pub fn axpy<F: Real>(a: F, x: &[F], y: &mut [F]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// RMSNorm over rows of x (N, D): rstd (N) = 1 / sqrt(mean(x^2) + eps), y = x * rstd * w.
pub fn rms_norm_forward<F: Real>(x: &[F], w: &[f32], eps: f32, y: &mut [F], rstd: &mut [F]) {
    let d = w.len();
    for ((xr, yr), r) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).zip(rstd.iter_mut()) {
        let ms = dot(xr, xr) / F::from_f64(d as f64);
        *r = F::ONE / (ms + F::from_f32(eps)).sqrt();
        for ((yv, &xv), &wv) in yr.iter_mut().zip(xr).zip(w) {
            *yv = xv * *r * F::from_f32(wv);
        }
    }
}

/// dx += the gradient through [`rms_norm_forward`]: with xhat = x rstd and g = dy w,
/// dx = rstd (g - xhat mean(g xhat)).
pub fn rms_norm_backward_add<F: Real>(dy: &[F], x: &[F], w: &[f32], rstd: &[F], dx: &mut [F]) {
    let d = w.len();
    for (((dyr, xr), &r), dxr) in dy.chunks_exact(d).zip(x.chunks_exact(d)).zip(rstd).zip(dx.chunks_exact_mut(d)) {
        // mean(g xhat) = rstd / D * sum(dy w x)
        let mut s = F::ZERO;
        for ((&a, &b), &c) in dyr.iter().zip(xr).zip(w) {
            s += a * F::from_f32(c) * b;
        }
        let k = s * r * r / F::from_f64(d as f64);
        for (((dv, &a), &b), &c) in dxr.iter_mut().zip(dyr).zip(xr).zip(w) {
            *dv += r * (a * F::from_f32(c) - b * k);
        }
    }
}

/// RoPE in place on x (N, heads * Dh): each adjacent pair (x[2i], x[2i+1]) of every head of row
/// n turned by the angle of `cos_sin[n * Dh / 2 + i]` (the layout of GGUF llama Q/K weights).
pub fn rope_forward<F: Real>(x: &mut [F], head_dim: usize, cos_sin: &[(f32, f32)]) {
    rope_turn(x, head_dim, cos_sin, false)
}

/// The gradient through [`rope_forward`], in place: the same pairs turned back (a rotation's
/// transpose is its inverse).
pub fn rope_backward<F: Real>(dx: &mut [F], head_dim: usize, cos_sin: &[(f32, f32)]) {
    rope_turn(dx, head_dim, cos_sin, true)
}

fn rope_turn<F: Real>(x: &mut [F], head_dim: usize, cos_sin: &[(f32, f32)], back: bool) {
    let half = head_dim / 2;
    let n = cos_sin.len() / half;
    let width = x.len() / n;
    for (row, angles) in x.chunks_exact_mut(width).zip(cos_sin.chunks_exact(half)) {
        for head in row.chunks_exact_mut(head_dim) {
            for (pair, &(c, s)) in head.chunks_exact_mut(2).zip(angles) {
                let (c, s) = (F::from_f32(c), if back { -F::from_f32(s) } else { F::from_f32(s) });
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * c - b * s;
                pair[1] = a * s + b * c;
            }
        }
    }
}

/// sigmoid(x).
#[inline]
fn sigmoid<F: Real>(x: F) -> F {
    F::ONE / (F::ONE + (-x).exp())
}

/// a = silu(g) * u, elementwise (silu(g) = g sigmoid(g)).
pub fn swiglu_forward<F: Real>(g: &[F], u: &[F], a: &mut [F]) {
    for ((av, &gv), &uv) in a.iter_mut().zip(g).zip(u) {
        *av = gv * sigmoid(gv) * uv;
    }
}

/// The gradients through [`swiglu_forward`]: dg = da u silu'(g), du = da silu(g), with
/// silu'(g) = s (1 + g (1 - s)), s = sigmoid(g).
pub fn swiglu_backward<F: Real>(da: &[F], g: &[F], u: &[F], dg: &mut [F], du: &mut [F]) {
    for ((((&d, &gv), &uv), dgv), duv) in da.iter().zip(g).zip(u).zip(dg.iter_mut()).zip(du.iter_mut()) {
        let s = sigmoid(gv);
        *dgv = d * uv * s * (F::ONE + gv * (F::ONE - s));
        *duv = d * gv * s;
    }
}

/// The sizes of grouped-query attention.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    /// H.
    pub n_head: usize,
    /// Hkv (H % Hkv == 0).
    pub n_head_kv: usize,
    /// Dh.
    pub head_dim: usize,
}

impl AttnShape {
    /// Floats of the kept probabilities of `seqs`: H T^2 per sequence of T rows.
    pub fn probs_len(&self, seqs: &[Range<usize>]) -> usize {
        seqs.iter().map(|s| self.n_head * s.len() * s.len()).sum()
    }
}

/// Runs `f(seq, kv_head, probs_offset)` for every (sequence, KV head) of `seqs` on the pool,
/// longest sequences first.
fn for_each_unit(pool: &ThreadPool, shape: &AttnShape, seqs: &[Range<usize>], f: &(dyn Fn(usize, usize, usize) + Sync)) {
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&s| std::cmp::Reverse(seqs[s].len()));
    let offsets: Vec<usize> = seqs.iter().scan(0, |at, s| Some(std::mem::replace(at, *at + shape.n_head * s.len() * s.len()))).collect();
    let units = seqs.len() * shape.n_head_kv;
    let next = AtomicUsize::new(0);
    pool.run(&|_, _| loop {
        let u = next.fetch_add(1, Ordering::Relaxed);
        if u >= units {
            break;
        }
        let s = order[u / shape.n_head_kv];
        f(s, u % shape.n_head_kv, offsets[s]);
    });
}

/// Rows of a query tile in [`dots_transposed`].
const TILE_ROWS: usize = 4;
/// Columns of a tile: one register of 8 lanes.
const TILE_COLS: usize = 8;

/// `m` (T, Dh), rows `stride` apart from `m[0]`, transposed into (Dh, ldt) with ldt = T rounded up
/// to [`TILE_COLS`] (zero past T): the layout [`dots_transposed`] reads.
fn transpose_rows<F: Real>(m: &[F], stride: usize, t_len: usize, dh: usize) -> (Vec<F>, usize) {
    let ldt = t_len.div_ceil(TILE_COLS) * TILE_COLS;
    let mut t = vec![F::ZERO; dh * ldt];
    for u in 0..t_len {
        for (d, &x) in m[u * stride..u * stride + dh].iter().enumerate() {
            t[d * ldt + u] = x;
        }
    }
    (t, ldt)
}

/// out[t][u] = a_t . b_u for every t < `t_len` and u <= t (causal; entries above the diagonal of
/// a tile row are written too, and are the caller's to ignore): a_t is `a[t * sa..][..dh]`, b
/// given transposed (Dh, ldb) as [`transpose_rows`] makes it, out rows `ldo` apart. Tiles of 4
/// rows x 8 columns: per dimension one load of 8 b values, four broadcasts, four multiply-adds;
/// each sum in dimension order.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn dots_transposed<F: Real>(a: &[F], sa: usize, t_len: usize, dh: usize, bt: &[F], ldb: usize, out: &mut [F], ldo: usize) {
    for t0 in (0..t_len).step_by(TILE_ROWS) {
        let nt = (t_len - t0).min(TILE_ROWS);
        // Rows past the end repeat the last one (their sums are not stored).
        let rows: [&[F]; TILE_ROWS] = std::array::from_fn(|i| &a[(t0 + i.min(nt - 1)) * sa..][..dh]);
        for u0 in (0..t0 + nt).step_by(TILE_COLS) {
            let mut acc = [[F::ZERO; TILE_COLS]; TILE_ROWS];
            for d in 0..dh {
                let bv: &[F; TILE_COLS] = bt[d * ldb + u0..][..TILE_COLS].try_into().expect("tile of 8");
                for i in 0..TILE_ROWS {
                    let x = rows[i][d];
                    for l in 0..TILE_COLS {
                        acc[i][l] += x * bv[l];
                    }
                }
            }
            let cols = (t0 + nt - u0).min(TILE_COLS);
            for i in 0..nt {
                out[(t0 + i) * ldo + u0..][..cols].copy_from_slice(&acc[i][..cols]);
            }
        }
    }
}

/// o (Dh) = sum over u of w[u] x_u, x_u = `x[u * sx..][..dh]` (or o += that sum, when `add`):
/// 32 dimensions at a time (four independent chains of 8 lanes: one chain alone waits on its
/// adds), then 8 at a time, the last Dh % 8 one by one; each sum in u order, in registers.
#[inline(always)]
fn weighted_rows<F: Real>(w: &[F], x: &[F], sx: usize, dh: usize, o: &mut [F], add: bool) {
    let (wide, whole) = (dh - dh % (4 * TILE_COLS), dh - dh % TILE_COLS);
    for d0 in (0..wide).step_by(4 * TILE_COLS) {
        weighted_chunk::<F, { 4 * TILE_COLS }>(w, x, sx, d0, o, add);
    }
    for d0 in (wide..whole).step_by(TILE_COLS) {
        weighted_chunk::<F, TILE_COLS>(w, x, sx, d0, o, add);
    }
    for d in whole..dh {
        weighted_chunk::<F, 1>(w, x, sx, d, o, add);
    }
}

/// Dimensions d0..d0 + W of [`weighted_rows`].
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn weighted_chunk<F: Real, const W: usize>(w: &[F], x: &[F], sx: usize, d0: usize, o: &mut [F], add: bool) {
    let mut acc = [F::ZERO; W];
    for (u, &wu) in w.iter().enumerate() {
        let xu: &[F; W] = x[u * sx + d0..][..W].try_into().expect("W values");
        for l in 0..W {
            acc[l] += wu * xu[l];
        }
    }
    for (o, &a) in o[d0..d0 + W].iter_mut().zip(&acc) {
        *o = if add { *o + a } else { a };
    }
}

twin_fn! {
    /// Causal grouped-query attention of each sequence of `seqs` (row ranges of the flat batch, a
    /// sequence's rows at positions 0, 1, ...): q (N, H*Dh), k and v (N, Hkv*Dh) -> out (N, H*Dh),
    /// keeping the probabilities P (per sequence: (H, T, T), zero above the diagonal) for the
    /// backward. Query head h reads KV head h / (H / Hkv). scale = 1 / sqrt(Dh). The scores of a
    /// head are one tiled product with the KV head's keys transposed (`dots_transposed`).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_forward<F: Real>(
        pool: &ThreadPool,
        shape: &AttnShape,
        seqs: &[Range<usize>],
        q: &[F],
        k: &[F],
        v: &[F],
        probs: &mut [F],
        out: &mut [F],
    ) {
        let AttnShape { n_head, n_head_kv, head_dim: dh } = *shape;
        let (qw, kw, group) = (n_head * dh, n_head_kv * dh, n_head / n_head_kv);
        let scale = F::from_f64(1.0 / (dh as f64).sqrt());
        assert_eq!(probs.len(), shape.probs_len(seqs));
        let (probs_ptr, out_ptr) = (SharedMut::new(probs), SharedMut::new(out));
        for_each_unit(pool, shape, seqs, &|s, g, off| {
            let rows = seqs[s].clone();
            let t_len = rows.len();
            let (kt, ldt) = transpose_rows(&k[rows.start * kw + g * dh..], kw, t_len, dh);
            let mut scores = vec![F::ZERO; t_len * ldt];
            for h in g * group..(g + 1) * group {
                // SAFETY: unit (s, g) alone writes the probabilities of sequence s, heads of group g,
                // and the out columns of those heads in the rows of s.
                let p_h = unsafe { probs_ptr.slice(off + h * t_len * t_len, t_len * t_len) };
                dots_transposed(&q[rows.start * qw + h * dh..], qw, t_len, dh, &kt, ldt, &mut scores, ldt);
                for t in 0..t_len {
                    let p = &mut p_h[t * t_len..(t + 1) * t_len];
                    let mut max = F::from_f64(f64::NEG_INFINITY);
                    for (pu, &su) in p[..=t].iter_mut().zip(&scores[t * ldt..]) {
                        *pu = su * scale;
                        max = max.max(*pu);
                    }
                    let mut sum = F::ZERO;
                    for pu in p[..=t].iter_mut() {
                        *pu = (*pu - max).exp();
                        sum += *pu;
                    }
                    let inv = F::ONE / sum;
                    p[..=t].iter_mut().for_each(|pu| *pu *= inv);
                    p[t + 1..].iter_mut().for_each(|pu| *pu = F::ZERO);
                    let o = unsafe { out_ptr.slice((rows.start + t) * qw + h * dh, dh) };
                    weighted_rows(&p[..=t], &v[rows.start * kw + g * dh..], kw, dh, o, false);
                }
            }
        });
    }
}

twin_fn! {
    /// The gradients through [`attention_forward`]: from dout (N, H*Dh) and the kept P, writes
    /// dq (N, H*Dh), dk and dv (N, Hkv*Dh):
    ///
    /// ```text
    /// dP[t][u] = dout[t] . v[u]          dS = P (dP - sum_u P dP)        (row t)
    /// dq[t] = scale sum_u dS[t][u] k[u]  dk[u] += scale sum_t dS[t][u] q[t]   dv[u] += sum_t P[t][u] dout[t]
    /// ```
    ///
    /// dP is one tiled product with the values transposed; every other sum runs in registers over
    /// its rows (dq over u, dk and dv over t).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_backward<F: Real>(
        pool: &ThreadPool,
        shape: &AttnShape,
        seqs: &[Range<usize>],
        q: &[F],
        k: &[F],
        v: &[F],
        probs: &[F],
        dout: &[F],
        dq: &mut [F],
        dk: &mut [F],
        dv: &mut [F],
    ) {
        let AttnShape { n_head, n_head_kv, head_dim: dh } = *shape;
        let (qw, kw, group) = (n_head * dh, n_head_kv * dh, n_head / n_head_kv);
        let scale = F::from_f64(1.0 / (dh as f64).sqrt());
        let (dq_ptr, dk_ptr, dv_ptr) = (SharedMut::new(dq), SharedMut::new(dk), SharedMut::new(dv));
        for_each_unit(pool, shape, seqs, &|s, g, off| {
            let rows = seqs[s].clone();
            let t_len = rows.len();
            let (vt, ldt) = transpose_rows(&v[rows.start * kw + g * dh..], kw, t_len, dh);
            // dS of one head (T, ldt), and its transpose and P's (T, T) for the sums over t.
            let mut ds = vec![F::ZERO; t_len * ldt];
            let mut ds_t = vec![F::ZERO; t_len * t_len];
            let mut p_t = vec![F::ZERO; t_len * t_len];
            // dk and dv of the group (T, Dh), summed over its heads, written at the end.
            let mut dk_g = vec![F::ZERO; t_len * dh];
            let mut dv_g = vec![F::ZERO; t_len * dh];
            for h in g * group..(g + 1) * group {
                let p_h = &probs[off + h * t_len * t_len..][..t_len * t_len];
                let dout_h = &dout[rows.start * qw + h * dh..];
                dots_transposed(dout_h, qw, t_len, dh, &vt, ldt, &mut ds, ldt);
                for t in 0..t_len {
                    let p = &p_h[t * t_len..][..=t];
                    let dp = &mut ds[t * ldt..][..=t];
                    let mut sum = F::ZERO;
                    for (&pu, &dpu) in p.iter().zip(dp.iter()) {
                        sum += pu * dpu;
                    }
                    for (d, &pu) in dp.iter_mut().zip(p) {
                        *d = pu * (*d - sum) * scale;
                    }
                    // SAFETY: unit (s, g) alone writes the rows of sequence s in the columns of its
                    // query heads (dq).
                    let dqt = unsafe { dq_ptr.slice((rows.start + t) * qw + h * dh, dh) };
                    weighted_rows(dp, &k[rows.start * kw + g * dh..], kw, dh, dqt, false);
                    for u in 0..=t {
                        ds_t[u * t_len + t] = dp[u];
                        p_t[u * t_len + t] = p[u];
                    }
                }
                let q_h = &q[rows.start * qw + h * dh..];
                for u in 0..t_len {
                    // dk[u] += sum over t >= u of dS[t][u] q[t]; dv[u] += sum of P[t][u] dout[t].
                    weighted_rows(&ds_t[u * t_len + u..(u + 1) * t_len], &q_h[u * qw..], qw, dh, &mut dk_g[u * dh..(u + 1) * dh], true);
                    weighted_rows(&p_t[u * t_len + u..(u + 1) * t_len], &dout_h[u * qw..], qw, dh, &mut dv_g[u * dh..(u + 1) * dh], true);
                }
            }
            for u in 0..t_len {
                // SAFETY: unit (s, g) alone writes the rows of sequence s in the columns of KV head g.
                let (dku, dvu) = unsafe { (dk_ptr.slice((rows.start + u) * kw + g * dh, dh), dv_ptr.slice((rows.start + u) * kw + g * dh, dh)) };
                dku.copy_from_slice(&dk_g[u * dh..(u + 1) * dh]);
                dvu.copy_from_slice(&dv_g[u * dh..(u + 1) * dh]);
            }
        });
    }
}

/// Runs `f(rows)` on the pool over `n` rows split in contiguous ranges, one per thread.
pub(crate) fn par_rows(pool: &ThreadPool, n: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    pool.run(&|i, nt| {
        let rows = kernels::pool::split_range(n, i, nt);
        if !rows.is_empty() {
            f(rows)
        }
    });
}

twin_fn! {
    /// The LoRA path of one map, forward: u (N, r) = (x m) A^T kept for the backward, and
    /// y (N, out) += scaling u B^T. `mask` (N, in) is dropout's (0 or 1 / (1 - p)), or none. Rows
    /// split over the pool. (B is read transposed, (r, out), so that each row's update is r long
    /// axpys over `out`.)
    #[allow(clippy::too_many_arguments)]
    pub fn lora_forward<F: Real>(pool: &ThreadPool, x: &[F], mask: Option<&[F]>, a: &[F], b: &[F], n_in: usize, scaling: F, u: &mut [F], y: &mut [F]) {
        let r = a.len() / n_in;
        let n_out = b.len() / r;
        let n = x.len() / n_in;
        let bt = transpose(b, n_out, r); // (r, out)
        let (u_ptr, y_ptr) = (SharedMut::new(u), SharedMut::new(y));
        par_rows(pool, n, &|rows| {
            // SAFETY: each thread writes only its own rows of u and y.
            let (u, y) = unsafe { (u_ptr.slice(rows.start * r, rows.len() * r), y_ptr.slice(rows.start * n_out, rows.len() * n_out)) };
            let mut xm = vec![F::ZERO; n_in];
            for (j, row) in rows.enumerate() {
                let xr = &x[row * n_in..(row + 1) * n_in];
                let xr = match mask {
                    None => xr,
                    Some(m) => {
                        for ((d, &xv), &mv) in xm.iter_mut().zip(xr).zip(&m[row * n_in..(row + 1) * n_in]) {
                            *d = xv * mv;
                        }
                        &xm
                    }
                };
                let ur = &mut u[j * r..(j + 1) * r];
                let yr = &mut y[j * n_out..(j + 1) * n_out];
                for ((uv, ar), btr) in ur.iter_mut().zip(a.chunks_exact(n_in)).zip(bt.chunks_exact(n_out)) {
                    *uv = dot(xr, ar);
                    axpy(*uv * scaling, btr, yr);
                }
            }
        });
    }
}

/// m (rows, cols) row-major -> (cols, rows).
pub(crate) fn transpose<F: Real>(m: &[F], rows: usize, cols: usize) -> Vec<F> {
    let mut t = vec![F::ZERO; m.len()];
    for (i, row) in m.chunks_exact(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            t[j * rows + i] = v;
        }
    }
    t
}

twin_fn! {
    /// The LoRA path of one map, backward: from dy (N, out), adds the gradients of A (r, in),
    /// B (out, r) and x (N, in), on the pool (rows of dx, columns of dA, rows of dB split):
    ///
    /// ```text
    /// du = scaling dy B      dB += scaling dy^T u      dA += du^T (x m)      dx += (du A) m
    /// ```
    ///
    /// (B is read transposed, and dB is summed transposed, (r, out), so that every loop is a long
    /// dot product or axpy.)
    #[allow(clippy::too_many_arguments)]
    pub fn lora_backward_add<F: Real>(
    pool: &ThreadPool,
    dy: &[F],
    x: &[F],
    mask: Option<&[F]>,
    a: &[F],
    b: &[F],
    u: &[F],
    n_in: usize,
    scaling: F,
    da: &mut [F],
    db: &mut [F],
    dx: &mut [F],
) {
        let r = a.len() / n_in;
        let n_out = b.len() / r;
        let n = dy.len() / n_out;
        let bt = transpose(b, n_out, r); // (r, out)
        // du (N, r) and dx, row by row.
        let mut du = vec![F::ZERO; n * r];
        let (du_ptr, dx_ptr) = (SharedMut::new(&mut du), SharedMut::new(dx));
        par_rows(pool, n, &|rows| {
            // SAFETY: each thread writes only its own rows of du and dx.
            let (du, dx) = unsafe { (du_ptr.slice(rows.start * r, rows.len() * r), dx_ptr.slice(rows.start * n_in, rows.len() * n_in)) };
            let mut g = vec![F::ZERO; n_in];
            for (j, row) in rows.enumerate() {
                let dur = &mut du[j * r..(j + 1) * r];
                let dyr = &dy[row * n_out..(row + 1) * n_out];
                for (d, btr) in dur.iter_mut().zip(bt.chunks_exact(n_out)) {
                    *d = dot(dyr, btr) * scaling;
                }
                let dxr = &mut dx[j * n_in..(j + 1) * n_in];
                match mask {
                    None => {
                        for (&d, ar) in dur.iter().zip(a.chunks_exact(n_in)) {
                            axpy(d, ar, dxr);
                        }
                    }
                    Some(m) => {
                        g.iter_mut().for_each(|v| *v = F::ZERO);
                        for (&d, ar) in dur.iter().zip(a.chunks_exact(n_in)) {
                            axpy(d, ar, &mut g);
                        }
                        for ((dv, &gv), &mv) in dxr.iter_mut().zip(&g).zip(&m[row * n_in..(row + 1) * n_in]) {
                            *dv += gv * mv;
                        }
                    }
                }
            }
        });
        // dB^T (r, out) = scaling u^T dy: columns (outputs) split; then added into dB (out, r).
        let mut dbt = vec![F::ZERO; r * n_out];
        let dbt_ptr = SharedMut::new(&mut dbt);
        pool.run(&|i, nt| {
            let outs = kernels::pool::split_range(n_out, i, nt);
            if outs.is_empty() {
                return;
            }
            // Four rows at a time: each pass over a row of dB^T adds four rows' terms.
            for row in (0..n).step_by(4) {
                let rows = row..(row + 4).min(n);
                let dys: [&[F]; 4] = std::array::from_fn(|i| {
                    let row = rows.start + i.min(rows.len() - 1);
                    &dy[row * n_out + outs.start..row * n_out + outs.end]
                });
                for j in 0..r {
                    let w: [F; 4] = std::array::from_fn(|i| if rows.start + i < rows.end { u[(rows.start + i) * r + j] * scaling } else { F::ZERO });
                    // SAFETY: each thread writes only its own columns of every row of dB^T.
                    let dbr = unsafe { dbt_ptr.slice(j * n_out + outs.start, outs.len()) };
                    axpy4(w, dys, dbr);
                }
            }
        });
        for (o, dbr) in db.chunks_exact_mut(r).enumerate() {
            for (j, d) in dbr.iter_mut().enumerate() {
                *d += dbt[j * n_out + o];
            }
        }
        // dA (r, in) += du^T (x m): columns of dA split.
        let da_ptr = SharedMut::new(da);
        pool.run(&|i, nt| {
            let cols = kernels::pool::split_range(n_in, i, nt);
            if cols.is_empty() {
                return;
            }
            // Four rows at a time (rows of x m in `xm`), as dB^T above.
            let mut xm = vec![F::ZERO; 4 * cols.len()];
            for row in (0..n).step_by(4) {
                let rows = row..(row + 4).min(n);
                for (i, xmr) in xm.chunks_exact_mut(cols.len()).enumerate() {
                    let row = rows.start + i.min(rows.len() - 1);
                    let xr = &x[row * n_in + cols.start..row * n_in + cols.end];
                    match mask {
                        None => xmr.copy_from_slice(xr),
                        Some(m) => {
                            for ((d, &xv), &mv) in xmr.iter_mut().zip(xr).zip(&m[row * n_in + cols.start..row * n_in + cols.end]) {
                                *d = xv * mv;
                            }
                        }
                    }
                }
                let xs: [&[F]; 4] = std::array::from_fn(|i| &xm[i * cols.len()..(i + 1) * cols.len()]);
                for j in 0..r {
                    let w: [F; 4] = std::array::from_fn(|i| if rows.start + i < rows.end { du[(rows.start + i) * r + j] } else { F::ZERO });
                    // SAFETY: each thread writes only its own columns of every row of dA.
                    let dar = unsafe { da_ptr.slice(j * n_in + cols.start, cols.len()) };
                    axpy4(w, xs, dar);
                }
            }
        });
    }
}
