//! The Llama architecture: token embeddings, L pre-norm blocks of grouped-query attention with
//! RoPE and a SwiGLU feed-forward, a final RMSNorm and the output head.
//!
//! ```text
//! x = embd[tok]
//! per block:  h = x + Wo . attn(rope(Wq . rms(x)), rope(Wk . rms(x)), Wv . rms(x))
//!             x = h + Wdown . (silu(Wgate . rms(h)) * Wup . rms(h))
//! logits = Wout . rms(x)          (Wout = embd when the file has no output.weight)
//! ```

use crate::cache::{zeroed, KvCache, KvPool, SeqCache};
use crate::config::LlamaConfig;
use crate::memory::HugeBuffer;
use crate::ModelError;
use gguf::{GgmlType, GgufFile, TensorInfo};
use kernels::attention::{attention_scratch_per_thread, attention_segments_q8, AttentionSegment, Heads};
use kernels::matmul::{matmul_add, matmul_argmax, matmul_group, matmul_swiglu_q8};
use kernels::ops::{rms_norm, rms_norm_quantize, rope_angles, rope_inplace};
use kernels::quant::{dequantize_row, quantize_row_q8};
use kernels::{matmul, BlockQ8, Format, Level, MatRef, SumOrder, ThreadPool, QK};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A weight matrix stored in the file: `rows` (N) x `cols` (K).
#[derive(Clone, Debug)]
struct Weight {
    info: TensorInfo,
    format: Format,
    rows: usize,
    cols: usize,
    /// Where the weights repacked for the machine's kernels at load time lie in the model's
    /// buffer of packed weights, when the kernels want them repacked.
    packed: Option<std::ops::Range<usize>>,
}

/// One transformer block's weights.
struct Block {
    attn_norm: Vec<f32>, // (D)
    wq: Weight,          // (H*Dh, D)
    wk: Weight,          // (Hkv*Dh, D)
    wv: Weight,          // (Hkv*Dh, D)
    wo: Weight,          // (D, H*Dh)
    ffn_norm: Vec<f32>,  // (D)
    w_gate: Weight,      // (F, D)
    w_up: Weight,        // (F, D)
    w_down: Weight,      // (D, F)
}

/// Which rows of logits a forward call computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's row (generation).
    Last,
    /// A row for every token (perplexity, speculative verification).
    All,
    /// No row (a prompt chunk whose logits nobody reads).
    Skip,
}

/// One sequence's part of a [`Llama::forward_seqs`] call: `tokens` are its next positions.
pub struct SeqTokens<'a> {
    /// The sequence (its blocks live in the pool passed with the call).
    pub seq: &'a mut SeqCache,
    /// Its new tokens.
    pub tokens: &'a [u32],
    /// Which of their logits rows to compute.
    pub logits: Logits,
}

/// A Llama-family model over a memory-mapped GGUF file.
pub struct Llama {
    /// The model's sizes.
    pub config: LlamaConfig,
    file: GgufFile,
    token_embd: Weight,    // (V, D)
    blocks: Vec<Block>,    // (L)
    output_norm: Vec<f32>, // (D)
    output: Weight,        // (V, D), the embeddings when tied
    pool: Arc<ThreadPool>,
    level: Level,
    order: SumOrder,
    packed: HugeBuffer<u8>,
    /// Token rows run through the blocks so far (lets tests prove decode never recomputes).
    tokens_evaluated: AtomicU64,
}

fn format_of(info: &TensorInfo) -> Result<Format, ModelError> {
    Ok(match info.ggml_type {
        GgmlType::F32 => Format::F32,
        GgmlType::F16 => Format::F16,
        GgmlType::BF16 => Format::Bf16,
        GgmlType::Q4_0 => Format::Q4_0,
        GgmlType::Q4_1 => Format::Q4_1,
        GgmlType::Q8_0 => Format::Q8_0,
        other => return Err(ModelError::UnsupportedTensorType { tensor: info.name.clone(), ggml_type: other.name().to_string() }),
    })
}

