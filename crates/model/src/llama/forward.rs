//! The forward passes: one sequence, a batch of sequences, verification, the greedy head.

use super::{Llama, Logits, Scratch, SeqTokens};
use crate::cache::{KvCache, KvPool, KvType, LayerView, SeqCache};
use crate::config::FfnAct;
use crate::lora::lora_add;
use crate::ModelError;
use kernels::attention::{attention_segments_q8, attention_window_q8, AttentionSegment, Heads, KvElem, KvView};
use kernels::gelu::geglu_tanh_inplace;
use kernels::matmul::{matmul_add, matmul_argmax, matmul_group, matmul_swiglu_q8};
use kernels::ops::{add_inplace, rms_norm, rms_norm_quantize, rope_angles, rope_inplace, rope_neox_inplace, swiglu_inplace};
use kernels::quant::{dequantize_row, quantize_row_q8, quantize_rows_q8};
use kernels::{matmul, BlockQ8, Level, SumOrder, ThreadPool, QK};
use std::sync::atomic::Ordering;

impl Llama {
    /// Runs `tokens` (the next positions of the sequence in `cache`) through the model and returns
    /// logits: (V) for [`Logits::Last`], (T, V) for [`Logits::All`], nothing for [`Logits::Skip`].
    ///
    /// Tokens are processed in batches of the scratch's capacity; [`Logits::All`] needs all of
    /// them in one batch. Nothing is allocated. The cache grows by `tokens.len()` positions.
    pub fn forward<'s>(&self, tokens: &[u32], cache: &mut KvCache, scratch: &'s mut Scratch, logits: Logits) -> Result<&'s [f32], ModelError> {
        let last_t = self.forward_one(tokens, &mut cache.pool, &mut cache.seq, scratch, logits, false)?;
        let n = match logits {
            Logits::Last => self.head_input(scratch, std::iter::once(last_t - 1..last_t)),
            Logits::All => self.head_input(scratch, std::iter::once(0..last_t)),
            Logits::Skip => 0,
        };
        Ok(self.head_logits(scratch, n))
    }

    /// Logits (T, V) for every token, each exactly (to the bit) what a separate single-token
    /// [`Llama::forward`] would give at its position: for verifying drafted tokens in one call
    /// (speculative decoding) without changing what step-by-step decoding would produce.
    /// Attention then sums in the single-token order; all other operations are per token anyway.
    pub fn forward_verify<'s>(&self, tokens: &[u32], cache: &mut KvCache, scratch: &'s mut Scratch) -> Result<&'s [f32], ModelError> {
        let n = self.forward_one(tokens, &mut cache.pool, &mut cache.seq, scratch, Logits::All, true)?;
        let n = self.head_input(scratch, std::iter::once(0..n));
        Ok(self.head_logits(scratch, n))
    }

    /// As [`Llama::forward`] with [`Logits::Last`], returning the most likely next token (greedy
    /// decoding): the output head finds the maximum while it computes the logits, which stay
    /// readable in the scratch afterwards. The same token as the argmax of `forward`'s logits.
    pub fn forward_greedy(&self, tokens: &[u32], cache: &mut KvCache, scratch: &mut Scratch) -> Result<u32, ModelError> {
        let last_t = self.forward_one(tokens, &mut cache.pool, &mut cache.seq, scratch, Logits::Last, false)?;
        self.head_input(scratch, std::iter::once(last_t - 1..last_t));
        let d = self.config.n_embd;
        let out = &mut scratch.logits[..self.config.n_vocab];
        Ok(matmul_argmax(&self.pool, self.level, &self.mat(&self.output), &scratch.xn[..d], &scratch.xq[..d / QK], out, &mut scratch.best))
    }

    /// One forward call over tokens of several sequences of `pool` (each segment's tokens are the
    /// next positions of its sequence), in one pass through the weights. Returns the logits rows
    /// the segments ask for, in segment order: 1 for [`Logits::Last`], its token count for
    /// [`Logits::All`], none for [`Logits::Skip`].
    ///
    /// Every sequence gets exactly the bits it would get in a call of its own with the same
    /// tokens ([`Llama::forward`] on a single cache), whatever else is in the batch: all
    /// operations but attention work token by token, and attention sums each segment in its own
    /// order. So batching changes speed, never results. All tokens must fit in one batch of the
    /// scratch. Each sequence grows by its token count.
    pub fn forward_seqs<'s>(&self, batch: &mut [SeqTokens], pool: &mut KvPool, scratch: &'s mut Scratch) -> Result<&'s [f32], ModelError> {
        let total: usize = batch.iter().map(|b| b.tokens.len()).sum();
        if batch.is_empty() || batch.iter().any(|b| b.tokens.is_empty()) {
            return Err(ModelError::EmptyBatch);
        }
        if total > scratch.max_tokens {
            return Err(ModelError::BatchTooLarge { tokens: total, max: scratch.max_tokens });
        }
        for b in batch.iter() {
            self.check(b.tokens, b.seq, pool, scratch)?;
        }
        for b in batch.iter_mut() {
            pool.reserve(b.seq, b.tokens.len())?;
        }
        let segments: Vec<(&SeqCache, &[u32])> = batch.iter().map(|b| (&*b.seq, b.tokens)).collect();
        self.run_segments(&segments, pool, scratch, false);
        drop(segments);
        let mut rows = Vec::with_capacity(batch.len());
        let mut first = 0;
        for b in batch.iter_mut() {
            let n = b.tokens.len();
            b.seq.len += n;
            match b.logits {
                Logits::Last => rows.push(first + n - 1..first + n),
                Logits::All => rows.push(first..first + n),
                Logits::Skip => {}
            }
            first += n;
        }
        let n = self.head_input(scratch, rows);
        Ok(self.head_logits(scratch, n))
    }

    /// The output head's input: final RMSNorm of the residual rows in `rows` into xn (n, D) and
    /// its 8-bit blocks into xq; returns n.
    fn head_input(&self, s: &mut Scratch, rows: impl IntoIterator<Item = std::ops::Range<usize>>) -> usize {
        let d = self.config.n_embd;
        let mut n = 0;
        for t in rows.into_iter().flatten() {
            rms_norm(&s.x[t * d..(t + 1) * d], &self.output_norm, self.config.rms_eps, &mut s.xn[n * d..(n + 1) * d]);
            n += 1;
        }
        quantize_row_q8(&s.xn[..n * d], &mut s.xq[..n * d / QK]);
        n
    }

    /// Logits (n, V) of the n rows [`Llama::head_input`] prepared.
    fn head_logits<'s>(&self, s: &'s mut Scratch, n: usize) -> &'s [f32] {
        let (d, v) = (self.config.n_embd, self.config.n_vocab);
        if n > 0 {
            matmul(&self.pool, self.level, &self.mat(&self.output), &s.xn[..n * d], &s.xq[..n * d / QK], n, &mut s.logits[..n * v]);
        }
        &s.logits[..n * v]
    }

    /// Checks that `tokens` can be appended to `seq` of `pool` with `scratch`.
    fn check(&self, tokens: &[u32], seq: &SeqCache, pool: &KvPool, scratch: &Scratch) -> Result<(), ModelError> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(ModelError::EmptyBatch);
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(ModelError::InvalidToken { token: bad, n_vocab: c.n_vocab });
        }
        if seq.len() + tokens.len() > pool.max_seq_len() {
            return Err(ModelError::ContextFull { capacity: pool.max_seq_len(), needed: seq.len() + tokens.len() });
        }
        if !pool.owns(seq) {
            return Err(ModelError::ForeignSequence);
        }
        if pool.max_seq_len() > scratch.n_ctx || pool.kv_dim() != c.kv_dim() || pool.head_dim() != c.head_dim || pool.n_layer() != c.n_layer {
            return Err(ModelError::CacheMismatch);
        }
        Ok(())
    }

    /// Checks a forward call of one sequence and runs `tokens` through the blocks in batches of
    /// the scratch's size (attention in the single-token order when `per_token_order`); returns
    /// the size of the last batch, whose residual rows are left in scratch.x.
    fn forward_one(
        &self,
        tokens: &[u32],
        pool: &mut KvPool,
        seq: &mut SeqCache,
        scratch: &mut Scratch,
        logits: Logits,
        per_token_order: bool,
    ) -> Result<usize, ModelError> {
        self.check(tokens, seq, pool, scratch)?;
        if logits == Logits::All && tokens.len() > scratch.max_tokens {
            return Err(ModelError::BatchTooLarge { tokens: tokens.len(), max: scratch.max_tokens });
        }
        pool.reserve(seq, tokens.len())?;
        let mut last_t = 0;
        for chunk in tokens.chunks(scratch.max_tokens) {
            self.run_segments(&[(&*seq, chunk)], pool, scratch, per_token_order);
            seq.len += chunk.len();
            last_t = chunk.len();
        }
        Ok(last_t)
    }

    /// One batch of T <= max_tokens tokens, made of segments of consecutive new positions of
    /// sequences (their blocks already reserved), through every block; leaves the residual stream
    /// in scratch.x (T, D). Sequence lengths are advanced by the caller.
    fn run_segments(&self, segments: &[(&SeqCache, &[u32])], pool: &mut KvPool, s: &mut Scratch, per_token_order: bool) {
        let c = &self.config;
        let t: usize = segments.iter().map(|(_, toks)| toks.len()).sum();
        let (d, f) = (c.n_embd, c.n_ff);
        let (q_dim, kv_dim, dh) = (c.q_dim(), c.kv_dim(), c.head_dim);
        let embd = self.mat(&self.token_embd);
        let fam = &c.family;
        let swa_angles = fam.sliding_window.is_some() && fam.rope_base_swa != c.rope_base;
        // Embeddings and RoPE angles (T, Dh/2) per token, shared by all heads and layers (the
        // sliding-window layers' apart when their base differs).
        let mut i = 0;
        for (seq, toks) in segments {
            for (j, &tok) in toks.iter().enumerate() {
                let row = &mut s.x[i * d..(i + 1) * d];
                dequantize_row(embd.format, embd.row(tok as usize), row);
                if let Some(scale) = fam.embd_scale {
                    row.iter_mut().for_each(|v| *v *= scale);
                }
                rope_angles(seq.len() + j, c.rope_base, dh, &mut s.cos_sin[i * dh / 2..(i + 1) * dh / 2]);
                if swa_angles {
                    rope_angles(seq.len() + j, fam.rope_base_swa, dh, &mut s.cos_sin_swa[i * dh / 2..(i + 1) * dh / 2]);
                }
                i += 1;
            }
        }
        let heads = Heads { n_head: c.n_head, n_head_kv: c.n_head_kv, head_dim: dh };
        // The attention segments, the same for every layer: one sequence (prefill, a single
        // decode) needs no list; several get one, built once per call.
        let one: [AttentionSegment; 1];
        let many: Vec<AttentionSegment>;
        let att_segments: &[AttentionSegment] = if let [(seq, toks)] = segments {
            one = [AttentionSegment { first_token: 0, n_tokens: toks.len(), start: seq.len(), table: seq.blocks() }];
            &one
        } else {
            let mut first = 0;
            many = segments
                .iter()
                .map(|(seq, toks)| {
                    let seg = AttentionSegment { first_token: first, n_tokens: toks.len(), start: seq.len(), table: seq.blocks() };
                    first += toks.len();
                    seg
                })
                .collect();
            &many
        };
        let x = &mut s.x[..t * d];
        let xn = &mut s.xn[..t * d];
        let xq = &mut s.xq[..t * d / QK];
        for (l, b) in self.blocks.iter().enumerate() {
            // Attention: xn = rms(x); q, k, v = W . xn
            rms_norm_quantize(&self.pool, x, &b.attn_norm, c.rms_eps, xn, xq, t);
            let q = &mut s.q[..t * q_dim];
            let k = &mut s.k[..t * kv_dim];
            let v = &mut s.v[..t * kv_dim];
            // q (T, H*Dh), k (T, Hkv*Dh), v (T, Hkv*Dh) in one pass of the pool
            let qkv = [(self.mat(&b.wq), &mut *q), (self.mat(&b.wk), &mut *k), (self.mat(&b.wv), &mut *v)];
            matmul_group(&self.pool, self.level, qkv, xn, xq, t);
            if let Some(lora) = &self.lora {
                for (i, y) in [(0, &mut *q), (1, &mut *k), (2, &mut *v)] {
                    if let Some(map) = &lora.layers[l][i] {
                        lora_add(&self.pool, map, lora.scale, xn, t, y);
                    }
                }
            }
            // Per-head norms of q and k (Gemma), each head through the row buffer.
            if let (Some(qn), Some(kn)) = (&b.q_norm, &b.k_norm) {
                let row = &mut s.row[..dh];
                for (x, w) in [(&mut *q, qn), (&mut *k, kn)] {
                    for head in x.chunks_exact_mut(dh) {
                        rms_norm(head, w, c.rms_eps, row);
                        head.copy_from_slice(row);
                    }
                }
            }
            // RoPE on q in place; k is rotated on its way into the f16 cache.
            let angles = if swa_angles && fam.is_sliding(l) { &s.cos_sin_swa } else { &s.cos_sin };
            let mut i = 0;
            for (seq, toks) in segments {
                for j in 0..toks.len() {
                    let cs = &angles[i * dh / 2..(i + 1) * dh / 2];
                    let qi = &mut q[i * q_dim..(i + 1) * q_dim];
                    if fam.rope_neox {
                        rope_neox_inplace(qi, dh, cs);
                    } else {
                        rope_inplace(qi, dh, cs);
                    }
                    pool.write_rotated(l, seq, seq.len() + j, &k[i * kv_dim..(i + 1) * kv_dim], &v[i * kv_dim..(i + 1) * kv_dim], cs, fam.rope_neox);
                    i += 1;
                }
            }
            // (llama.cpp's attention order exists over an f16 cache only.)
            if fam.q_scaled_first && self.order == kernels::SumOrder::LlamaCpp && pool.kv_type() == KvType::F16 {
                round_q_scaled_first(q, 1.0 / (dh as f32).sqrt());
            }
            let att = &mut s.att[..t * q_dim];
            // att (T, H*Dh) and its 8-bit blocks, the input of the output projection
            let att_q = &mut s.wide_q[..t * q_dim / QK];
            // A sliding-window layer takes the windowed kernel once a token of the call is past
            // the window (before that the two give the same bits in the block order).
            let window = fam.sliding_window.filter(|&w| fam.is_sliding(l) && att_segments.iter().any(|g| g.start + g.n_tokens > w));
            let attend = Attend { pool: &self.pool, level: self.level, order: self.order, heads, segments: att_segments, window, per_token_order };
            match pool.layer(l, segments[0].0) {
                LayerView::F16(layer) => attend.run(layer, q, att, att_q, &mut s.att_scratch),
                LayerView::Q8(layer) => attend.run(layer, q, att, att_q, &mut s.att_scratch),
            }
            // x += Wo . att  (or x += rms(Wo . att) with a post-norm, through xn; with an adapter on
            // o, x += (Wo . att + its LoRA term) through xn, as llama.cpp adds them)
            let o_lora = self.lora.as_deref().and_then(|lora| Some((lora.scale, lora.layers[l][3].as_ref()?)));
            if let Some(post) = &b.post_attn_norm {
                matmul(&self.pool, self.level, &self.mat(&b.wo), att, att_q, t, xn);
                add_normed(x, xn, post, c.rms_eps, &mut s.row[..d]);
            } else if let Some((scale, map)) = o_lora {
                matmul(&self.pool, self.level, &self.mat(&b.wo), att, att_q, t, xn);
                lora_add(&self.pool, map, scale, att, t, xn);
                add_inplace(x, xn);
            } else {
                matmul_add(&self.pool, self.level, &self.mat(&b.wo), att, att_q, t, x);
            }
            // Feed-forward: x += Wdown . (silu(Wgate . rms(x)) * Wup . rms(x))
            rms_norm_quantize(&self.pool, x, &b.ffn_norm, c.rms_eps, xn, xq, t);
            let gate = &mut s.gate[..t * f];
            let up = &mut s.up[..t * f];
            // gate = silu(Wgate . xn) * (Wup . xn)  (T, F), and its 8-bit blocks
            let gate_q = &mut s.wide_q[..t * f / QK];
            let ffn_lora = self.lora.as_deref().filter(|lora| lora.layers[l][4].is_some() || lora.layers[l][5].is_some());
            if fam.ffn_act == FfnAct::GeluTanh {
                // gate = gelu_tanh(Wgate . xn) * (Wup . xn), as the peers' GeGLU (no adapters here).
                matmul_group(&self.pool, self.level, [(self.mat(&b.w_gate), &mut *gate), (self.mat(&b.w_up), &mut *up)], xn, xq, t);
                geglu_tanh_inplace(gate, up);
                quantize_rows_q8(&self.pool, gate, gate_q, t);
            } else if let Some(lora) = ffn_lora {
                // An adapter on gate or up adds to them before the SwiGLU: the products apart.
                matmul_group(&self.pool, self.level, [(self.mat(&b.w_gate), &mut *gate), (self.mat(&b.w_up), &mut *up)], xn, xq, t);
                for (i, y) in [(4, &mut *gate), (5, &mut *up)] {
                    if let Some(map) = &lora.layers[l][i] {
                        lora_add(&self.pool, map, lora.scale, xn, t, y);
                    }
                }
                swiglu_inplace(gate, up);
                quantize_rows_q8(&self.pool, gate, gate_q, t);
            } else {
                matmul_swiglu_q8(&self.pool, self.level, &self.mat(&b.w_gate), &self.mat(&b.w_up), xn, xq, t, gate, up, gate_q);
            }
            let down_lora = self.lora.as_deref().and_then(|lora| Some((lora.scale, lora.layers[l][6].as_ref()?)));
            if let Some(post) = &b.post_ffw_norm {
                matmul(&self.pool, self.level, &self.mat(&b.w_down), gate, gate_q, t, xn);
                add_normed(x, xn, post, c.rms_eps, &mut s.row[..d]);
            } else if let Some((scale, map)) = down_lora {
                matmul(&self.pool, self.level, &self.mat(&b.w_down), gate, gate_q, t, xn);
                lora_add(&self.pool, map, scale, gate, t, xn);
                add_inplace(x, xn);
            } else {
                matmul_add(&self.pool, self.level, &self.mat(&b.w_down), gate, gate_q, t, x);
            }
            // x (T, D) += Wdown . gate
        }
        self.tokens_evaluated.fetch_add(t as u64, Ordering::Relaxed);
    }
}

