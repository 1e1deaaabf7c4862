//! LoRA adapter files: the two formats other tools read and write, both ways.
//!
//! - PEFT (Hugging Face): a directory holding `adapter_model.safetensors` and
//!   `adapter_config.json` ([`save_peft`], [`load_peft`], in `peft.rs`).
//! - llama.cpp's LoRA GGUF: one file ([`save_gguf`], [`load_gguf`], in `gguf.rs`).
//!
//! [`load`] picks the reader from the path. In memory an [`Adapter`] holds, per layer and target,
//! A (R, in) and B (out, R), row-major f32, with the rows of B in the GGUF file's order. The shapes
//! for a model of width D, H query heads, Hkv KV heads of Dh, feed-forward width F:
//!
//! ```text
//! target     A           B             GGUF ne of lora_a, lora_b
//! q          (R, D)      (H*Dh, R)     [D, R], [R, H*Dh]
//! k, v       (R, D)      (Hkv*Dh, R)   [D, R], [R, Hkv*Dh]
//! o          (R, H*Dh)   (D, R)        [H*Dh, R], [R, D]
//! gate, up   (R, D)      (F, R)        [D, R], [R, F]
//! down       (R, F)      (D, R)        [F, R], [R, D]
//! ```
//!
//! The one conversion between the formats: llama.cpp's converter permutes the rows of Wq and Wk
//! (per head) for its RoPE layout, so the rows of B of q and k are permuted the same way between a
//! PEFT file (Hugging Face order) and memory or GGUF (GGUF order); A is untouched.
//!
//! Both readers treat files as hostile: every malformed container, unknown setting, foreign tensor,
//! wrong shape or non-finite value is an [`AdapterError`] of one line naming the file and the key
//! or tensor, with what to do; never a panic.

// `self::gguf` is the GGUF format of this module; `::gguf` is the crate that parses GGUF files.
mod gguf;
mod peft;

use std::io::Read as _;
use std::path::{Path, PathBuf};

use ::gguf::GgufError;
use safetensors_file::SafetensorsError;

use crate::lora::{hf_to_gguf_row, Adapter, Target};

pub use self::gguf::{load_gguf, load_gguf_bytes, save_gguf, ADAPTER_TYPE_KEY, ALPHA_KEY, GENERAL_TYPE_KEY};
pub use self::peft::{load_peft, load_peft_bytes, save_peft, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};

/// Largest rank read or written. Real adapters use 4 to 256 (a few go to 1024); the cap keeps a
/// forged `r` from sizing huge buffers.
pub const MAX_RANK: usize = 1 << 16;

/// Largest model dimension accepted in [`ModelDims`] (the model crate's own cap).
const MAX_DIM: usize = 1 << 24;

/// The sizes of the base model an adapter must fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelDims {
    /// `general.architecture` of the base model, e.g. "llama"; a GGUF adapter must name the same.
    pub architecture: String,
    /// L, transformer blocks.
    pub n_layer: usize,
    /// D, model width.
    pub d: usize,
    /// H, query heads.
    pub n_head: usize,
    /// Hkv, key/value heads.
    pub n_head_kv: usize,
    /// Dh, width of one head (even: RoPE rotates pairs).
    pub head_dim: usize,
    /// F, feed-forward hidden width.
    pub f: usize,
}

impl ModelDims {
    /// The dims of a loaded model's configuration.
    pub fn from_config(config: &model::LlamaConfig) -> ModelDims {
        ModelDims {
            architecture: config.architecture.clone(),
            n_layer: config.n_layer,
            d: config.n_embd,
            n_head: config.n_head,
            n_head_kv: config.n_head_kv,
            head_dim: config.head_dim,
            f: config.n_ff,
        }
    }

    /// (out, in) of the map `target`: q (H*Dh, D), k and v (Hkv*Dh, D), o (D, H*Dh), gate and up
    /// (F, D), down (D, F).
    pub fn shape(&self, target: Target) -> (usize, usize) {
        target.shape(self.d, self.n_head.saturating_mul(self.head_dim), self.n_head_kv.saturating_mul(self.head_dim), self.f)
    }

