//! The output head of greedy decoding: the product and its argmax in one pass of the pool.

use super::dispatch::{owned_rows, rows_share};
use super::{check_shapes, Level, MatRef, Out};
use crate::pool::{SharedMut, ThreadPool};
use crate::quant::BlockQ8;

/// The output head for greedy decoding: y (N) = w (N, K) . x for one token, and the index of the
/// largest value (the first on ties; NaN never wins), found by each thread over the rows it just
/// computed, so the logits are not read again in a separate pass. `best` holds one slot per
/// thread of the pool; only the threads the job ran on write theirs.
#[allow(clippy::too_many_arguments)]
pub fn matmul_argmax(pool: &ThreadPool, level: Level, w: &MatRef, x: &[f32], xq: &[BlockQ8], y: &mut [f32], best: &mut [(f32, u32)]) -> u32 {
    check_shapes(w, x, xq, 1, y);
    assert!(best.len() >= pool.n_threads(), "matmul_argmax: one slot per thread needed");
    let out = Out { ptr: SharedMut::new(y), add: false };
    let slots = SharedMut::new(best);
    let n_ran = pool.run(&|i, nt| {
        rows_share(level, w, x, xq, 1, out, i, nt);
        let mut top = (f32::NEG_INFINITY, u32::MAX);
        for rows in owned_rows(level, w, i, nt) {
            // SAFETY: these rows were written by this thread in this job.
            let ys = unsafe { out.ptr.slice(rows.start, rows.len()) };
            for (r, &v) in rows.zip(ys.iter()) {
                if v > top.0 || (top.1 == u32::MAX && !v.is_nan()) {
                    top = (v, r as u32);
                }
            }
        }
        // SAFETY: slot i belongs to thread i.
        unsafe { slots.write(i, top) };
    });
    // Threads own increasing rows, so a strict comparison keeps the first of equal maxima.
    let mut top = (f32::NEG_INFINITY, u32::MAX);
    for &(v, r) in &best[..n_ran] {
        if r != u32::MAX && (v > top.0 || top.1 == u32::MAX) {
            top = (v, r);
        }
    }
    if top.1 == u32::MAX {
        0
    } else {
        top.1
    }
}
