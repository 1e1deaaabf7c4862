//! llama.cpp's LoRA GGUF, as `convert_lora_to_gguf.py` writes it and `src/llama-adapter.cpp`
//! reads it.
//!
//! ```text
//! general.architecture   the base model's ("llama")
//! general.type           "adapter"
//! adapter.type           "lora"
//! adapter.lora.alpha     f32
//! blk.{i}.attn_q.weight.lora_a   ne [in, R]   = A (R, in) row-major
//! blk.{i}.attn_q.weight.lora_b   ne [R, out]  = B (out, R) row-major, rows in GGUF order
//! ... attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down
//! ```
//!
//! llama.cpp adds `s * B (A x)` with `s = alpha / R` (R = ne[0] of lora_b), or `s = 1` when alpha
//! is 0 or absent; it knows no rsLoRA. B is stored as it is in memory: the converter permutes the
//! rows of B of q and k like those of Wq and Wk, which is the order ferrolm keeps.
//!
//! F32 is written; F32, F16 and BF16 are read. Tensors ending in `_norm.weight` are skipped, as
//! llama.cpp skips them; any other tensor that is not a pair of the seven maps is refused.

use std::collections::BTreeMap;
use std::path::Path;

use ::gguf::{GgmlType, GgufFile, GgufWriter, TensorInfo, Value, ARCHITECTURE_KEY};

use super::{check_adapter, f32_to_le_bytes, first_non_finite, model_hint, quote, write_atomically, AdapterError, ModelDims, MAX_RANK};
use crate::lora::{Adapter, LoraConfig, LoraPair, Target};

/// Metadata key saying what kind of file this is: "adapter" for an adapter.
pub const GENERAL_TYPE_KEY: &str = "general.type";
/// Metadata key of the adapter kind: "lora".
pub const ADAPTER_TYPE_KEY: &str = "adapter.type";
/// Metadata key of LoRA's alpha (f32).
pub const ALPHA_KEY: &str = "adapter.lora.alpha";
/// The name errors give a file read from memory.
const IN_MEMORY: &str = "adapter (in memory)";
/// The suffixes of A and B after the base weight's name.
const SUFFIXES: [&str; 2] = [".lora_a", ".lora_b"];

/// Writes `adapter` to the file `path` as llama.cpp's LoRA GGUF, for the base model `dims`
/// (whose `architecture` the file names). Matrices are F32 and the file is written whole or not at
/// all.
///
/// llama.cpp scales by alpha / R and ignores rsLoRA, so an rsLoRA adapter (scaled by
/// alpha / sqrt(R)) is written with alpha' = alpha * sqrt(R), for which alpha' / R = alpha / sqrt(R):
/// llama.cpp applies the same scale, and [`load_gguf`] reads it back as a plain adapter of alpha'.
/// An alpha of 0 is refused: llama.cpp would read it as "no alpha" and scale by 1.
pub fn save_gguf(adapter: &Adapter, dims: &ModelDims, path: impl AsRef<Path>) -> Result<(), AdapterError> {
    check_adapter(adapter, dims)?;
    let config = &adapter.config;
    let alpha = file_alpha(config);
    if alpha == 0.0 || !alpha.is_finite() {
        return Err(AdapterError::BadAdapter {
            problem: format!("alpha {alpha} cannot be written to a llama.cpp adapter (it reads 0 as scale 1); an adapter scaled by 0 does nothing"),
        });
    }
    let rank = config.rank as u64;
    let mut writer = GgufWriter::new();
    writer
        .add_kv(ARCHITECTURE_KEY, Value::from(dims.architecture.as_str()))
        .add_kv(GENERAL_TYPE_KEY, Value::from("adapter"))
        .add_kv(ADAPTER_TYPE_KEY, Value::from("lora"))
        .add_kv(ALPHA_KEY, Value::F32(alpha));
    for (layer, pairs) in adapter.layers.iter().enumerate() {
        for (target, pair) in Target::ALL.into_iter().zip(pairs) {
            let Some(pair) = pair else { continue };
            let base = target.gguf_name(layer);
            // ne are innermost first: A (R, in) is ne [in, R], B (out, R) is ne [R, out].
            writer.add_tensor(&format!("{base}{}", SUFFIXES[0]), &[pair.n_in as u64, rank], GgmlType::F32, f32_to_le_bytes(&pair.a));
            writer.add_tensor(&format!("{base}{}", SUFFIXES[1]), &[rank, pair.n_out as u64], GgmlType::F32, f32_to_le_bytes(&pair.b));
        }
    }
    write_atomically(path.as_ref(), &writer.to_bytes()?)
}

/// The alpha to store so that llama.cpp's alpha / R is our scaling.
fn file_alpha(config: &LoraConfig) -> f32 {
    if config.rslora {
        (config.alpha as f64 * (config.rank as f64).sqrt()) as f32
    } else {
        config.alpha
    }
}

