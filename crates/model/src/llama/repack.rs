//! The weights repacked at load time into the row groups of the kernel level in use.

use super::{Llama, Weight};
use crate::memory::HugeBuffer;
use kernels::Level;

impl Llama {
    /// Chooses the kernel level (tests compare levels; normal use keeps the detected one) and
    /// repacks the weights for it.
    pub fn set_level(&mut self, level: Level) {
        self.level = level;
        let file = &self.file;
        let pack = |w: &Weight| kernels::matmul::pack_for(level, w.format, file.tensor_data(&w.info), w.rows, w.cols);
        let mut weights: Vec<&mut Weight> =
            self.blocks.iter_mut().flat_map(|b| [&mut b.wq, &mut b.wk, &mut b.wv, &mut b.wo, &mut b.w_gate, &mut b.w_up, &mut b.w_down]).collect();
        weights.push(&mut self.output);
        let packed: Vec<Option<Vec<u8>>> = weights.iter().map(|w| pack(w)).collect();
        // All of them back to back in one buffer on huge pages (see `memory`). Without the
        // memory for it the weights stay unpacked and run on the row kernels.
        let total: usize = packed.iter().flatten().map(Vec::len).sum();
        self.packed = HugeBuffer::zeroed(total).unwrap_or_else(HugeBuffer::empty);
        let fits = self.packed.len() == total;
        let mut start = 0;
        for (w, p) in weights.into_iter().zip(&packed) {
            w.packed = match p {
                Some(p) if fits => {
                    let range = start..start + p.len();
                    self.packed[range.clone()].copy_from_slice(p);
                    start = range.end;
                    Some(range)
                }
                _ => None,
            };
        }
    }
}