    /// Checks that every size is positive and at most 2^24 and that Dh is even.
    pub fn validate(&self) -> Result<(), AdapterError> {
        let sizes = [
            ("n_layer", self.n_layer),
            ("d", self.d),
            ("n_head", self.n_head),
            ("n_head_kv", self.n_head_kv),
            ("head_dim", self.head_dim),
            ("f", self.f),
        ];
        for (name, value) in sizes.into_iter().chain([("n_head * head_dim", self.n_head.saturating_mul(self.head_dim))]) {
            if value == 0 || value > MAX_DIM {
                return Err(AdapterError::BadDims { problem: format!("{name} = {value} is out of range (1 to {MAX_DIM})") });
            }
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(AdapterError::BadDims { problem: format!("head_dim = {} is odd; RoPE needs it even", self.head_dim) });
        }
        Ok(())
    }
}

/// Everything that can go wrong reading or writing an adapter file. Each message is one line
/// naming the file and the key or tensor, and saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// A file or directory could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },
    /// The safetensors container is malformed (the message names the file and the tensor).
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    /// The GGUF container is malformed (the message names the file when it was opened from one).
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A file the format needs is absent.
    #[error("{}: no such file: {hint}", path.display())]
    MissingFile { path: PathBuf, hint: String },
    /// `adapter_config.json` is not a JSON object.
    #[error("{}: not a JSON object ({message}): a PEFT adapter_config.json is one; re-save the adapter with PEFT", path.display())]
    Json { path: PathBuf, message: String },
    /// A setting in the file that ferrolm cannot honour.
    #[error("{}: {key} is {found}: {hint}", path.display())]
    Unsupported { path: PathBuf, key: String, found: String, hint: String },
    /// A setting of the wrong type or out of range.
    #[error("{}: {key} is {found}, expected {expected}", path.display())]
    BadValue { path: PathBuf, key: String, found: String, expected: String },
    /// A setting the format requires is absent.
    #[error("{}: {key} is missing: {hint}", path.display())]
    MissingKey { path: PathBuf, key: String, hint: String },
    /// A tensor that is not a LoRA matrix of one of the seven maps of a Llama block.
    #[error("{}: tensor {tensor} is not a LoRA A or B of q, k, v, o, gate, up or down: {hint}", path.display())]
    UnknownTensor { path: PathBuf, tensor: String, hint: String },
    /// A tensor for a layer the model does not have.
    #[error("{}: tensor {tensor} is for layer {layer}, but the model has {n_layer} layers: the adapter was made for another model", path.display())]
    LayerOutOfRange { path: PathBuf, tensor: String, layer: usize, n_layer: usize },
    /// A tensor whose shape does not fit the model and the rank.
    #[error("{}: tensor {tensor} has shape {found:?}, expected {expected:?}: {hint}", path.display())]
    Shape { path: PathBuf, tensor: String, found: Vec<u64>, expected: Vec<u64>, hint: String },
    /// One matrix of a pair without the other.
    #[error("{}: tensor {present} has no partner {missing}: a LoRA pair needs both A and B; the file is incomplete, save the adapter again", path.display())]
    MissingHalf { path: PathBuf, present: String, missing: String },
    /// A tensor stored in an element type the reader does not convert.
    #[error("{}: tensor {tensor} is stored as {dtype}: {hint}", path.display())]
    TensorType { path: PathBuf, tensor: String, dtype: String, hint: String },
    /// A NaN or infinity in a matrix.
    #[error("{}: tensor {tensor} holds {value} at element {index}: the adapter is damaged (did training diverge?); use an earlier checkpoint", path.display())]
    NonFinite { path: PathBuf, tensor: String, index: usize, value: f32 },
    /// The configuration and the tensors disagree.
    #[error("{}: {problem}: {hint}", path.display())]
    Inconsistent { path: PathBuf, problem: String, hint: String },
    /// A path that is neither a PEFT directory, a `.safetensors` nor a GGUF file.
    #[error("{}: not an adapter: {ANY_ADAPTER}", path.display())]
    UnknownFormat { path: PathBuf },
    /// [`ModelDims`] that no Llama model has.
    #[error("model dims: {problem}")]
    BadDims { problem: String },
    /// An [`Adapter`] to save that contradicts itself or the model.
    #[error("cannot save the adapter: {problem}")]
    BadAdapter { problem: String },
}

/// What [`load`] reads.
const ANY_ADAPTER: &str = "give a PEFT directory (adapter_config.json + adapter_model.safetensors), its .safetensors file, or a llama.cpp LoRA .gguf";