/// Reads the llama.cpp LoRA GGUF at `path` for a model of `dims`. The result has `dims.n_layer`
/// layers, its targets in [`Target::ALL`] order, no dropout, and `rslora` false (the file cannot
/// say; its alpha already gives llama.cpp's scale). An absent or zero alpha becomes R, the scale of
/// 1 llama.cpp applies then.
pub fn load_gguf(path: impl AsRef<Path>, dims: &ModelDims) -> Result<Adapter, AdapterError> {
    dims.validate()?;
    let path = path.as_ref();
    if !path.exists() {
        return Err(AdapterError::MissingFile { path: path.to_owned(), hint: "give the .gguf written by convert_lora_to_gguf.py or ferrolm".into() });
    }
    let file = GgufFile::open(path)?;
    read_adapter(path, &file, dims)
}

/// [`load_gguf`] of a file held in memory.
pub fn load_gguf_bytes(bytes: Vec<u8>, dims: &ModelDims) -> Result<Adapter, AdapterError> {
    dims.validate()?;
    let file = GgufFile::from_bytes(bytes)?;
    read_adapter(Path::new(IN_MEMORY), &file, dims)
}

fn read_adapter(path: &Path, file: &GgufFile, dims: &ModelDims) -> Result<Adapter, AdapterError> {
    let unsupported =
        |key: &str, found: &str, hint: String| AdapterError::Unsupported { path: path.to_owned(), key: key.to_owned(), found: quote(found), hint };
    let string = |key, hint| metadata_str(path, file, key, hint);
    const NOT_ADAPTER: &str =
        "a llama.cpp LoRA adapter has general.type \"adapter\"; is this a model? (convert a PEFT adapter with convert_lora_to_gguf.py)";
    let general_type = string(GENERAL_TYPE_KEY, NOT_ADAPTER)?;
    if general_type != "adapter" {
        return Err(unsupported(GENERAL_TYPE_KEY, general_type, NOT_ADAPTER.into()));
    }
    let architecture = string(ARCHITECTURE_KEY, "a llama.cpp adapter names the architecture of its base model")?;
    if architecture != dims.architecture {
        return Err(unsupported(
            ARCHITECTURE_KEY,
            architecture,
            format!("the model is {}: the adapter was made for another model", quote(&dims.architecture)),
        ));
    }
    let adapter_type = string(ADAPTER_TYPE_KEY, "a llama.cpp LoRA adapter has adapter.type \"lora\"")?;
    if adapter_type != "lora" {
        return Err(unsupported(
            ADAPTER_TYPE_KEY,
            adapter_type,
            "ferrolm reads plain LoRA adapters (adapter.type \"lora\"), not activated LoRA or control vectors".into(),
        ));
    }
    let alpha = match file.get(ALPHA_KEY) {
        None => 0.0,
        Some(value) => value.as_f32().filter(|a| a.is_finite()).ok_or_else(|| AdapterError::BadValue {
            path: path.to_owned(),
            key: ALPHA_KEY.into(),
            found: describe(value),
            expected: "a finite number".into(),
        })?,
    };

    // (layer, target) -> infos of [lora_a, lora_b].
    let mut found: BTreeMap<(usize, Target), [Option<&TensorInfo>; 2]> = BTreeMap::new();
    for info in &file.tensors {
        let Some((layer, target, half)) = parse_name(path, &info.name, dims)? else { continue };
        found.entry((layer, target)).or_default()[half] = Some(info);
    }
    if found.is_empty() {
        return Err(AdapterError::Inconsistent {
            path: path.to_owned(),
            problem: "the file holds no LoRA tensors".into(),
            hint: "an adapter has blk.N.attn_q.weight.lora_a and the like; convert it again".into(),
        });
    }

    // R is ne[0] of lora_b, as llama.cpp takes it; it must be the same for every pair.
    let mut rank = None;
    let mut layers: Vec<[Option<LoraPair>; 7]> = (0..dims.n_layer).map(|_| std::array::from_fn(|_| None)).collect();
    for ((layer, target), halves) in found {
        let [Some(a_info), Some(b_info)] = halves else {
            let base = target.gguf_name(layer);
            let (present, missing) = if halves[0].is_some() { (0, 1) } else { (1, 0) };
            return Err(AdapterError::MissingHalf {
                path: path.to_owned(),
                present: quote(&format!("{base}{}", SUFFIXES[present])),
                missing: quote(&format!("{base}{}", SUFFIXES[missing])),
            });
        };
        let r = *rank.get_or_insert(b_info.dims.first().copied().unwrap_or(0));
        let (n_out, n_in) = dims.shape(target);
        let (n_out64, n_in64) = (n_out as u64, n_in as u64);
        let shape_error = |info: &TensorInfo, expected: Vec<u64>, hint: String| AdapterError::Shape {
            path: path.to_owned(),
            tensor: quote(&info.name),
            found: info.dims.clone(),
            expected,
            hint,
        };
        if r == 0 || r > MAX_RANK as u64 {
            return Err(shape_error(b_info, vec![r, n_out64], format!("its rank (ne[0]) must be 1 to {MAX_RANK}")));
        }
        if b_info.dims[..] != [r, n_out64] {
            let hint = match b_info.dims[..] {
                [other, out] if out == n_out64 && other != r => format!("other pairs have rank {r}: ferrolm adapters have one rank"),
                _ => model_hint(dims),
            };
            return Err(shape_error(b_info, vec![r, n_out64], hint));
        }
        if a_info.dims[..] != [n_in64, r] {
            let hint = match a_info.dims[..] {
                [rows, cols] if rows == r && cols == n_in64 => {
                    "lora_a is not transposed: llama.cpp stores it with ne [in, r] (adapters of the old finetune example are not supported)".into()
                }
                _ => model_hint(dims),
            };
            return Err(shape_error(a_info, vec![n_in64, r], hint));
        }
        let a = read_values(path, file, a_info)?;
        let b = read_values(path, file, b_info)?;
        layers[layer][target.index()] = Some(LoraPair { a, b, n_in, n_out });
    }

    let rank = rank.map_or(0, |r| r as usize);
    let targets: Vec<Target> = Target::ALL.into_iter().filter(|t| layers.iter().any(|pairs| pairs[t.index()].is_some())).collect();
    // llama.cpp scales by 1 when alpha is 0: the alpha with alpha / R = 1 is R.
    let alpha = if alpha == 0.0 { rank as f32 } else { alpha };
    Ok(Adapter { config: LoraConfig { rank, alpha, rslora: false, dropout: 0.0, targets }, layers })
}

