//! The hyper-parameters of a Llama-family model, read from GGUF metadata: the Llama architecture
//! itself, and the variations of it that [`Family`] describes (Gemma 3).

use crate::ModelError;
use gguf::GgufFile;

/// Sizes and constants of a Llama-family model (legend: D, H, Hkv, Dh, F, V, L in `lib.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// `general.architecture` of the file.
    pub architecture: String,
    /// L, transformer blocks.
    pub n_layer: usize,
    /// D, model width.
    pub n_embd: usize,
    /// H, query heads.
    pub n_head: usize,
    /// Hkv, key/value heads (H for multi-head attention, fewer for grouped-query attention).
    pub n_head_kv: usize,
    /// Dh, width of one head.
    pub head_dim: usize,
    /// F, feed-forward hidden width.
    pub n_ff: usize,
    /// V, vocabulary size (rows of the embedding table).
    pub n_vocab: usize,
    /// Context length the model was trained for.
    pub n_ctx_train: usize,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// How the architecture differs from Llama's block.
    pub family: Family,
}

/// The variations of the Llama block this code runs (each `None`/`false` is Llama's choice).
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// Token embeddings are multiplied by this (Gemma: sqrt(D)).
    pub embd_scale: Option<f32>,
    /// RoPE rotates the pairs (i, i + Dh/2) of a head (the NeoX layout) instead of the adjacent
    /// pairs of GGUF Llama weights.
    pub rope_neox: bool,
    /// RMSNorm of each head of q and of k (weights `attn_q_norm`, `attn_k_norm`, (Dh)) before RoPE.
    pub qk_norm: bool,
    /// RMSNorm of the attention output and of the feed-forward output (`post_attention_norm`,
    /// `post_ffw_norm`) before each is added to the residual stream.
    pub post_norms: bool,
    /// The feed-forward gate's activation.
    pub ffn_act: FfnAct,
    /// Sliding-window attention: a position sees the last `window` positions (itself included)
    /// in every layer but each sixth (layers 5, 11, 17... see everything).
    pub sliding_window: Option<usize>,
    /// RoPE base of the sliding-window layers.
    pub rope_base_swa: f32,
    /// llama.cpp multiplies q by the attention scale before attention (Gemma 3), instead of the
    /// scores after it (Llama): q reaches its f16 rounding already scaled, which in llama.cpp's
    /// order must be reproduced (see `round_q_scaled_first` in the forward).
    pub q_scaled_first: bool,
}

/// The activation of the feed-forward gate: `down(act(gate) * up)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnAct {
    /// SiLU (SwiGLU; Llama).
    Silu,
    /// GELU, tanh approximation (GeGLU; Gemma), through the peers' f16 table (see
    /// `kernels::gelu::geglu_tanh_inplace`).
    GeluTanh,
}

impl Family {
    /// Llama's block.
    pub const LLAMA: Family = Family {
        embd_scale: None,
        rope_neox: false,
        qk_norm: false,
        post_norms: false,
        ffn_act: FfnAct::Silu,
        sliding_window: None,
        rope_base_swa: 10000.0,
        q_scaled_first: false,
    };

    /// Whether layer `l` attends through the sliding window.
    pub fn is_sliding(&self, l: usize) -> bool {
        self.sliding_window.is_some() && l % 6 < 5
    }
}

/// Architectures whose GGUF layout is the Llama one, or a variation of it that [`Family`] describes.
const LLAMA_LIKE: &[&str] = &["llama", "gemma3"];