/// Reads the adapter at `path`: a directory (PEFT), a `.safetensors` file (PEFT, with
/// `adapter_config.json` beside it) or a `.gguf` file (llama.cpp). A file with another extension
/// is read as GGUF if it starts with the GGUF magic.
pub fn load(path: impl AsRef<Path>, dims: &ModelDims) -> Result<Adapter, AdapterError> {
    let path = path.as_ref();
    if path.is_dir() {
        return load_peft(path, dims);
    }
    if !path.exists() {
        return Err(AdapterError::MissingFile { path: path.to_owned(), hint: ANY_ADAPTER.into() });
    }
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("safetensors") => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            peft::load_peft_files(&dir.join(PEFT_CONFIG_FILE), path, dims)
        }
        Some("gguf") => load_gguf(path, dims),
        _ if starts_with_gguf_magic(path)? => load_gguf(path, dims),
        _ => Err(AdapterError::UnknownFormat { path: path.to_owned() }),
    }
}

fn starts_with_gguf_magic(path: &Path) -> Result<bool, AdapterError> {
    let io_error = |cause| AdapterError::Io { path: path.to_owned(), cause };
    let mut head = Vec::with_capacity(4);
    std::fs::File::open(path).map_err(io_error)?.take(4).read_to_end(&mut head).map_err(io_error)?;
    Ok(head == ::gguf::MAGIC)
}

/// B (out, R) with its rows moved from Hugging Face order to GGUF order (`to_gguf`) or back, for q
/// (out = H*Dh) or k (out = Hkv*Dh): row `hf` of a head is row [`hf_to_gguf_row`] in GGUF. The
/// permutation stays within each head of `head_dim` rows, so the head count is not needed.
///
/// Contract (checked by the callers): `rank > 0`, `head_dim` even and positive, `b.len()` a
/// multiple of `rank * head_dim`.
pub(crate) fn permute_b_rows(b: &[f32], rank: usize, head_dim: usize, to_gguf: bool) -> Vec<f32> {
    debug_assert!(rank > 0 && head_dim > 0 && head_dim.is_multiple_of(2) && b.len().is_multiple_of(rank * head_dim));
    let mut out = vec![0.0; b.len()];
    for hf_row in 0..b.len() / rank {
        let gguf_row = hf_to_gguf_row(hf_row, head_dim);
        let (from, to) = if to_gguf { (hf_row, gguf_row) } else { (gguf_row, hf_row) };
        out[to * rank..(to + 1) * rank].copy_from_slice(&b[from * rank..(from + 1) * rank]);
    }
    out
}

/// Whether B of `target` is stored in another row order in PEFT files.
pub(crate) fn rope_permuted(target: Target) -> bool {
    matches!(target, Target::Q | Target::K)
}

/// Checks an adapter before it is written for the model `dims`: a rank in 1..=[`MAX_RANK`],
/// finite alpha and values, no more layers than the model, A (R, in) and B (out, R) of the model's
/// sizes, and the config's targets exactly those with pairs.
pub(crate) fn check_adapter(adapter: &Adapter, dims: &ModelDims) -> Result<(), AdapterError> {
    let bad = |problem: String| Err(AdapterError::BadAdapter { problem });
    dims.validate()?;
    let config = &adapter.config;
    let rank = config.rank;
    if rank == 0 || rank > MAX_RANK {
        return bad(format!("rank {rank} is out of range (1 to {MAX_RANK})"));
    }
    if !config.alpha.is_finite() {
        return bad(format!("alpha {} is not finite", config.alpha));
    }
    if adapter.layers.len() > dims.n_layer {
        return bad(format!("it has {} layers, the model {}", adapter.layers.len(), dims.n_layer));
    }
    let mut seen = [false; 7];
    for (layer, pairs) in adapter.layers.iter().enumerate() {
        for (target, pair) in Target::ALL.into_iter().zip(pairs) {
            let Some(pair) = pair else { continue };
            let name = format!("layer {layer} {}", target.short_name());
            if !config.targets.contains(&target) {
                return bad(format!("{name} has a pair, but the config's targets {:?} lack {}", short_names(&config.targets), target.short_name()));
            }
            let (n_out, n_in) = dims.shape(target);
            if (pair.n_out, pair.n_in) != (n_out, n_in) {
                return bad(format!("{name} is (out {}, in {}), expected (out {n_out}, in {n_in})", pair.n_out, pair.n_in));
            }
            seen[target.index()] = true;
            for (what, values, rows, cols) in [("A", &pair.a, rank, n_in), ("B", &pair.b, n_out, rank)] {
                if rows.checked_mul(cols) != Some(values.len()) {
                    return bad(format!("{name} {what} holds {} values, expected {rows} x {cols}", values.len()));
                }
                if let Some((i, value)) = first_non_finite(values) {
                    return bad(format!("{name} {what} holds {value} at element {i}"));
                }
            }
        }
    }
    if let Some(&missing) = config.targets.iter().find(|t| !seen[t.index()]) {
        return bad(format!("the config lists target {}, but no layer has a pair for it", missing.short_name()));
    }
    Ok(())
}

