//! LoRA adapters: for a frozen linear map y = x W^T (W: (out, in)), the adapted map is
//!
//! ```text
//! y = x W^T + scaling * (dropout(x) A^T) B^T       A: (r, in), B: (out, r)
//! scaling = alpha / r   (rsLoRA: alpha / sqrt(r))
//! ```
//!
//! A starts kaiming-uniform (a = sqrt(5), as PyTorch's `nn.Linear` and PEFT: uniform in
//! +-1/sqrt(in)) and B at zero, so step 0 is the base model exactly. Merging adds
//! `scaling * B A` to W; unmerging subtracts it.
//!
//! Rows of B for `q` and `k` follow the GGUF file's row order (llama.cpp's converter permutes
//! the rows of Wq and Wk for its RoPE layout); PEFT files hold them in Hugging Face's order, so
//! the adapter files convert (see [`hf_to_gguf_row`]).

/// The seven linear maps of a Llama block that can carry an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Wq (H*Dh, D).
    Q,
    /// Wk (Hkv*Dh, D).
    K,
    /// Wv (Hkv*Dh, D).
    V,
    /// Wo (D, H*Dh).
    O,
    /// Wgate (F, D).
    Gate,
    /// Wup (F, D).
    Up,
    /// Wdown (D, F).
    Down,
}

impl Target {
    /// Every target, in the order of the block.
    pub const ALL: [Target; 7] = [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];

    /// The short name used on the command line (`q,k,v,o,gate,up,down`).
    pub fn short_name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }

    /// The Hugging Face module name (`q_proj` ... `down_proj`), as PEFT's `target_modules`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The Hugging Face module path inside block `layer` (`model.layers.{layer}.self_attn.q_proj`).
    pub fn hf_module(self, layer: usize) -> String {
        let group = if matches!(self, Target::Q | Target::K | Target::V | Target::O) { "self_attn" } else { "mlp" };
        format!("model.layers.{layer}.{group}.{}", self.hf_name())
    }

    /// The GGUF tensor name of the weight in block `layer` (`blk.{layer}.attn_q.weight`).
    pub fn gguf_name(self, layer: usize) -> String {
        let kind = match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        };
        format!("blk.{layer}.{kind}.weight")
    }

    /// Parses a short or Hugging Face name.
    pub fn parse(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.short_name() == name || t.hf_name() == name)
    }

    /// Index in [`Target::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// (out, in) of this map for a model of width D, H*Dh query width, Hkv*Dh KV width and F
    /// feed-forward width.
    pub fn shape(self, d: usize, q_dim: usize, kv_dim: usize, f: usize) -> (usize, usize) {
        match self {
            Target::Q => (q_dim, d),
            Target::K | Target::V => (kv_dim, d),
            Target::O => (d, q_dim),
            Target::Gate | Target::Up => (f, d),
            Target::Down => (d, f),
        }
    }
}

/// How an adapter is shaped and scaled.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    /// r.
    pub rank: usize,
    /// alpha.
    pub alpha: f32,
    /// Whether the scaling is alpha / sqrt(r) (rsLoRA) instead of alpha / r.
    pub rslora: bool,
    /// Probability of zeroing an input of the adapter path during training.
    pub dropout: f32,
    /// The maps that carry an adapter, in [`Target::ALL`] order.
    pub targets: Vec<Target>,
}

impl LoraConfig {
    /// The factor applied to B A.
    pub fn scaling(&self) -> f32 {
        if self.rslora {
            self.alpha / (self.rank as f32).sqrt()
        } else {
            self.alpha / self.rank as f32
        }
    }
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { rank: 8, alpha: 16.0, rslora: false, dropout: 0.0, targets: Target::ALL.to_vec() }
    }
}

/// One adapted map's matrices.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraPair {
    /// A (r, in), row-major.
    pub a: Vec<f32>,
    /// B (out, r), row-major, rows in the GGUF file's order.
    pub b: Vec<f32>,
    /// in.
    pub n_in: usize,
    /// out.
    pub n_out: usize,
}

/// A whole adapter: its configuration and, per layer, the pair of each target (None where the
/// target is not adapted).
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    /// Rank, alpha, targets.
    pub config: LoraConfig,
    /// (L) x (7), indexed by [`Target::index`].
    pub layers: Vec<[Option<LoraPair>; 7]>,
}

/// The GGUF row of Hugging Face row `row` of Wq (`n_head` = H) or Wk (`n_head` = Hkv) with
/// heads of `head_dim`: within a head, HF holds the first halves of the rotated pairs, then the
/// second halves; GGUF interleaves them (row `2i + half`).
pub fn hf_to_gguf_row(row: usize, head_dim: usize) -> usize {
    let (head, within) = (row / head_dim, row % head_dim);
    let half = head_dim / 2;
    let (which, i) = (within / half, within % half);
    head * head_dim + 2 * i + which
}

impl Adapter {
    /// The adapter as inference applies it (unmerged), with `user_scale` times its scaling.
    pub fn to_lora_set(&self, user_scale: f32) -> model::lora::LoraSet {
        let layers = self
            .layers
            .iter()
            .map(|maps| {
                std::array::from_fn(|i| maps[i].as_ref().map(|p| model::lora::LoraMap { a: p.a.clone(), b: p.b.clone(), rank: self.config.rank }))
            })
            .collect();
        model::lora::LoraSet { scale: self.config.scaling() * user_scale, layers }
    }
}

/// W (out, in) += sign * scaling * B A: merges the pair into the weights (sign 1) or takes it
/// back out (sign -1).
pub fn merge_into(w: &mut [f32], pair: &LoraPair, scaling: f32, sign: f32) {
    let r = pair.a.len() / pair.n_in;
    debug_assert_eq!(w.len(), pair.n_out * pair.n_in);
    for (wr, br) in w.chunks_exact_mut(pair.n_in).zip(pair.b.chunks_exact(r)) {
        for (&b, ar) in br.iter().zip(pair.a.chunks_exact(pair.n_in)) {
            let k = sign * scaling * b;
            for (wv, &av) in wr.iter_mut().zip(ar) {
                *wv += k * av;
            }
        }
    }
}
