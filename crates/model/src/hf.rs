//! Hugging Face checkpoint folders of the Llama family (`config.json`, `model.safetensors` or a
//! sharded `model.safetensors.index.json`, `tokenizer.json`, and the chat template in
//! `chat_template.jinja` or `tokenizer_config.json`) turned into an in-memory GGUF file, so that
//! everything that runs a GGUF runs them.
//!
//! What the conversion does, as llama.cpp's converter does it:
//! - tensor names map to GGUF's (`model.layers.N.self_attn.q_proj.weight` -> `blk.N.attn_q.weight`);
//! - F32, F16 and BF16 weights are kept as they are (shape `[out, in]` becomes dims `[in, out]`);
//! - the rows of q_proj and k_proj are permuted from Hugging Face's rotate-half RoPE layout (pairs
//!   `(i, i + Dh/2)`) to GGUF's adjacent pairs (`(2i, 2i + 1)`): row `2i` of a head is row `i`,
//!   row `2i + 1` is row `Dh/2 + i`;
//! - an untied `lm_head.weight` becomes `output.weight`;
//! - a byte-level BPE `tokenizer.json` becomes GGUF tokenizer metadata (vocabulary, merges, token
//!   types, and the pre-tokenizer named by its pattern).
//!
//! Anything the Llama block would silently ignore is an error: biases (Qwen2), RoPE scaling,
//! another activation, tensors with other names, other tokenizer models.

use crate::ModelError;
use gguf::{GgmlType, GgufFile, GgufWriter, Value, ValueType};
use safetensors_file::{Dtype, SafeTensors};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Whether `path` is a folder with a `config.json` (a Hugging Face checkpoint).
pub fn is_checkpoint_dir(path: &Path) -> bool {
    path.is_dir() && path.join("config.json").is_file()
}

fn bad(dir: &Path, what: impl std::fmt::Display) -> ModelError {
    ModelError::BadConfig(format!("{}: {what}", dir.display()))
}

fn unsupported(what: impl std::fmt::Display) -> ModelError {
    ModelError::Unsupported(what.to_string())
}

fn read_json(path: &Path) -> Result<Json, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::BadConfig(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| ModelError::BadConfig(format!("{} is not valid JSON: {e}", path.display())))
}