fn weight(file: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<Weight, ModelError> {
    let info = file.tensor(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    let want = [cols as u64, rows as u64];
    if info.dims != want {
        return Err(ModelError::TensorShape { tensor: name.to_string(), expected: want.to_vec(), got: info.dims.clone() });
    }
    let format = format_of(info)?;
    Ok(Weight { info: info.clone(), format, rows, cols, packed: None })
}

fn vector(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
    let info = file.tensor(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    if info.dims != [len as u64] {
        return Err(ModelError::TensorShape { tensor: name.to_string(), expected: vec![len as u64], got: info.dims.clone() });
    }
    let format = format_of(info)?;
    let mut out = vec![0f32; len];
    dequantize_row(format, file.tensor_data(info), &mut out);
    Ok(out)
}

impl Llama {
    /// Opens a GGUF file and loads a Llama model from it, running on `n_threads` threads.
    pub fn open(path: impl AsRef<Path>, n_threads: usize) -> Result<Llama, ModelError> {
        Llama::from_file(GgufFile::open(path)?, n_threads)
    }

    /// Loads a model from a parsed GGUF file; every tensor's presence, type and shape is checked.
    pub fn from_file(file: GgufFile, n_threads: usize) -> Result<Llama, ModelError> {
        Llama::load(file, Arc::new(ThreadPool::new(n_threads)), None)
    }

    /// A model that runs on the threads of `other` (a draft model beside its target: two pools
    /// of spinning threads on the same cores would fight), using only its first `max_layers`
    /// blocks when given (a model's own first layers make a draft for it that needs no second
    /// file).
    pub fn sharing_threads(file: GgufFile, other: &Llama, max_layers: Option<usize>) -> Result<Llama, ModelError> {
        Llama::load(file, other.pool.clone(), max_layers)
    }

    fn load(file: GgufFile, pool: Arc<ThreadPool>, max_layers: Option<usize>) -> Result<Llama, ModelError> {
        let mut c = LlamaConfig::from_gguf(&file)?;
        if let Some(n) = max_layers {
            if n == 0 || n > c.n_layer {
                return Err(ModelError::BadConfig(format!("cannot keep {n} layers of a model with {} (use 1..={})", c.n_layer, c.n_layer)));
            }
            c.n_layer = n;
        }
        let (d, f, v) = (c.n_embd, c.n_ff, c.n_vocab);
        let token_embd = weight(&file, "token_embd.weight", v, d)?;
        let mut blocks = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            blocks.push(Block {
                attn_norm: vector(&file, &n("attn_norm.weight"), d)?,
                wq: weight(&file, &n("attn_q.weight"), c.q_dim(), d)?,
                wk: weight(&file, &n("attn_k.weight"), c.kv_dim(), d)?,
                wv: weight(&file, &n("attn_v.weight"), c.kv_dim(), d)?,
                wo: weight(&file, &n("attn_output.weight"), d, c.q_dim())?,
                ffn_norm: vector(&file, &n("ffn_norm.weight"), d)?,
                w_gate: weight(&file, &n("ffn_gate.weight"), f, d)?,
                w_up: weight(&file, &n("ffn_up.weight"), f, d)?,
                w_down: weight(&file, &n("ffn_down.weight"), d, f)?,
            });
        }
        let output_norm = vector(&file, "output_norm.weight", d)?;
        let output = match file.tensor("output.weight") {
            Some(_) => weight(&file, "output.weight", v, d)?,
            None => token_embd.clone(),
        };
        let order = SumOrder::from_env();
        let packed = HugeBuffer::empty();
        let mut model = Llama {
            config: c,
            file,
            token_embd,
            blocks,
            output_norm,
            output,
            pool,
            level: Level::detect(),
            order,
            packed,
            tokens_evaluated: AtomicU64::new(0),
        };
        model.set_level(model.level);
        Ok(model)
    }

    /// The GGUF file the model was loaded from (metadata, tokenizer, chat template).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Threads the kernels run on.
    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// Bytes of weights read per decoded token (every matrix once, the output head included).
    pub fn weight_bytes_per_token(&self) -> u64 {
        let blocks: u64 =
            self.blocks.iter().map(|b| [&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down].iter().map(|w| w.info.n_bytes).sum::<u64>()).sum();
        blocks + self.output.info.n_bytes
    }

    /// A KV cache for up to `n_ctx` positions of one sequence.
    pub fn new_cache(&self, n_ctx: usize) -> Result<KvCache, ModelError> {
        KvCache::new(self.config.n_layer, n_ctx, self.config.n_head_kv, self.config.head_dim)
    }

    /// Buffers for forward calls of up to `max_tokens` tokens at a time, with caches of up to
    /// `n_ctx` positions.
    pub fn new_scratch(&self, max_tokens: usize, n_ctx: usize) -> Result<Scratch, ModelError> {
        Scratch::new(&self.config, max_tokens.max(1), n_ctx, self.pool.n_threads())
    }

    fn mat<'a>(&'a self, w: &'a Weight) -> MatRef<'a> {
        let packed = w.packed.as_ref().map(|r| &self.packed[r.clone()]);
        MatRef { format: w.format, data: self.file.tensor_data(&w.info), rows: w.rows, cols: w.cols, packed, order: self.order }
    }

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

    /// A pool of KV blocks for `n_seqs` sequences of up to `max_seq_len` positions each (forks
    /// share blocks, so beams or completions of one prompt fit in fewer).
    pub fn new_pool(&self, n_seqs: usize, max_seq_len: usize) -> Result<KvPool, ModelError> {
        KvPool::for_sequences(self.config.n_layer, self.config.n_head_kv, self.config.head_dim, n_seqs, max_seq_len)
    }

    /// A pool of `n_blocks` KV blocks ([`crate::KV_BLOCK`] positions each) for sequences of up
    /// to `max_seq_len` positions.
    pub fn new_pool_blocks(&self, n_blocks: usize, max_seq_len: usize) -> Result<KvPool, ModelError> {
        KvPool::new(self.config.n_layer, self.config.n_head_kv, self.config.head_dim, n_blocks, max_seq_len)
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
        // Embeddings and RoPE angles (T, Dh/2) per token, shared by all heads and layers.
        let mut i = 0;
        for (seq, toks) in segments {
            for (j, &tok) in toks.iter().enumerate() {
                dequantize_row(embd.format, embd.row(tok as usize), &mut s.x[i * d..(i + 1) * d]);
                rope_angles(seq.len() + j, c.rope_base, dh, &mut s.cos_sin[i * dh / 2..(i + 1) * dh / 2]);
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
            // RoPE on q in place; k is rotated on its way into the f16 cache.
            let mut i = 0;
            for (seq, toks) in segments {
                for j in 0..toks.len() {
                    let cs = &s.cos_sin[i * dh / 2..(i + 1) * dh / 2];
                    rope_inplace(&mut q[i * q_dim..(i + 1) * q_dim], dh, cs);
                    pool.write_rotated(l, seq, seq.len() + j, &k[i * kv_dim..(i + 1) * kv_dim], &v[i * kv_dim..(i + 1) * kv_dim], cs);
                    i += 1;
                }
            }
            let att = &mut s.att[..t * q_dim];
            let layer = pool.layer(l, segments[0].0);
            // att (T, H*Dh) and its 8-bit blocks, the input of the output projection
            let att_q = &mut s.wide_q[..t * q_dim / QK];
            attention_segments_q8(&self.pool, self.level, self.order, heads, layer, att_segments, q, att, att_q, &mut s.att_scratch, per_token_order);
            // x += Wo . att
            matmul_add(&self.pool, self.level, &self.mat(&b.wo), att, att_q, t, x);
            // Feed-forward: x += Wdown . (silu(Wgate . rms(x)) * Wup . rms(x))
            rms_norm_quantize(&self.pool, x, &b.ffn_norm, c.rms_eps, xn, xq, t);
            let gate = &mut s.gate[..t * f];
            let up = &mut s.up[..t * f];
            // gate = silu(Wgate . xn) * (Wup . xn)  (T, F), and its 8-bit blocks
            let gate_q = &mut s.wide_q[..t * f / QK];
            matmul_swiglu_q8(&self.pool, self.level, &self.mat(&b.w_gate), &self.mat(&b.w_up), xn, xq, t, gate, up, gate_q);
            matmul_add(&self.pool, self.level, &self.mat(&b.w_down), gate, gate_q, t, x);
            // x (T, D) += Wdown . gate
        }
        self.tokens_evaluated.fetch_add(t as u64, Ordering::Relaxed);
    }

    /// How many token rows have gone through the transformer blocks since loading.
    pub fn tokens_evaluated(&self) -> u64 {
        self.tokens_evaluated.load(Ordering::Relaxed)
    }

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

    /// The kernel level in use.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Chooses how quantized products add up their blocks (see [`SumOrder`]); the default is
    /// llama.cpp's order, or the one `FERROLM_SUM_ORDER` names.
    pub fn set_sum_order(&mut self, order: SumOrder) {
        self.order = order;
    }

    /// The summation order in use.
    pub fn sum_order(&self) -> SumOrder {
        self.order
    }
}

/// Buffers for forward calls, allocated once and reused for every token.
pub struct Scratch {
    max_tokens: usize,        // T_max
    n_ctx: usize,             // S_max the attention scratch is sized for
    x: Vec<f32>,              // (T, D) residual stream
    xn: Vec<f32>,             // (T, D) normed
    xq: Vec<BlockQ8>,         // (T, D/32) normed, 8-bit
    q: Vec<f32>,              // (T, H*Dh)
    k: Vec<f32>,              // (T, Hkv*Dh)
    v: Vec<f32>,              // (T, Hkv*Dh)
    att: Vec<f32>,            // (T, H*Dh)
    wide_q: Vec<BlockQ8>,     // (T, max(H*Dh, F)/32)
    gate: Vec<f32>,           // (T, F)
    up: Vec<f32>,             // (T, F)
    cos_sin: Vec<(f32, f32)>, // (T, Dh/2)
    att_scratch: Vec<f32>,    // (threads, S + Dh)
    logits: Vec<f32>,         // (T, V)
    best: Vec<(f32, u32)>,    // (threads) per-thread maxima of the greedy output head
}

impl Scratch {
    fn new(c: &LlamaConfig, max_tokens: usize, n_ctx: usize, n_threads: usize) -> Result<Scratch, ModelError> {
        let t = max_tokens;
        let wide = c.q_dim().max(c.n_ff);
        let oom = || ModelError::OutOfMemory {
            what: "scratch memory",
            bytes: (t as u128) * (c.n_vocab as u128) * 4,
            hint: "use a smaller batch or context",
        };
        let f = |n: Option<usize>| n.and_then(|n| zeroed(n, 0f32)).ok_or_else(oom);
        let q8 = |n: Option<usize>| n.and_then(|n| zeroed(n, BlockQ8::default())).ok_or_else(oom);
        // (a product that does not overflow means the per-thread size does not either)
        let per_thread = n_ctx.checked_mul(16).map(|_| attention_scratch_per_thread(n_ctx, c.head_dim));
        Ok(Scratch {
            max_tokens: t,
            n_ctx,
            x: f(t.checked_mul(c.n_embd))?,
            xn: f(t.checked_mul(c.n_embd))?,
            xq: q8(t.checked_mul(c.n_embd / QK))?,
            q: f(t.checked_mul(c.q_dim()))?,
            k: f(t.checked_mul(c.kv_dim()))?,
            v: f(t.checked_mul(c.kv_dim()))?,
            att: f(t.checked_mul(c.q_dim()))?,
            wide_q: q8(t.checked_mul(wide / QK))?,
            gate: f(t.checked_mul(c.n_ff))?,
            up: f(t.checked_mul(c.n_ff))?,
            cos_sin: t.checked_mul(c.head_dim / 2).and_then(|n| zeroed(n, (0f32, 0f32))).ok_or_else(oom)?,
            att_scratch: f(per_thread.and_then(|p| p.checked_mul(n_threads)))?,
            logits: f(t.checked_mul(c.n_vocab))?,
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