impl LlamaConfig {
    /// Reads `{arch}.*` keys; fails with the missing key or the unsupported feature named.
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig, ModelError> {
        let arch = file.architecture()?.to_string();
        if !LLAMA_LIKE.contains(&arch.as_str()) {
            return Err(ModelError::UnsupportedArchitecture(arch));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let get = |k: &str| -> Result<usize, ModelError> { Ok(file.get_u64(&key(k))? as usize) };
        let n_embd = get("embedding_length")?;
        let n_head = get("attention.head_count")?;
        let n_head_kv = match file.get(&key("attention.head_count_kv")) {
            Some(_) => get("attention.head_count_kv")?,
            None => n_head,
        };
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(ModelError::BadConfig(format!("head_count {n_head} must be a positive multiple of head_count_kv {n_head_kv}")));
        }
        let head_dim = match file.get(&key("attention.key_length")) {
            Some(_) => get("attention.key_length")?,
            None => n_embd / n_head,
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(ModelError::BadConfig(format!("head dimension {head_dim} must be even and positive")));
        }
        if let Some(v) = file.get(&key("attention.value_length")) {
            if v.as_u64() != Some(head_dim as u64) {
                return Err(ModelError::Unsupported(format!("value_length {v:?} different from key_length {head_dim}")));
            }
        }
        if let Some(v) = file.get(&key("rope.dimension_count")) {
            if v.as_u64() != Some(head_dim as u64) {
                return Err(ModelError::Unsupported(format!("partial rotary embeddings (rope.dimension_count {v:?}, head dimension {head_dim})")));
            }
        }
        if let Some(kind) = file.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
            if kind != "none" {
                return Err(ModelError::Unsupported(format!("RoPE scaling type {kind:?}")));
            }
        }
        if file.tensor("rope_freqs.weight").is_some() {
            return Err(ModelError::Unsupported("RoPE frequency factors (rope_freqs.weight)".into()));
        }
        let rope_base = match file.get(&key("rope.freq_base")) {
            Some(_) => file.get_f32(&key("rope.freq_base"))?,
            None => 10000.0,
        };
        let rms_eps = file.get_f32(&key("attention.layer_norm_rms_epsilon"))?;
        let family = match arch.as_str() {
            "gemma3" => gemma3_family(file, n_embd)?,
            _ => Family::LLAMA,
        };
        let n_vocab = file
            .tensor("token_embd.weight")
            .and_then(|t| t.dims.get(1).copied())
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))? as usize;
        let config = LlamaConfig {
            n_layer: get("block_count")?,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: get("feed_forward_length")?,
            n_vocab,
            n_ctx_train: get("context_length")?,
            rope_base,
            rms_eps,
            architecture: arch,
            family,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the sizes the kernels rely on.
    fn validate(&self) -> Result<(), ModelError> {
        let block = kernels::QK;
        for (name, v) in [
            ("embedding_length", self.n_embd),
            ("feed_forward_length", self.n_ff),
            ("block_count", self.n_layer),
            ("context_length", self.n_ctx_train),
        ] {
            // 2^24 positions is beyond every released model; larger values are corrupt files.
            if v == 0 || v > 1 << 24 {
                return Err(ModelError::BadConfig(format!("{name} = {v} is out of range")));
            }
        }
        if !self.n_embd.is_multiple_of(block) || !self.n_ff.is_multiple_of(block) || !(self.n_head * self.head_dim).is_multiple_of(block) {
            return Err(ModelError::Unsupported(format!(
                "widths must be multiples of {block} (embedding {}, feed-forward {}, heads x head_dim {})",
                self.n_embd,
                self.n_ff,
                self.n_head * self.head_dim
            )));
        }
        let eps_ok = self.rms_eps.is_finite() && self.rms_eps >= 0.0;
        let base_ok = self.rope_base.is_finite() && self.rope_base > 0.0;
        if !eps_ok || !base_ok {
            return Err(ModelError::BadConfig(format!("rms epsilon {} / rope base {} invalid", self.rms_eps, self.rope_base)));
        }
        Ok(())
    }

    /// The most positions a sequence may hold: the trained context.
    pub fn n_ctx_usable(&self) -> usize {
        self.n_ctx_train
    }

    /// How the bound of [`LlamaConfig::n_ctx_usable`] reads in a message.
    pub fn context_bound(&self) -> String {
        format!("the model's context length {}", self.n_ctx_train)
    }

    /// Hkv * Dh, the width of one position's keys (or values) in the cache.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// H * Dh, the width of the attention output.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
}

/// Gemma 3 (`gemma3.*` keys): embeddings scaled by sqrt(D), q/k norms, NeoX RoPE, post-norms,
/// GeGLU, and sliding-window layers with their own RoPE base.
fn gemma3_family(file: &GgufFile, n_embd: usize) -> Result<Family, ModelError> {
    let key = |k: &str| format!("gemma3.{k}");
    if let Some(v) = file.get(&key("final_logit_softcapping")) {
        if v.as_f32().is_some_and(|c| c != 0.0) {
            return Err(ModelError::Unsupported(format!("final logit soft-capping ({v:?})")));
        }
    }
    // The 27B model scales attention by 1/sqrt(D/H), not 1/sqrt(Dh), which the kernels assume.
    let n_layer = file.get_u64(&key("block_count"))?;
    if n_layer == 62 {
        return Err(ModelError::Unsupported("Gemma 3 27B (its attention scale is 1/sqrt(D/H))".into()));
    }
    let sliding_window = match file.get(&key("attention.sliding_window")) {
        Some(_) => Some(file.get_u64(&key("attention.sliding_window"))? as usize).filter(|&w| w > 0),
        None => None,
    };
    let rope_base_swa = match file.get(&key("rope.freq_base_swa")) {
        Some(_) => file.get_f32(&key("rope.freq_base_swa"))?,
        None => 10000.0,
    };
    Ok(Family {
        embd_scale: Some((n_embd as f32).sqrt()),
        rope_neox: true,
        qk_norm: true,
        post_norms: true,
        ffn_act: FfnAct::GeluTanh,
        sliding_window,
        rope_base_swa,
        q_scaled_first: true,
    })
}