/// The checkpoint in `dir` as a GGUF file of architecture `llama`.
pub fn gguf_from_checkpoint(dir: &Path) -> Result<GgufFile, ModelError> {
    let config = read_json(&dir.join("config.json"))?;
    let arch = config["architectures"].get(0).and_then(Json::as_str).unwrap_or("");
    if !matches!(arch, "LlamaForCausalLM" | "MistralForCausalLM") {
        return Err(ModelError::UnsupportedArchitecture(format!("{arch} (Hugging Face; supported: LlamaForCausalLM, MistralForCausalLM)")));
    }
    let num = |key: &str| config[key].as_u64().map(|v| v as usize);
    let need = |key: &str| num(key).ok_or_else(|| bad(dir, format!("config.json has no {key}")));
    let (d, f, n_layer, n_head) = (need("hidden_size")?, need("intermediate_size")?, need("num_hidden_layers")?, need("num_attention_heads")?);
    let n_head_kv = num("num_key_value_heads").unwrap_or(n_head);
    if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(bad(dir, format!("num_attention_heads {n_head} must be a positive multiple of num_key_value_heads {n_head_kv}")));
    }
    let head_dim = num("head_dim").unwrap_or(d / n_head);
    for (key, what) in [("attention_bias", "attention biases"), ("mlp_bias", "feed-forward biases")] {
        if config[key].as_bool() == Some(true) {
            return Err(unsupported(format!("{what} ({key} in config.json)")));
        }
    }
    if let Some(act) = config["hidden_act"].as_str().filter(|a| *a != "silu") {
        return Err(unsupported(format!("the activation {act:?} (the Llama block uses silu)")));
    }
    if config["sliding_window"].as_u64().is_some() {
        return Err(unsupported("Mistral's sliding window in a Hugging Face checkpoint"));
    }
    // RoPE: `rope_theta` at the top (transformers 4) or in `rope_parameters` (transformers 5).
    let rope = &config["rope_parameters"];
    let rope_type = rope["rope_type"].as_str().or_else(|| config["rope_scaling"]["rope_type"].as_str()).unwrap_or("default");
    if rope_type != "default" || (!config["rope_scaling"].is_null() && config["rope_scaling"]["rope_type"].as_str() != Some("default")) {
        return Err(unsupported(format!("RoPE scaling ({rope_type:?})")));
    }
    let rope_theta = rope["rope_theta"].as_f64().or_else(|| config["rope_theta"].as_f64()).unwrap_or(10000.0);
    let eps = config["rms_norm_eps"].as_f64().ok_or_else(|| bad(dir, "config.json has no rms_norm_eps"))?;
    let tied = config["tie_word_embeddings"].as_bool().unwrap_or(false);
    let n_ctx = num("max_position_embeddings").unwrap_or(4096);

    let mut w = GgufWriter::new();
    let u32v = |x: usize| Value::U32(x as u32);
    let name = config["_name_or_path"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    w.add_kv("general.architecture", Value::String("llama".into()))
        .add_kv("general.name", Value::String(name))
        .add_kv("llama.block_count", u32v(n_layer))
        .add_kv("llama.context_length", u32v(n_ctx))
        .add_kv("llama.embedding_length", u32v(d))
        .add_kv("llama.feed_forward_length", u32v(f))
        .add_kv("llama.attention.head_count", u32v(n_head))
        .add_kv("llama.attention.head_count_kv", u32v(n_head_kv))
        .add_kv("llama.attention.key_length", u32v(head_dim))
        .add_kv("llama.attention.value_length", u32v(head_dim))
        .add_kv("llama.rope.freq_base", Value::F32(rope_theta as f32))
        .add_kv("llama.attention.layer_norm_rms_epsilon", Value::F32(eps as f32));
    add_tokenizer(&mut w, dir, &config)?;

    // Tensors, from one file or the shards an index names.
    let tensors = Tensors::open(dir)?;
    let mut used = std::collections::HashSet::new();
    let mut put = |w: &mut GgufWriter, hf: &str, gguf: &str, permute_heads: Option<usize>| -> Result<(), ModelError> {
        let (dtype, shape, bytes) = tensors.get(hf)?;
        let ggml = match dtype {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            other => return Err(unsupported(format!("tensor {hf} of type {} (supported: F32, F16, BF16)", other.name()))),
        };
        let dims: Vec<u64> = shape.iter().rev().copied().collect();
        let data = match permute_heads {
            Some(heads) => {
                permute_rope_rows(bytes, shape, heads).ok_or_else(|| bad(dir, format!("{hf} has shape {shape:?}, not {heads} heads of rows")))?
            }
            None => bytes.to_vec(),
        };
        w.add_tensor(gguf, &dims, ggml, data);
        used.insert(hf.to_string());
        Ok(())
    };
    put(&mut w, "model.embed_tokens.weight", "token_embd.weight", None)?;
    for l in 0..n_layer {
        let hf = |s: &str| format!("model.layers.{l}.{s}.weight");
        let gg = |s: &str| format!("blk.{l}.{s}.weight");
        put(&mut w, &hf("input_layernorm"), &gg("attn_norm"), None)?;
        put(&mut w, &hf("self_attn.q_proj"), &gg("attn_q"), Some(n_head))?;
        put(&mut w, &hf("self_attn.k_proj"), &gg("attn_k"), Some(n_head_kv))?;
        put(&mut w, &hf("self_attn.v_proj"), &gg("attn_v"), None)?;
        put(&mut w, &hf("self_attn.o_proj"), &gg("attn_output"), None)?;
        put(&mut w, &hf("post_attention_layernorm"), &gg("ffn_norm"), None)?;
        put(&mut w, &hf("mlp.gate_proj"), &gg("ffn_gate"), None)?;
        put(&mut w, &hf("mlp.up_proj"), &gg("ffn_up"), None)?;
        put(&mut w, &hf("mlp.down_proj"), &gg("ffn_down"), None)?;
    }
    put(&mut w, "model.norm.weight", "output_norm.weight", None)?;
    if tensors.has("lm_head.weight") {
        put(&mut w, "lm_head.weight", "output.weight", None)?;
    } else if !tied {
        return Err(ModelError::MissingTensor("lm_head.weight (config.json says the head is not tied to the embeddings)".into()));
    }
    // Nothing left over: another variant of the architecture would run wrong silently.
    let mut extra: Vec<&str> = tensors.names().filter(|n| !used.contains(*n) && !n.ends_with("rotary_emb.inv_freq")).collect();
    if !extra.is_empty() {
        extra.sort();
        extra.truncate(5);
        return Err(unsupported(format!("tensors this Llama checkpoint loader does not use: {}", extra.join(", "))));
    }
    let bytes = w.to_bytes()?;
    Ok(GgufFile::from_bytes(bytes)?)
}