/// x (T, D) += rms_norm(y) * weight, row by row through `row` (D): a post-norm and its residual add.
fn add_normed(x: &mut [f32], y: &[f32], weight: &[f32], eps: f32, row: &mut [f32]) {
    let d = weight.len();
    for (xr, yr) in x.chunks_exact_mut(d).zip(y.chunks_exact(d)) {
        rms_norm(yr, weight, eps, row);
        add_inplace(xr, row);
    }
}

/// One layer's attention call, the same over either type of cache.
struct Attend<'a> {
    pool: &'a ThreadPool,
    level: Level,
    order: SumOrder,
    heads: Heads,
    segments: &'a [AttentionSegment<'a>],
    /// The sliding window, when this layer has one and a token of the call is past it.
    window: Option<usize>,
    per_token_order: bool,
}

impl Attend<'_> {
    /// att (T, H*Dh) and its 8-bit blocks att_q from q (T, H*Dh) over `layer`.
    fn run<T: KvElem>(&self, layer: KvView<T>, q: &[f32], att: &mut [f32], att_q: &mut [BlockQ8], scratch: &mut [f32]) {
        let Attend { pool, level, order, heads, segments, window, per_token_order } = *self;
        match window {
            Some(w) => attention_window_q8(pool, level, heads, layer, segments, w, q, att, att_q, scratch),
            None => attention_segments_q8(pool, level, order, heads, layer, segments, q, att, att_q, scratch, per_token_order),
        }
    }
}

