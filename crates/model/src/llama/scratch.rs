//! The buffers of forward calls.

use crate::cache::zeroed;
use crate::config::LlamaConfig;
use crate::ModelError;
use kernels::attention::attention_scratch_per_thread;
use kernels::{BlockQ8, QK};

/// Buffers for forward calls, allocated once and reused for every token.
pub struct Scratch {
    pub(super) max_tokens: usize,            // T_max
    pub(super) n_ctx: usize,                 // S_max the attention scratch is sized for
    pub(super) x: Vec<f32>,                  // (T, D) residual stream
    pub(super) xn: Vec<f32>,                 // (T, D) normed
    pub(super) xq: Vec<BlockQ8>,             // (T, D/32) normed, 8-bit
    pub(super) q: Vec<f32>,                  // (T, H*Dh)
    pub(super) k: Vec<f32>,                  // (T, Hkv*Dh)
    pub(super) v: Vec<f32>,                  // (T, Hkv*Dh)
    pub(super) att: Vec<f32>,                // (T, H*Dh)
    pub(super) wide_q: Vec<BlockQ8>,         // (T, max(H*Dh, F)/32)
    pub(super) gate: Vec<f32>,               // (T, F)
    pub(super) up: Vec<f32>,                 // (T, F)
    pub(super) cos_sin: Vec<(f32, f32)>,     // (T, Dh/2)
    pub(super) cos_sin_swa: Vec<(f32, f32)>, // (T, Dh/2) for sliding-window layers, when their base differs
    pub(super) row: Vec<f32>,                // (max(D, Dh)) one row being normed
    pub(super) att_scratch: Vec<f32>,        // (threads, S + Dh)
    pub(super) logits: Vec<f32>,             // (T, V)
    pub(super) best: Vec<(f32, u32)>,        // (threads) per-thread maxima of the greedy output head
}

/// What to do when a buffer sized by the batch does not fit.
const PER_TOKEN: &str = "use a smaller batch or context";

/// `n` copies of `value`, or the error that names the buffer and its size in bytes. Counts are
/// u128, so that a size past the address space is still reported as it is.
fn buffer<T: Clone>(what: &'static str, n: u128, value: T, hint: &'static str) -> Result<Vec<T>, ModelError> {
    let bytes = n * std::mem::size_of::<T>() as u128;
    usize::try_from(n).ok().and_then(|n| zeroed(n, value)).ok_or(ModelError::OutOfMemory { what, bytes, hint })
}

/// Floats of the attention scratch of `n_threads` threads for `n_ctx` positions: exact where the
/// count fits in usize, else extrapolated in u128 (it is affine in the positions), for the message.
fn attention_floats(n_ctx: usize, head_dim: usize, n_threads: usize) -> u128 {
    let per_thread = if n_ctx.checked_mul(16).is_some() {
        attention_scratch_per_thread(n_ctx, head_dim) as u128
    } else {
        let (at0, at1) = (attention_scratch_per_thread(0, head_dim) as u128, attention_scratch_per_thread(1, head_dim) as u128);
        at0 + (at1 - at0) * n_ctx as u128
    };
    per_thread * n_threads as u128
}

