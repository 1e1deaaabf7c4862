//! The BERT encoder (Devlin et al. 2018) as Hugging Face's `BertModel` computes it, over a flat
//! batch of sequences:
//!
//! ```text
//! x = LN(word[id] + position[p] + token_type[0])                   p = 0, 1, ... within each sequence
//! per layer:
//!     q, k, v = x Wq^T + bq,  x Wk^T + bk,  x Wv^T + bv              one product with W = [Wq; Wk; Wv]
//!     a = LN(x + (attn(q, k, v) Wo^T + bo))                         post-norm: LayerNorm after the residual
//!     x = LN(a + (gelu(a W1^T + b1) W2^T + b2))                     gelu is the erf form
//! ```
//!
//! LN is LayerNorm with bias, biased variance and `layer_norm_eps` inside the square root;
//! attention is bidirectional within a sequence, scaled by 1/sqrt(Dh). Shapes: T tokens of the
//! whole batch, D model width, H heads, Dh = D/H, F FFN width, V vocabulary, P positions.
//!
//! A flat batch concatenates the sequences' tokens: the matrix products and the element-wise
//! steps see T rows and spend nothing on padding; only attention looks at the sequence bounds.
//! Every step computes a token's row the same way whatever else is in the batch, so a batch
//! gives each text the bits it gets alone.

use std::path::{Path, PathBuf};

use kernels::bf16mat::{amx_available, matmul_bf16, Bf16Rows, PackedBf16};
use kernels::encoder_attention::{encoder_attention, encoder_attention_scratch};
use kernels::f32mat::{matmul_f32, PackedF32};
use kernels::gelu::gelu_erf_inplace;
use kernels::layer_norm::{add_layer_norm_inplace, layer_norm_inplace};
use kernels::pool::{split_range, SharedMut};
use kernels::{Level, ThreadPool};
use safetensors_file::SafeTensors;

use crate::{BertConfig, EmbedError};

/// A LayerNorm's parameters: weight (D), bias (D).
#[derive(Clone, Debug)]
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// How the encoder's linear layers multiply; LayerNorm, GELU, attention and pooling are f32
/// either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 weights and products: the same bits at every kernel level and on every machine.
    F32,
    /// Weights and activations rounded to bf16 (8 significant bits), products summed in f32, on
    /// Intel AMX (Xeon Sapphire Rapids and later). Several times faster; on the golden fixtures
    /// the embeddings stay within cosine 0.99995 of sentence-transformers' (f32: 1 - 2e-12).
    Bf16,
}