/// llama.cpp's order for a family whose graph scales q before attention (Gemma 3): its attention
/// rounds `scale * q` to f16 and scales the scores by 1; ours rounds q to f16 and scales the
/// scores. With a power-of-two scale the two agree except where `scale * q` is an f16 subnormal
/// (fewer bits), so q becomes `f16(scale * q) / scale`: exact in f32, unchanged by the kernels' f16
/// rounding, and its scores times `scale` are llama.cpp's bit for bit. (Another scale would need the
/// kernels to scale q themselves; Gemma 3's heads of 256 give 1/16.)
fn round_q_scaled_first(q: &mut [f32], scale: f32) {
    if scale.to_bits() & 0x007f_ffff != 0 {
        return; // not a power of two: left as it is (not bit-identical to llama.cpp)
    }
    for x in q {
        *x = half::f16::from_f32(*x * scale).to_f32() / scale;
    }
}

#[cfg(test)]
mod tests {
    use super::round_q_scaled_first;
    use half::f16;

    /// What llama.cpp computes for Gemma's scores: `f16(scale * q) . k` (f32 fused multiply-adds
    /// in order), against what ours computes from the rounded q: `f16(q') . k * scale`.
    #[test]
    fn rounded_q_gives_the_scores_of_q_scaled_before_attention() {
        let scale = 1.0 / 16.0;
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..200 {
            // Values from 1e-7 to 10, so that many of `scale * q` are f16 subnormals.
            let q: Vec<f32> = (0..256)
                .map(|_| (next() % 2000) as f32 / 200.0 * 10f32.powi(-((next() % 8) as i32)) * if next() % 2 == 0 { 1.0 } else { -1.0 })
                .collect();
            let k: Vec<f32> = (0..256).map(|_| f16::from_f32((next() % 2000) as f32 / 1000.0 - 1.0).to_f32()).collect();
            let dot = |a: &[f32]| a.iter().zip(&k).fold(0f32, |acc, (&x, &y)| f16::from_f32(x).to_f32().mul_add(y, acc));
            let theirs = dot(&q.iter().map(|&x| x * scale).collect::<Vec<_>>());
            let mut ours_q = q.clone();
            round_q_scaled_first(&mut ours_q, scale);
            assert!(ours_q.iter().all(|&x| f16::from_f32(x).to_f32() == x), "q' must survive the kernels' f16 rounding");
            assert_eq!((dot(&ours_q) * scale).to_bits(), theirs.to_bits());
        }
    }
}