fn short_names(targets: &[Target]) -> Vec<&'static str> {
    targets.iter().map(|t| t.short_name()).collect()
}

/// The hint for a tensor whose shape fits another model.
pub(crate) fn model_hint(dims: &ModelDims) -> String {
    format!(
        "the adapter was made for another model (this one is {}: D {}, H {}, Hkv {}, Dh {}, F {})",
        dims.architecture, dims.d, dims.n_head, dims.n_head_kv, dims.head_dim, dims.f
    )
}

/// `values` as little-endian bytes.
pub(crate) fn f32_to_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The index and value of the first NaN or infinity in `values`.
pub(crate) fn first_non_finite(values: &[f32]) -> Option<(usize, f32)> {
    values.iter().position(|v| !v.is_finite()).map(|i| (i, values[i]))
}

/// A string from a file, quoted with escapes (so that it stays on one line) and cut to about
/// [`QUOTE_MAX`] characters (enough for any real tensor name, not for a forged megabyte).
pub(crate) fn quote(text: &str) -> String {
    let mut quoted = format!("{text:?}");
    if quoted.len() > QUOTE_MAX {
        let cut = (0..=QUOTE_MAX - 4).rev().find(|&i| quoted.is_char_boundary(i)).unwrap_or(0);
        quoted.truncate(cut);
        quoted.push_str("...\"");
    }
    quoted
}

/// Longest quoted string in a message.
const QUOTE_MAX: usize = 200;