/// The string under metadata key `key`; `hint` says what the key is for when it is missing.
fn metadata_str<'f>(path: &Path, file: &'f GgufFile, key: &str, hint: &str) -> Result<&'f str, AdapterError> {
    let value = file.get(key).ok_or_else(|| AdapterError::MissingKey { path: path.to_owned(), key: key.to_owned(), hint: hint.to_owned() })?;
    value.as_str().ok_or_else(|| AdapterError::BadValue {
        path: path.to_owned(),
        key: key.to_owned(),
        found: describe(value),
        expected: "a string".into(),
    })
}

/// (layer, target, 0 for lora_a or 1 for lora_b) of a tensor name, `None` for a norm tensor that
/// llama.cpp skips, or why it is neither.
fn parse_name(path: &Path, name: &str, dims: &ModelDims) -> Result<Option<(usize, Target, usize)>, AdapterError> {
    let unknown = |hint: &str| AdapterError::UnknownTensor { path: path.to_owned(), tensor: quote(name), hint: hint.to_owned() };
    let Some((base, half)) = SUFFIXES.iter().enumerate().find_map(|(half, suffix)| Some((name.strip_suffix(suffix)?, half))) else {
        if name.ends_with("_norm.weight") {
            return Ok(None);
        }
        return Err(unknown("llama.cpp adapter tensors are a base weight's name plus .lora_a or .lora_b"));
    };
    const SEVEN: &str =
        "ferrolm adapts only attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up and ffn_down (not the embeddings or the output head)";
    let layer_text = base.strip_prefix("blk.").and_then(|rest| rest.split('.').next()).unwrap_or("");
    if layer_text.is_empty() || !layer_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(unknown(SEVEN));
    }
    let layer: usize = layer_text.parse().map_err(|_| unknown(SEVEN))?;
    let target = Target::ALL.into_iter().find(|t| t.gguf_name(layer) == base).ok_or_else(|| unknown(SEVEN))?;
    if layer >= dims.n_layer {
        return Err(AdapterError::LayerOutOfRange { path: path.to_owned(), tensor: quote(name), layer, n_layer: dims.n_layer });
    }
    Ok(Some((layer, target, half)))
}

/// The elements of `info` as f32 (from F32, F16 or BF16), checked finite.
fn read_values(path: &Path, file: &GgufFile, info: &TensorInfo) -> Result<Vec<f32>, AdapterError> {
    let bytes = file.tensor_data(info);
    let values: Vec<f32> = match info.ggml_type {
        GgmlType::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        GgmlType::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        // bf16 is the top half of an f32: the widening is exact.
        GgmlType::BF16 => bytes.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect(),
        other => {
            return Err(AdapterError::TensorType {
                path: path.to_owned(),
                tensor: quote(&info.name),
                dtype: other.name().into(),
                hint: "ferrolm reads F32, F16 and BF16 adapters; convert it again with convert_lora_to_gguf.py --outtype f32 (or f16)".into(),
            })
        }
    };
    if values.len() as u64 != info.n_elements {
        // The reader proved every range inside the file, so this is a tensor info of another file.
        return Err(AdapterError::Inconsistent {
            path: path.to_owned(),
            problem: format!("tensor {} has {} of its {} elements", quote(&info.name), values.len(), info.n_elements),
            hint: "the file is damaged; convert it again".into(),
        });
    }
    if let Some((index, value)) = first_non_finite(&values) {
        return Err(AdapterError::NonFinite { path: path.to_owned(), tensor: quote(&info.name), index, value });
    }
    Ok(values)
}

/// A short description of a metadata value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => format!("the string {}", quote(text)),
        Value::Array(_, items) => format!("an array of {} values", items.len()),
        other => format!("{other:?}"),
    }
}
