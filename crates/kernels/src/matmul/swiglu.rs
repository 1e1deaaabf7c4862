//! The feed-forward input pair, gate and up, with SwiGLU (and the 8-bit blocks of its result)
//! fused into the products.

use super::dispatch::{owned_rows, rows_share};
use super::{check_shapes, Level, MatRef, Out};
use crate::pool::{split_range, SharedMut, ThreadPool};
use crate::quant::{BlockQ8, QK};

/// The feed-forward input pair with SwiGLU fused: gate = silu(w_gate . x) * (w_up . x), (T, F).
///
/// Each thread computes its rows of both products and applies SwiGLU to them in place, so the
/// activation is done before the pool's one barrier (when gate and up split their rows over the
/// threads differently, the activation waits for a second pass); `up` (T, F) is scratch.
#[allow(clippy::too_many_arguments)]
pub fn matmul_swiglu(
    pool: &ThreadPool,
    level: Level,
    w_gate: &MatRef,
    w_up: &MatRef,
    x: &[f32],
    xq: &[BlockQ8],
    t: usize,
    gate: &mut [f32],
    up: &mut [f32],
) {
    swiglu_with(pool, level, w_gate, w_up, x, xq, t, gate, up, None)
}

/// [`matmul_swiglu`] that also writes gate's 8-bit blocks, gate_q (T, F/32), as
/// [`quantize_rows_q8`](crate::quant::quantize_rows_q8) would: the down projection's input is
/// ready at the same barrier when each thread's rows are whole blocks.
#[allow(clippy::too_many_arguments)]
pub fn matmul_swiglu_q8(
    pool: &ThreadPool,
    level: Level,
    w_gate: &MatRef,
    w_up: &MatRef,
    x: &[f32],
    xq: &[BlockQ8],
    t: usize,
    gate: &mut [f32],
    up: &mut [f32],
    gate_q: &mut [BlockQ8],
) {
    assert_eq!(gate_q.len() * QK, gate.len(), "matmul_swiglu_q8: gate_q must hold gate's blocks");
    swiglu_with(pool, level, w_gate, w_up, x, xq, t, gate, up, Some(gate_q))
}

#[allow(clippy::too_many_arguments)]
fn swiglu_with(
    pool: &ThreadPool,
    level: Level,
    w_gate: &MatRef,
    w_up: &MatRef,
    x: &[f32],
    xq: &[BlockQ8],
    t: usize,
    gate: &mut [f32],
    up: &mut [f32],
    gate_q: Option<&mut [BlockQ8]>,
) {
    check_shapes(w_gate, x, xq, t, gate);
    check_shapes(w_up, x, xq, t, up);
    assert_eq!(w_gate.rows, w_up.rows, "matmul_swiglu: gate and up have different widths");
    let f = w_gate.rows;
    let (g, u) = (Out { ptr: SharedMut::new(gate), add: false }, Out { ptr: SharedMut::new(up), add: false });
    // Fused only when each thread computes the same rows of both products (same format and
    // packing); otherwise the activation waits for a barrier. Quantized in the same pass only
    // when every thread's rows are whole blocks. Both depend on the threads the job runs on,
    // which the pool decides (the caller alone while the machine is contended): `(same_rows,
    // fuse_q)` for `nt` threads.
    let whole_blocks = |r: &std::ops::Range<usize>| r.is_empty() || (r.start.is_multiple_of(QK) && r.end.is_multiple_of(QK));
    let fusion = |nt: usize| {
        let same_rows = (0..nt).all(|i| owned_rows(level, w_gate, i, nt) == owned_rows(level, w_up, i, nt));
        (same_rows, same_rows && (0..nt).all(|i| owned_rows(level, w_gate, i, nt).iter().all(whole_blocks)))
    };
    let gq = gate_q.map(SharedMut::new);
    let activate = |rows: [std::ops::Range<usize>; 2], quantize: bool| {
        for rows in rows {
            for ti in 0..t {
                // SAFETY: thread i owns rows `rows` of every token of both buffers (computed by
                // this thread, or by any thread before the barrier), and their blocks.
                let (gs, us) = unsafe { (g.ptr.slice(ti * f + rows.start, rows.len()), u.ptr.slice(ti * f + rows.start, rows.len())) };
                crate::ops::swiglu_inplace(gs, us);
                if let (true, Some(gq)) = (quantize, gq) {
                    let q = unsafe { gq.slice((ti * f + rows.start) / QK, rows.len() / QK) };
                    crate::quant::quantize_row_q8(gs, q);
                }
            }
        }
    };
    let n_ran = pool.run(&|i, nt| {
        rows_share(level, w_gate, x, xq, t, g, i, nt);
        rows_share(level, w_up, x, xq, t, u, i, nt);
        let (same_rows, fuse_q) = fusion(nt);
        if same_rows {
            activate(owned_rows(level, w_gate, i, nt), fuse_q);
        }
    });
    let (same_rows, fuse_q) = fusion(n_ran);
    if !same_rows {
        pool.run(&|i, nt| activate([split_range(f, i, nt), 0..0], false));
    }
    if let (false, Some(gq)) = (fuse_q, gq) {
        // SAFETY: the pool has finished; this is the only user of gate and gate_q now.
        let (gate, gate_q) = unsafe { (g.ptr.slice(0, t * f), gq.slice(0, t * f / QK)) };
        crate::quant::quantize_rows_q8(pool, gate, gate_q, t);
    }
}