/// Writes `bytes` to `path` through a temporary file beside it, so that a failed write never
/// leaves half a file under the final name.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AdapterError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, bytes).map_err(|cause| AdapterError::Io { path: tmp.clone(), cause })?;
    std::fs::rename(&tmp, path).map_err(|cause| AdapterError::Io { path: path.to_owned(), cause })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::{LoraConfig, LoraPair};

    #[test]
    fn b_rows_of_a_head_of_six_interleave_the_halves_checked_by_hand() {
        // One head, Dh = 6, rank 1: HF rows are (x0 x1 x2 | y0 y1 y2), the first and second halves
        // of the rotated pairs; GGUF interleaves them (x0 y0 x1 y1 x2 y2).
        let hf = [10.0, 11.0, 12.0, 20.0, 21.0, 22.0];
        let gguf = permute_b_rows(&hf, 1, 6, true);
        assert_eq!(gguf, [10.0, 20.0, 11.0, 21.0, 12.0, 22.0]);
        assert_eq!(permute_b_rows(&gguf, 1, 6, false), hf);
    }

    #[test]
    fn b_rows_move_whole_rows_within_each_head() {
        // Two heads of Dh = 4, rank 2: row r holds (r, 100 + r). Within a head HF rows 1 and 2 swap.
        let hf: Vec<f32> = (0..8).flat_map(|r| [r as f32, 100.0 + r as f32]).collect();
        let gguf = permute_b_rows(&hf, 2, 4, true);
        let rows: Vec<f32> = gguf.chunks(2).map(|row| row[0]).collect();
        assert_eq!(rows, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert!(gguf.chunks(2).all(|row| row[1] == row[0] + 100.0), "rows move whole");
    }

    #[test]
    fn hf_to_gguf_to_hf_is_the_identity_for_smollm2_q_and_k() {
        let head_dim = 64;
        for (heads, rank) in [(9, 8), (3, 8), (9, 1), (3, 5)] {
            let b: Vec<f32> = (0..heads * head_dim * rank).map(|i| i as f32).collect();
            let there = permute_b_rows(&b, rank, head_dim, true);
            assert_ne!(there, b);
            assert_eq!(permute_b_rows(&there, rank, head_dim, false), b);
            // ...and GGUF -> HF -> GGUF too.
            assert_eq!(permute_b_rows(&permute_b_rows(&b, rank, head_dim, false), rank, head_dim, true), b);
        }
    }

    #[test]
    fn dims_come_from_the_model_config_and_are_validated() {
        let config = model::LlamaConfig {
            architecture: "llama".into(),
            n_layer: 30,
            n_embd: 576,
            n_head: 9,
            n_head_kv: 3,
            head_dim: 64,
            n_ff: 1536,
            n_vocab: 49152,
            n_ctx_train: 8192,
            rope_base: 100000.0,
            rms_eps: 1e-5,
            family: model::config::Family::LLAMA,
        };
        let dims = ModelDims::from_config(&config);
        assert_eq!(dims, ModelDims { architecture: "llama".into(), n_layer: 30, d: 576, n_head: 9, n_head_kv: 3, head_dim: 64, f: 1536 });
        dims.validate().unwrap();
        assert_eq!(dims.shape(Target::K), (192, 576));
        assert_eq!(dims.shape(Target::Down), (576, 1536));
        let odd = ModelDims { head_dim: 63, ..dims.clone() };
        assert!(odd.validate().unwrap_err().to_string().contains("head_dim = 63 is odd"));
        let empty = ModelDims { n_layer: 0, ..dims };
        assert!(empty.validate().unwrap_err().to_string().contains("n_layer = 0 is out of range"));
    }

    #[test]
    fn an_inconsistent_adapter_is_refused_before_writing() {
        let dims = ModelDims { architecture: "llama".into(), n_layer: 1, d: 4, n_head: 1, n_head_kv: 1, head_dim: 4, f: 8 };
        let pair = LoraPair { a: vec![0.5; 8], b: vec![0.25; 8], n_in: 4, n_out: 4 };
        let config = LoraConfig { rank: 2, alpha: 4.0, rslora: false, dropout: 0.0, targets: vec![Target::Q] };
        let good = Adapter { config, layers: vec![[Some(pair), None, None, None, None, None, None]] };
        check_adapter(&good, &dims).unwrap();
        let problem = |adapter: &Adapter| check_adapter(adapter, &dims).unwrap_err().to_string();

        let mut short = good.clone();
        short.layers[0][0].as_mut().unwrap().a.pop();
        assert_eq!(problem(&short), "cannot save the adapter: layer 0 q A holds 7 values, expected 2 x 4");
        let mut nan = good.clone();
        nan.layers[0][0].as_mut().unwrap().b[3] = f32::NAN;
        assert_eq!(problem(&nan), "cannot save the adapter: layer 0 q B holds NaN at element 3");
        let mut unlisted = good.clone();
        unlisted.config.targets = vec![Target::V];
        assert!(problem(&unlisted).contains("the config's targets [\"v\"] lack q"));
        let mut absent = good.clone();
        absent.config.targets.push(Target::K);
        assert!(problem(&absent).contains("lists target k, but no layer has a pair"));
        let mut too_deep = good.clone();
        too_deep.layers.push(std::array::from_fn(|_| None));
        assert_eq!(problem(&too_deep), "cannot save the adapter: it has 2 layers, the model 1");
        let mut rank0 = good.clone();
        rank0.config.rank = 0;
        assert!(problem(&rank0).contains("rank 0 is out of range"));
        let mut wide = good;
        wide.layers[0][0].as_mut().unwrap().n_out = 8;
        assert!(problem(&wide).contains("layer 0 q is (out 8, in 4), expected (out 4, in 4)"));
    }

    #[test]
    fn quoted_file_strings_stay_on_one_line_and_short() {
        assert_eq!(quote("none\nall"), "\"none\\nall\"");
        let name = "base_model.model.model.layers.29.self_attn.q_proj.lora_magnitude_vector";
        assert_eq!(quote(name), format!("\"{name}\""), "real tensor names are whole");
        let long = quote(&"x".repeat(5000));
        assert!(long.len() <= QUOTE_MAX + 1 && long.ends_with("...\""));
    }
}
