//! The Llama architecture: token embeddings, L pre-norm blocks of grouped-query attention with
//! RoPE and a SwiGLU feed-forward, a final RMSNorm and the output head.
//!
//! ```text
//! x = embd[tok]
//! per block:  h = x + Wo . attn(rope(Wq . rms(x)), rope(Wk . rms(x)), Wv . rms(x))
//!             x = h + Wdown . (silu(Wgate . rms(h)) * Wup . rms(h))
//! logits = Wout . rms(x)          (Wout = embd when the file has no output.weight)
//! ```
//!
//! The same code runs the variations of this block that [`crate::config::Family`] describes.
//! Gemma 3's:
//!
//! ```text
//! x = embd[tok] * sqrt(D)
//! per block:  q, k = rms_head(Wq . rms(x)), rms_head(Wk . rms(x))      (per-head norms)
//!             h = x + rms(Wo . attn(rope_neox(q), rope_neox(k), Wv . rms(x)))   (post-norm)
//!             x = h + rms(Wdown . (gelu_tanh(Wgate . rms(h)) * Wup . rms(h)))
//! ```
//! with five of every six layers attending through a sliding window, their RoPE base apart.
//!
//! Files: `load.rs` (reading and checking the tensors), `repack.rs` (the weights repacked for the
//! kernel level), `forward.rs` (the forward passes), `scratch.rs` (their buffers); the model's
//! types and accessors are here.

mod forward;
mod load;
mod repack;
mod scratch;

pub use load::{ggml_type_of, kernel_format};
pub use scratch::Scratch;

use crate::cache::{KvCache, KvPool, KvType, SeqCache};
use crate::config::LlamaConfig;
use crate::lora::LoraSet;
use crate::memory::HugeBuffer;
use crate::ModelError;
use gguf::{GgufFile, TensorInfo};
use kernels::{Format, Level, MatRef, SumOrder, ThreadPool};
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
    /// The variations' weights, present when the family has them.
    q_norm: Option<Vec<f32>>, // (Dh)
    k_norm: Option<Vec<f32>>, // (Dh)
    post_attn_norm: Option<Vec<f32>>, // (D)
    post_ffw_norm: Option<Vec<f32>>, // (D)
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
    /// What new KV caches and pools store.
    kv_type: KvType,
    packed: HugeBuffer<u8>,
    /// Token rows run through the blocks so far (lets tests prove decode never recomputes).
    tokens_evaluated: AtomicU64,
    /// A LoRA adapter applied unmerged after the products it adapts.
    lora: Option<Arc<LoraSet>>,
}

impl Llama {
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
        KvCache::new(self.config.n_layer, n_ctx, self.config.n_head_kv, self.config.head_dim, self.kv_type)
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

    /// A pool of KV blocks for `n_seqs` sequences of up to `max_seq_len` positions each (forks
    /// share blocks, so beams or completions of one prompt fit in fewer).
    pub fn new_pool(&self, n_seqs: usize, max_seq_len: usize) -> Result<KvPool, ModelError> {
        KvPool::for_sequences(self.config.n_layer, self.config.n_head_kv, self.config.head_dim, n_seqs, max_seq_len, self.kv_type)
    }

    /// A pool of `n_blocks` KV blocks ([`crate::KV_BLOCK`] positions each) for sequences of up
    /// to `max_seq_len` positions.
    pub fn new_pool_blocks(&self, n_blocks: usize, max_seq_len: usize) -> Result<KvPool, ModelError> {
        KvPool::new(self.config.n_layer, self.config.n_head_kv, self.config.head_dim, n_blocks, max_seq_len, self.kv_type)
    }

    /// How many token rows have gone through the transformer blocks since loading.
    pub fn tokens_evaluated(&self) -> u64 {
        self.tokens_evaluated.load(Ordering::Relaxed)
    }

    /// The kernel level in use.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Chooses how quantized products add up their blocks (see [`SumOrder`]); the default is the
    /// block order, or the one `FERROLM_SUM_ORDER` names (see [`SumOrder::from_env`]).
    pub fn set_sum_order(&mut self, order: SumOrder) {
        self.order = order;
    }

    /// The summation order in use.
    pub fn sum_order(&self) -> SumOrder {
        self.order
    }

    /// Chooses what the caches and pools made from now on store (f16 by default); Q8_0 needs
    /// heads of a multiple of 32 values and at most 8 query heads per KV head, and runs
    /// attention in the block order's kernel whatever the products' order.
    pub fn set_kv_type(&mut self, kv_type: KvType) -> Result<(), ModelError> {
        let c = &self.config;
        let group = c.n_head / c.n_head_kv.max(1);
        if kv_type == KvType::Q8_0 && (!c.head_dim.is_multiple_of(32) || group > 8) {
            return Err(ModelError::Unsupported(format!(
                "a Q8_0 KV cache for this model (heads of {} values, {group} query heads per KV head; it needs a multiple of 32 and at most 8): use --kv-type f16",
                c.head_dim
            )));
        }
        self.kv_type = kv_type;
        Ok(())
    }

    /// What new caches and pools store.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Applies `lora` (unmerged) from the next forward call on, or none; an adapter made for
    /// other sizes is an error and leaves the model as it was.
    pub fn set_lora(&mut self, lora: Option<LoraSet>) -> Result<(), ModelError> {
        if lora.is_some() && self.config.family != crate::config::Family::LLAMA {
            return Err(ModelError::Unsupported(format!("LoRA adapters on {} models", self.config.architecture)));
        }
        if let Some(set) = &lora {
            set.check(&self.config)?;
        }
        self.lora = lora.map(Arc::new);
        Ok(())
    }

    /// The adapter in use, if any.
    pub fn lora(&self) -> Option<&LoraSet> {
        self.lora.as_deref()
    }
}