impl Scratch {
    pub(super) fn new(c: &LlamaConfig, max_tokens: usize, n_ctx: usize, n_threads: usize) -> Result<Scratch, ModelError> {
        let t = max_tokens as u128;
        let [d, q_dim, kv_dim, f, v, dh] = [c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff, c.n_vocab, c.head_dim].map(|n| n as u128);
        let wide = q_dim.max(f);
        let qk = QK as u128;
        Ok(Scratch {
            max_tokens,
            n_ctx,
            x: buffer("scratch for the residual stream (batch x width)", t * d, 0f32, PER_TOKEN)?,
            xn: buffer("scratch for the normed activations (batch x width)", t * d, 0f32, PER_TOKEN)?,
            xq: buffer("scratch for the 8-bit activations (batch x width)", t * (d / qk), BlockQ8::default(), PER_TOKEN)?,
            q: buffer("scratch for the queries (batch x heads x head width)", t * q_dim, 0f32, PER_TOKEN)?,
            k: buffer("scratch for the keys (batch x KV heads x head width)", t * kv_dim, 0f32, PER_TOKEN)?,
            v: buffer("scratch for the values (batch x KV heads x head width)", t * kv_dim, 0f32, PER_TOKEN)?,
            att: buffer("scratch for the attention output (batch x heads x head width)", t * q_dim, 0f32, PER_TOKEN)?,
            wide_q: buffer("scratch for the 8-bit projection inputs (batch x feed-forward width)", t * (wide / qk), BlockQ8::default(), PER_TOKEN)?,
            gate: buffer("scratch for the feed-forward gate (batch x feed-forward width)", t * f, 0f32, PER_TOKEN)?,
            up: buffer("scratch for the feed-forward up projection (batch x feed-forward width)", t * f, 0f32, PER_TOKEN)?,
            cos_sin: buffer("scratch for the RoPE angles (batch x head width)", t * (dh / 2), (0f32, 0f32), PER_TOKEN)?,
            cos_sin_swa: buffer(
                "scratch for the sliding-window layers' RoPE angles (batch x head width)",
                if c.family.sliding_window.is_some() { t * (dh / 2) } else { 0 },
                (0f32, 0f32),
                PER_TOKEN,
            )?,
            row: vec![0f32; c.n_embd.max(c.head_dim)],
            att_scratch: buffer(
                "attention scratch (threads x context)",
                attention_floats(n_ctx, c.head_dim, n_threads),
                0f32,
                "use a smaller context or fewer threads",
            )?,
            logits: buffer("scratch for the logits (batch x vocabulary)", t * v, 0f32, "use a smaller batch")?,
            best: vec![(0.0, 0); n_threads],
        })
    }

    /// The most tokens one batch holds.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The first `n` floats of the logits buffer: after a forward call, its logits rows.
    pub fn logits(&self, n: usize) -> &[f32] {
        &self.logits[..n.min(self.logits.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small model's sizes with the vocabulary given.
    fn config(n_vocab: usize) -> LlamaConfig {
        LlamaConfig {
            architecture: "llama".into(),
            n_layer: 2,
            n_embd: 64,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 16,
            n_ff: 128,
            n_vocab,
            n_ctx_train: 128,
            rope_base: 10000.0,
            rms_eps: 1e-5,
            family: crate::config::Family::LLAMA,
        }
    }

    #[test]
    fn out_of_memory_for_the_logits_reports_the_logits_size() {
        // T = 2 tokens x V = 2^62 floats: 2^65 bytes, which no machine can allocate; every other
        // buffer is small.
        let err = Scratch::new(&config(1 << 62), 2, 64, 2).err().expect("the logits cannot fit");
        let msg = err.to_string();
        assert_eq!(
            msg,
            format!(
                "the scratch for the logits (batch x vocabulary) needs {} bytes, more than this machine can allocate: use a smaller batch",
                1u128 << 65
            )
        );
    }

    #[test]
    fn out_of_memory_for_the_attention_scratch_reports_its_own_size() {
        // A context of 2^62 positions on 3 threads: the attention scratch fails, not the logits
        // (T x V is small), and its size is counted past the address space.
        let n_ctx = 1usize << 62;
        let err = Scratch::new(&config(100), 2, n_ctx, 3).err().expect("the attention scratch cannot fit");
        let per_thread = |s: u128| {
            attention_scratch_per_thread(0, 16) as u128 + s * (attention_scratch_per_thread(1, 16) - attention_scratch_per_thread(0, 16)) as u128
        };
        let bytes = per_thread(n_ctx as u128) * 3 * 4;
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("the attention scratch (threads x context) needs {bytes} bytes")), "{msg}");
        assert!(msg.ends_with("use a smaller context or fewer threads"), "{msg}");
        // The same count as the kernels' for a context that fits.
        assert_eq!(attention_floats(1000, 16, 3), attention_scratch_per_thread(1000, 16) as u128 * 3);
    }
}
