//! LoRA adapters applied at inference, unmerged: after each adapted product y = W x, the model
//! adds `scale * B (A x)` (A (r, in), B (out, r)), computed in f32 from the same f32 input the
//! product quantized. The base weights stay as they are in the file, so one model can run with
//! and without an adapter.
//!
//! The maps of a block are indexed q, k, v, o, gate, up, down (0..7); B's rows of q and k follow
//! the GGUF file's row order.

use crate::config::LlamaConfig;
use crate::ModelError;
use kernels::pool::{split_range, SharedMut};
use kernels::ThreadPool;

/// The names of the seven maps, in index order.
pub const MAP_NAMES: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

/// One adapted map.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraMap {
    /// A (r, in), row-major.
    pub a: Vec<f32>,
    /// B (out, r), row-major.
    pub b: Vec<f32>,
    /// r.
    pub rank: usize,
}

/// An adapter for the whole model: per layer, the maps that carry one, and the factor of B A
/// (alpha / r, or alpha / sqrt(r), times the user's scale).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSet {
    /// The factor applied to B (A x).
    pub scale: f32,
    /// (L) x (7), None where the map is not adapted.
    pub layers: Vec<[Option<LoraMap>; 7]>,
}

/// (out, in) of map `i` for a model of `c`'s sizes.
pub fn map_shape(c: &LlamaConfig, i: usize) -> (usize, usize) {
    let (d, q, kv, f) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);
    [(q, d), (kv, d), (kv, d), (d, q), (f, d), (f, d), (d, f)][i]
}

impl LoraSet {
    /// Checks that every matrix fits a model of `c`'s sizes.
    pub fn check(&self, c: &LlamaConfig) -> Result<(), ModelError> {
        if self.layers.len() != c.n_layer {
            return Err(ModelError::BadConfig(format!(
                "the LoRA adapter has {} layers, the model {}: it was made for another model",
                self.layers.len(),
                c.n_layer
            )));
        }
        if !self.scale.is_finite() {
            return Err(ModelError::BadConfig(format!("the LoRA scale {} is not a finite number", self.scale)));
        }
        for (l, maps) in self.layers.iter().enumerate() {
            for (i, m) in maps.iter().enumerate() {
                let Some(m) = m else { continue };
                let (n_out, n_in) = map_shape(c, i);
                if m.rank == 0 || m.a.len() != m.rank * n_in || m.b.len() != n_out * m.rank {
                    return Err(ModelError::BadConfig(format!(
                        "the LoRA adapter's {} map of layer {l} has A of {} and B of {} values with rank {}; the model needs ({}, {n_in}) and ({n_out}, {}): it was made for another model",
                        MAP_NAMES[i],
                        m.a.len(),
                        m.b.len(),
                        m.rank,
                        m.rank,
                        m.rank
                    )));
                }
            }
        }
        Ok(())
    }
}

/// y (T, out) += scale * (x (T, in) A^T) B^T, rows split over the pool.
pub(crate) fn lora_add(pool: &ThreadPool, map: &LoraMap, scale: f32, x: &[f32], t: usize, y: &mut [f32]) {
    let r = map.rank;
    let n_in = map.a.len() / r;
    let n_out = map.b.len() / r;
    debug_assert_eq!((x.len(), y.len()), (t * n_in, t * n_out));
    let out = SharedMut::new(y);
    pool.run(&|i, n| {
        let rows = split_range(t, i, n);
        // u (r) on the stack for the usual ranks, so a decode step allocates nothing.
        let (mut stack, mut heap) = ([0f32; 64], Vec::new());
        let u: &mut [f32] = if r <= stack.len() {
            &mut stack[..r]
        } else {
            heap.resize(r, 0.0);
            &mut heap
        };
        for row in rows {
            let xr = &x[row * n_in..(row + 1) * n_in];
            for (uj, aj) in u.iter_mut().zip(map.a.chunks_exact(n_in)) {
                *uj = scale * dot(xr, aj);
            }
            // SAFETY: thread i writes only its own rows of y.
            let yr = unsafe { out.slice(row * n_out, n_out) };
            for (yv, br) in yr.iter_mut().zip(map.b.chunks_exact(r)) {
                *yv += dot(u, br);
            }
        }
    });
}

/// a . b in 8 lanes (vectorizable).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}
