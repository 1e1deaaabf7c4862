//! The hyper-parameters of a Llama-family model, read from GGUF metadata.

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
}

/// Architectures whose GGUF layout is the Llama one.
const LLAMA_LIKE: &[&str] = &["llama"];

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

    /// Hkv * Dh, the width of one position's keys (or values) in the cache.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// H * Dh, the width of the attention output.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
}