impl Precision {
    /// bf16 where AMX runs it and `FERROLM_KERNELS` does not cap the kernels below AVX-512, f32
    /// otherwise.
    pub fn auto() -> Precision {
        if amx_available() && Level::current() == Level::Avx512Vnni {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    /// "f32" or "bf16".
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// A linear layer's weight W (N, K), packed for the kernel of its precision.
#[derive(Clone, Debug)]
enum Weight {
    F32(PackedF32),
    Bf16(PackedBf16),
}

/// A linear layer y = x W^T + b: W (N, K), b (N).
#[derive(Clone, Debug)]
struct Linear {
    weight: Weight,
    bias: Vec<f32>,
}

impl Linear {
    /// x (T, K) -> y (T, N); `scratch` holds the bf16 activations (bf16 weights only).
    fn forward(&self, pool: &ThreadPool, level: Level, x: &[f32], t: usize, y: &mut [f32], scratch: &mut Bf16Rows) {
        match &self.weight {
            Weight::F32(w) => matmul_f32(pool, level, w, Some(&self.bias), x, t, y),
            Weight::Bf16(w) => matmul_bf16(pool, w, Some(&self.bias), x, t, y, scratch),
        }
    }
}

/// One encoder layer.
#[derive(Clone, Debug)]
struct Layer {
    /// [Wq; Wk; Wv] (3D, D), [bq; bk; bv] (3D): one product gives a token's q | k | v.
    qkv: Linear,
    /// Wo (D, D), bo (D).
    attn_out: Linear,
    /// After attention's residual.
    attn_norm: Norm,
    /// W1 (F, D), b1 (F).
    ffn_up: Linear,
    /// W2 (D, F), b2 (D).
    ffn_down: Linear,
    /// After the FFN's residual.
    ffn_norm: Norm,
}

/// A BERT encoder with its weights in memory (f32, matrices packed for the kernel).
#[derive(Clone, Debug)]
pub struct Bert {
    config: BertConfig,
    /// (V, D)
    word_embeddings: Vec<f32>,
    /// (P, D)
    position_embeddings: Vec<f32>,
    /// Row 0 of the token-type table (D): every token of a single-text input is type 0.
    token_type_0: Vec<f32>,
    /// The LayerNorm of the embeddings.
    embed_norm: Norm,
    layers: Vec<Layer>,
    precision: Precision,
}

/// Reads tensors from a safetensors file by name, checking each shape against the config.
struct Loader<'a> {
    file: &'a SafeTensors,
    precision: Precision,
    path: PathBuf,
    /// "" or "bert.": some checkpoints (BertForMaskedLM and the like) prefix every name.
    prefix: &'static str,
}

impl Loader<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmbedError> {
        let name = format!("{}{name}", self.prefix);
        let got = self.file.shape(&name)?;
        let expected: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        if got != expected.as_slice() {
            return Err(EmbedError::TensorShape { path: self.path.clone(), name, expected, got: got.to_vec() });
        }
        Ok(self.file.to_f32_vec(&name)?)
    }

    fn norm(&self, name: &str, d: usize) -> Result<Norm, EmbedError> {
        Ok(Norm { weight: self.tensor(&format!("{name}.weight"), &[d])?, bias: self.tensor(&format!("{name}.bias"), &[d])? })
    }

    /// The linear layers `names` (each W (n, k)) stacked into one of (names.len() * n, k).
    fn linear(&self, names: &[&str], n: usize, k: usize) -> Result<Linear, EmbedError> {
        // No capacity up front: n and k come from config.json and are trusted only once the
        // tensors' shapes (bounded by the file's size) have matched them.
        let (mut weight, mut bias) = (Vec::new(), Vec::new());
        for name in names {
            weight.extend(self.tensor(&format!("{name}.weight"), &[n, k])?);
            bias.extend(self.tensor(&format!("{name}.bias"), &[n])?);
        }
        let weight = match self.precision {
            Precision::F32 => Weight::F32(PackedF32::pack(&weight, names.len() * n, k)),
            Precision::Bf16 => Weight::Bf16(PackedBf16::pack(&weight, names.len() * n, k)),
        };
        Ok(Linear { weight, bias })
    }
}

impl Bert {
    /// Loads the weights at `path` (model.safetensors) for `config`, checking every tensor's
    /// name and shape, packed for `precision` (bf16 needs AMX: [`Precision::auto`] chooses).
    pub fn load(path: &Path, config: BertConfig, precision: Precision) -> Result<Bert, EmbedError> {
        if precision == Precision::Bf16 && !amx_available() {
            return Err(EmbedError::Precision(
                "bf16 products run on Intel AMX (Xeon Sapphire Rapids and later), which this CPU or OS does not offer; use f32".into(),
            ));
        }
        let file = SafeTensors::open(path)?;
        let prefix = if file.tensor("embeddings.word_embeddings.weight").is_err() && file.tensor("bert.embeddings.word_embeddings.weight").is_ok() {
            "bert."
        } else {
            ""
        };
        let w = Loader { file: &file, precision, path: path.to_path_buf(), prefix };
        let c = &config;
        let (d, f) = (c.hidden_size, c.intermediate_size);
        let token_types = w.tensor("embeddings.token_type_embeddings.weight", &[c.type_vocab_size, d])?;
        let mut layers = Vec::new(); // not with_capacity: the count is config.json's, unchecked yet
        for i in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let qkv = [format!("{p}.attention.self.query"), format!("{p}.attention.self.key"), format!("{p}.attention.self.value")];
            layers.push(Layer {
                qkv: w.linear(&qkv.each_ref().map(String::as_str), d, d)?,
                attn_out: w.linear(&[&format!("{p}.attention.output.dense")], d, d)?,
                attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), d)?,
                ffn_up: w.linear(&[&format!("{p}.intermediate.dense")], f, d)?,
                ffn_down: w.linear(&[&format!("{p}.output.dense")], d, f)?,
                ffn_norm: w.norm(&format!("{p}.output.LayerNorm"), d)?,
            });
        }
        Ok(Bert {
            word_embeddings: w.tensor("embeddings.word_embeddings.weight", &[c.vocab_size, d])?,
            position_embeddings: w.tensor("embeddings.position_embeddings.weight", &[c.max_position_embeddings, d])?,
            token_type_0: token_types[..d].to_vec(),
            embed_norm: w.norm("embeddings.LayerNorm", d)?,
            layers,
            config,
            precision,
        })
    }

    /// The precision of the linear layers.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The configuration the model was loaded with.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// ids (T) of a flat batch, seq_starts (S+1) with sequence s = `ids[seq_starts[s]..seq_starts[s+1]]`
    /// -> hidden (T, D): the last layer's token states.
    ///
    /// Errors when an id is outside the vocabulary, a sequence is longer than the position table,
    /// `seq_starts` does not run from 0 to T in order, or `hidden` is not (T, D). The work buffers
    /// are allocated once per call and reused by every layer. A `level` above the machine's best
    /// runs at the machine's best (the kernels must never meet instructions the CPU lacks).
    pub fn forward(&self, pool: &ThreadPool, level: Level, ids: &[u32], seq_starts: &[usize], hidden: &mut [f32]) -> Result<(), EmbedError> {
        let c = &self.config;
        let (d, f, h, dh) = (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.head_dim());
        let t = ids.len();
        self.check_batch(ids, seq_starts)?;
        if hidden.len() != t * d {
            return Err(EmbedError::Batch(format!("the output holds {} values, expected T*D = {t}*{d}", hidden.len())));
        }
        if t == 0 {
            return Ok(());
        }
        let level = level.min(Level::best_available());
        let eps = c.layer_norm_eps as f32;
        let max_len = seq_starts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);

        // Embeddings: x (T, D) = LN(word[id] + position[p] + type[0]).
        let x = hidden;
        for w in seq_starts.windows(2) {
            for (p, tok) in (w[0]..w[1]).enumerate() {
                let row = &mut x[tok * d..(tok + 1) * d];
                let word = &self.word_embeddings[ids[tok] as usize * d..][..d];
                let position = &self.position_embeddings[p * d..][..d];
                for (((o, &word), &position), &token_type) in row.iter_mut().zip(word).zip(position).zip(&self.token_type_0) {
                    *o = (word + token_type) + position; // Hugging Face's order of the sums
                }
            }
        }
        for_rows(pool, x, d, |_, row| layer_norm_inplace(row, &self.embed_norm.weight, &self.embed_norm.bias, eps));

        let mut qkv = vec![0f32; t * 3 * d]; // (T, 3D): q | k | v per token
        let mut attn = vec![0f32; t * d]; // (T, D)
        let mut proj = vec![0f32; t * d]; // (T, D): a sublayer's output before its residual
        let mut ffn = vec![0f32; t * f]; // (T, F)
        let mut scores = vec![0f32; encoder_attention_scratch(pool.n_threads(), max_len, dh)];
        let mut xb = Bf16Rows::new();
        if self.precision == Precision::Bf16 {
            xb.ensure(t, d.max(f));
        }
        for layer in &self.layers {
            layer.qkv.forward(pool, level, x, t, &mut qkv, &mut xb); // (T, D) -> (T, 3D)
            encoder_attention(pool, level, &qkv, seq_starts, h, dh, &mut attn, &mut scores); // (T, 3D) -> (T, D)
            layer.attn_out.forward(pool, level, &attn, t, &mut proj, &mut xb); // (T, D) -> (T, D)
            let norm = &layer.attn_norm;
            for_rows(pool, x, d, |i, row| add_layer_norm_inplace(row, &proj[i * d..(i + 1) * d], &norm.weight, &norm.bias, eps));
            layer.ffn_up.forward(pool, level, x, t, &mut ffn, &mut xb); // (T, D) -> (T, F)
            for_rows(pool, &mut ffn, f, |_, row| gelu_erf_inplace(row));
            layer.ffn_down.forward(pool, level, &ffn, t, &mut proj, &mut xb); // (T, F) -> (T, D)
            let norm = &layer.ffn_norm;
            for_rows(pool, x, d, |i, row| add_layer_norm_inplace(row, &proj[i * d..(i + 1) * d], &norm.weight, &norm.bias, eps));
        }
        Ok(())
    }

    /// The checks that keep `forward` in bounds: ids in the vocabulary, sequences within the
    /// position table, bounds from 0 to T in order.
    fn check_batch(&self, ids: &[u32], seq_starts: &[usize]) -> Result<(), EmbedError> {
        let c = &self.config;
        let well_formed = seq_starts.first() == Some(&0) && seq_starts.last() == Some(&ids.len()) && seq_starts.windows(2).all(|w| w[0] <= w[1]);
        if !well_formed {
            return Err(EmbedError::Batch(format!("sequence starts {seq_starts:?} do not split {} tokens", ids.len())));
        }
        for (sequence, w) in seq_starts.windows(2).enumerate() {
            let len = w[1] - w[0];
            if len > c.max_position_embeddings {
                return Err(EmbedError::TooLong { sequence, len, max: c.max_position_embeddings });
            }
            if let Some(&id) = ids[w[0]..w[1]].iter().find(|&&id| id as usize >= c.vocab_size) {
                return Err(EmbedError::TokenId { sequence, id, vocab: c.vocab_size });
            }
        }
        Ok(())
    }
}

/// Calls `op(i, row)` on every row i of x (rows of `width`), rows split over the pool's threads.
fn for_rows(pool: &ThreadPool, x: &mut [f32], width: usize, op: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = x.len() / width.max(1);
    let shared = SharedMut::new(x);
    pool.run(&|i, nt| {
        for r in split_range(rows, i, nt) {
            // SAFETY: thread i alone touches its rows.
            op(r, unsafe { shared.slice(r * width, width) });
        }
    });
}