/// Rows of `bytes` (shape `[heads * Dh, cols]`) from the rotate-half layout to adjacent pairs.
fn permute_rope_rows(bytes: &[u8], shape: &[u64], heads: usize) -> Option<Vec<u8>> {
    let (&[rows, cols], true) = (shape, heads > 0) else { return None };
    let (rows, cols) = (rows as usize, cols as usize);
    if !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) || !bytes.len().is_multiple_of((rows * cols).max(1)) {
        return None;
    }
    let (dh, row_bytes) = (rows / heads, bytes.len() / rows);
    let mut out = Vec::with_capacity(bytes.len());
    for h in 0..heads {
        for r in 0..dh {
            // GGUF row r of the head: r = 2i + j takes Hugging Face row j * Dh/2 + i.
            let src = h * dh + (r % 2) * (dh / 2) + r / 2;
            out.extend_from_slice(&bytes[src * row_bytes..(src + 1) * row_bytes]);
        }
    }
    Some(out)
}

/// The safetensors files of a checkpoint and which holds which tensor.
struct Tensors {
    files: Vec<SafeTensors>,
    index: HashMap<String, usize>,
}

impl Tensors {
    fn open(dir: &Path) -> Result<Tensors, ModelError> {
        let open = |path: &PathBuf| SafeTensors::open(path).map_err(|e| ModelError::BadConfig(format!("{}: {e}", path.display())));
        let single = dir.join("model.safetensors");
        let paths: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else {
            let index = read_json(&dir.join("model.safetensors.index.json"))
                .map_err(|_| bad(dir, "neither model.safetensors nor model.safetensors.index.json is readable"))?;
            let mut shards: Vec<String> =
                index["weight_map"].as_object().map(|m| m.values().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default();
            shards.sort();
            shards.dedup();
            if shards.is_empty() {
                return Err(bad(dir, "model.safetensors.index.json names no shards"));
            }
            shards.iter().map(|s| dir.join(s)).collect()
        };
        let files: Vec<SafeTensors> = paths.iter().map(open).collect::<Result<_, _>>()?;
        let mut index = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for n in f.names() {
                index.insert(n.to_string(), i);
            }
        }
        Ok(Tensors { files, index })
    }

    fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    fn get(&self, name: &str) -> Result<(Dtype, &[u64], &[u8]), ModelError> {
        let file = &self.files[*self.index.get(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?];
        let err = |e: safetensors_file::SafetensorsError| ModelError::BadConfig(format!("tensor {name}: {e}"));
        Ok((file.dtype(name).map_err(err)?, file.shape(name).map_err(err)?, file.bytes(name).map_err(err)?))
    }
}

/// GGUF tokenizer metadata from a byte-level BPE `tokenizer.json`, with the ids and template of
/// `config.json` and `tokenizer_config.json`.
fn add_tokenizer(w: &mut GgufWriter, dir: &Path, config: &Json) -> Result<(), ModelError> {
    let tj = read_json(&dir.join("tokenizer.json"))?;
    let model = &tj["model"];
    if model["type"].as_str() != Some("BPE") || model["byte_fallback"].as_bool() == Some(true) || !tj["normalizer"].is_null() {
        return Err(unsupported("this tokenizer.json (only byte-level BPE tokenizers without a normalizer are converted yet)"));
    }
    let pre = pre_tokenizer_name(&tj["pre_tokenizer"])
        .ok_or_else(|| unsupported(format!("the pre-tokenizer of tokenizer.json: {}", tj["pre_tokenizer"])))?;
    let vocab = model["vocab"].as_object().ok_or_else(|| bad(dir, "tokenizer.json has no vocabulary"))?;
    let mut tokens: Vec<Option<String>> = Vec::new();
    let mut types: Vec<i32> = Vec::new();
    let mut put = |id: usize, text: &str, ty: i32| {
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
            types.resize(id + 1, 1);
        }
        tokens[id] = Some(text.to_string());
        types[id] = ty;
    };
    for (text, id) in vocab {
        put(id.as_u64().ok_or_else(|| bad(dir, "tokenizer.json: a vocabulary id is not a number"))? as usize, text, 1);
    }
    for added in tj["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(text)) = (added["id"].as_u64(), added["content"].as_str()) else { continue };
        // Special added tokens are control tokens; the others are user-defined (matched whole).
        put(id as usize, text, if added["special"].as_bool() == Some(true) { 3 } else { 4 });
    }
    let n_vocab = config["vocab_size"].as_u64().map(|v| v as usize).unwrap_or(tokens.len());
    if tokens.len() > n_vocab {
        return Err(bad(dir, format!("tokenizer.json has {} ids, config.json vocab_size {n_vocab}", tokens.len())));
    }
    // Ids without a token (padding rows of the embedding table) are unused.
    let mut filled: Vec<String> = Vec::with_capacity(n_vocab);
    for id in 0..n_vocab {
        match tokens.get(id).cloned().flatten() {
            Some(t) => filled.push(t),
            None => {
                filled.push(format!("[PAD{id}]"));
                if types.len() <= id {
                    types.resize(id + 1, 1);
                }
                types[id] = 5;
            }
        }
    }
    types.truncate(n_vocab);
    let merges: Vec<String> = model["merges"]
        .as_array()
        .ok_or_else(|| bad(dir, "tokenizer.json has no merges"))?
        .iter()
        .filter_map(|m| match m {
            Json::String(s) => Some(s.clone()),
            Json::Array(pair) => Some(format!("{} {}", pair.first()?.as_str()?, pair.get(1)?.as_str()?)),
            _ => None,
        })
        .collect();
    let strings = |xs: Vec<String>| Value::Array(ValueType::String, xs.into_iter().map(Value::String).collect());
    w.add_kv("tokenizer.ggml.model", Value::String("gpt2".into()))
        .add_kv("tokenizer.ggml.pre", Value::String(pre.into()))
        .add_kv("tokenizer.ggml.tokens", strings(filled))
        .add_kv("tokenizer.ggml.token_type", Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()))
        .add_kv("tokenizer.ggml.merges", strings(merges));
    let tc = read_json(&dir.join("tokenizer_config.json")).unwrap_or(Json::Null);
    for (key, gguf_key) in [("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id")] {
        // eos_token_id may be a list; the first is the one GGUF stores.
        let id = config[key].as_u64().or_else(|| config[key].get(0).and_then(Json::as_u64));
        if let Some(id) = id {
            w.add_kv(gguf_key, Value::U32(id as u32));
        }
    }
    w.add_kv("tokenizer.ggml.add_bos_token", Value::Bool(tc["add_bos_token"].as_bool().unwrap_or(false)));
    let template = std::fs::read_to_string(dir.join("chat_template.jinja")).ok().or_else(|| tc["chat_template"].as_str().map(String::from));
    if let Some(t) = template {
        w.add_kv("tokenizer.chat_template", Value::String(t));
    }
    Ok(())
}

/// The GGUF pre-tokenizer name of a tokenizer.json pre-tokenizer: GPT-2's byte-level pattern
/// (`gpt-2`, llama.cpp's name), digits split one by one before it (`smollm`), or Llama 3's split pattern (`llama-bpe`).
fn pre_tokenizer_name(pre: &Json) -> Option<&'static str> {
    let byte_level = |p: &Json| p["type"] == "ByteLevel" && p["use_regex"].as_bool() != Some(false);
    if byte_level(pre) {
        return Some("gpt-2");
    }
    let steps = pre["pretokenizers"].as_array().filter(|_| pre["type"] == "Sequence")?;
    match steps.as_slice() {
        [digits, bl] if digits["type"] == "Digits" && digits["individual_digits"] == true && byte_level(bl) => Some("smollm"),
        [split, bl] if split["type"] == "Split" && bl["type"] == "ByteLevel" && bl["use_regex"] == false => {
            let pattern = split["pattern"]["Regex"].as_str()?;
            const LLAMA3: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
            (pattern == LLAMA3).then_some("llama-bpe")
        }
        _ => None,
    }
}
