//! Loading: every tensor the architecture needs, its presence, type and shape checked.

use super::{Block, Llama, Weight};
use crate::config::LlamaConfig;
use crate::memory::HugeBuffer;
use crate::ModelError;
use gguf::{GgmlType, GgufFile, TensorInfo};
use kernels::quant::dequantize_row;
use kernels::{Format, Level, SumOrder, ThreadPool};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The kernels' format of a GGUF tensor type, if they support it.
pub fn kernel_format(ggml_type: GgmlType) -> Option<Format> {
    Some(match ggml_type {
        GgmlType::F32 => Format::F32,
        GgmlType::F16 => Format::F16,
        GgmlType::BF16 => Format::Bf16,
        GgmlType::Q4_0 => Format::Q4_0,
        GgmlType::Q4_1 => Format::Q4_1,
        GgmlType::Q8_0 => Format::Q8_0,
        GgmlType::Q5_0 => Format::Q5_0,
        GgmlType::Q5_1 => Format::Q5_1,
        GgmlType::Q2_K => Format::Q2_K,
        GgmlType::Q3_K => Format::Q3_K,
        GgmlType::Q4_K => Format::Q4_K,
        GgmlType::Q5_K => Format::Q5_K,
        GgmlType::Q6_K => Format::Q6_K,
        GgmlType::Q8_K => Format::Q8_K,
        // Q8_1 exists only as an activation format; no model stores it.
        GgmlType::Q8_1 => return None,
    })
}

/// The GGUF tensor type of a kernel format (the inverse of [`kernel_format`]).
pub fn ggml_type_of(format: Format) -> GgmlType {
    match format {
        Format::F32 => GgmlType::F32,
        Format::F16 => GgmlType::F16,
        Format::Bf16 => GgmlType::BF16,
        Format::Q4_0 => GgmlType::Q4_0,
        Format::Q4_1 => GgmlType::Q4_1,
        Format::Q8_0 => GgmlType::Q8_0,
        Format::Q5_0 => GgmlType::Q5_0,
        Format::Q5_1 => GgmlType::Q5_1,
        Format::Q2_K => GgmlType::Q2_K,
        Format::Q3_K => GgmlType::Q3_K,
        Format::Q4_K => GgmlType::Q4_K,
        Format::Q5_K => GgmlType::Q5_K,
        Format::Q6_K => GgmlType::Q6_K,
        Format::Q8_K => GgmlType::Q8_K,
    }
}

fn format_of(info: &TensorInfo) -> Result<Format, ModelError> {
    kernel_format(info.ggml_type)
        .ok_or_else(|| ModelError::UnsupportedTensorType { tensor: info.name.clone(), ggml_type: info.ggml_type.name().to_string() })
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

/// Fails naming the tensors of `file` that the architecture does not read: a file with, say,
/// `attn_q.bias` tensors is another variant of the architecture, and running it without them
/// would give wrong results silently.
fn check_no_unused_tensors(file: &GgufFile, c: &LlamaConfig) -> Result<(), ModelError> {
    let mut per_block = vec!["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"];
    if c.family.qk_norm {
        per_block.extend(["attn_q_norm", "attn_k_norm"]);
    }
    if c.family.post_norms {
        per_block.extend(["post_attention_norm", "post_ffw_norm"]);
    }
    let used = |name: &str| -> bool {
        if matches!(name, "token_embd.weight" | "output_norm.weight" | "output.weight") {
            return true;
        }
        let Some(rest) = name.strip_prefix("blk.") else { return false };
        let Some((layer, tensor)) = rest.split_once('.') else { return false };
        layer.parse::<usize>().is_ok_and(|l| l < c.n_layer) && tensor.strip_suffix(".weight").is_some_and(|t| per_block.contains(&t))
    };
    let unused: Vec<&str> = file.tensors.iter().map(|t| t.name.as_str()).filter(|n| !used(n)).collect();
    if unused.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = unused.iter().take(5).copied().collect();
    let more = if unused.len() > 5 { format!(" and {} more", unused.len() - 5) } else { String::new() };
    Err(ModelError::Unsupported(format!(
        "{} tensors that a {} model does not use: {}{more} (a variant of the architecture that ferrolm does not run)",
        unused.len(),
        c.architecture,
        shown.join(", ")
    )))
}

impl Llama {
    /// Opens a GGUF file and loads a Llama model from it, running on `n_threads` threads.
    pub fn open(path: impl AsRef<Path>, n_threads: usize) -> Result<Llama, ModelError> {
        Llama::from_file(GgufFile::open(path)?, n_threads)
    }

    /// Loads a model from a parsed GGUF file; every tensor's presence, type and shape is checked.
    /// Fails with [`ModelError::Threads`] when the system refuses one of the threads.
    pub fn from_file(file: GgufFile, n_threads: usize) -> Result<Llama, ModelError> {
        Llama::load(file, Arc::new(ThreadPool::try_new(n_threads)?), None)
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
        let fam = c.family.clone();
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
                q_norm: fam.qk_norm.then(|| vector(&file, &n("attn_q_norm.weight"), c.head_dim)).transpose()?,
                k_norm: fam.qk_norm.then(|| vector(&file, &n("attn_k_norm.weight"), c.head_dim)).transpose()?,
                post_attn_norm: fam.post_norms.then(|| vector(&file, &n("post_attention_norm.weight"), d)).transpose()?,
                post_ffw_norm: fam.post_norms.then(|| vector(&file, &n("post_ffw_norm.weight"), d)).transpose()?,
            });
        }
        let output_norm = vector(&file, "output_norm.weight", d)?;
        if max_layers.is_none() {
            check_no_unused_tensors(&file, &c)?;
        }
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
            kv_type: crate::cache::KvType::F16,
            packed,
            tokens_evaluated: AtomicU64::new(0),
            lora: None,
        };
        model.set_level(model.level);
        Ok(model)
    }
}

impl Llama {
    /// The named 2-D weight of the file, dequantized: (rows, cols, values (rows, cols)) with
    /// `rows` = the tensor's outer dimension. For the training path, which computes in f32.
    pub fn dequantized(&self, name: &str) -> Result<(usize, usize, Vec<f32>), ModelError> {
        let file = self.file();
        let info = file.tensor(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let (cols, rows) = match info.dims[..] {
            [cols, rows] => (cols as usize, rows as usize),
            [len] => (len as usize, 1),
            _ => return Err(ModelError::TensorShape { tensor: name.to_string(), expected: vec![0, 0], got: info.dims.clone() }),
        };
        let format = format_of(info)?;
        let row_bytes =
            format.row_bytes(cols).ok_or_else(|| ModelError::TensorShape { tensor: name.to_string(), expected: vec![], got: info.dims.clone() })?;
        let data = file.tensor_data(info);
        let mut out = vec![0f32; rows * cols];
        for (src, dst) in data.chunks_exact(row_bytes).zip(out.chunks_exact_mut(cols)) {
            dequantize_row(format, src, dst);
        }
        Ok((rows, cols, out))
    }
}
