//! PEFT's adapter files: `adapter_model.safetensors` and `adapter_config.json` in one directory.
//!
//! Tensors (no transpose; rows of B of q and k in Hugging Face order):
//!
//! ```text
//! base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_A.weight   A (R, in)
//! base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_B.weight   B (out, R)
//! base_model.model.model.layers.{i}.mlp.{gate,up,down}_proj.lora_{A,B}.weight
//! ```
//!
//! F32 is written; F32, F16 and BF16 are read. The config is written as PEFT writes it (every key
//! of PEFT 0.18 with its default, sorted, indented by 2) and read leniently: unknown keys are
//! ignored, missing ones take PEFT's defaults. What ferrolm cannot honour is refused by name:
//! another `peft_type` or `task_type`, `fan_in_fan_out`, biases (`bias`, `lora_bias`), per-module
//! ranks or alphas (`rank_pattern`, `alpha_pattern`), DoRA, QA-LoRA, extra trained modules or
//! tokens, layer replication, initialisations that change the base weights (PiSSA, OLoRA, CorDA,
//! LoftQ), and `target_modules` other than the seven maps.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors_file::{serialize, Dtype, SafeTensors, TensorToWrite};
use serde_json::{Map, Value};

use super::{
    check_adapter, f32_to_le_bytes, first_non_finite, model_hint, permute_b_rows, quote, rope_permuted, write_atomically, AdapterError, ModelDims,
    MAX_RANK,
};
use crate::lora::{Adapter, LoraConfig, LoraPair, Target};

/// The name of the configuration file in a PEFT adapter directory.
pub const PEFT_CONFIG_FILE: &str = "adapter_config.json";
/// The name of the weights file in a PEFT adapter directory.
pub const PEFT_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// What PEFT puts before a module path of a causal LM (`PeftModel.base_model.model`).
const KEY_PREFIX: &str = "base_model.model.";
/// The rows of A and B in a tensor name: `lora_A`, `lora_B`.
const HALVES: [&str; 2] = ["A", "B"];

/// Writes `adapter` into directory `dir` (created if needed) as PEFT would: F32
/// `adapter_model.safetensors` with the rows of B of q and k in Hugging Face order, and
/// `adapter_config.json` naming `base_model_name` (a Hub id or a path) as the base model. `dims` is
/// the model the adapter was trained on; the adapter is checked against it before anything is
/// written, and each file is written whole or not at all.
pub fn save_peft(adapter: &Adapter, dims: &ModelDims, dir: impl AsRef<Path>, base_model_name: &str) -> Result<(), AdapterError> {
    check_adapter(adapter, dims)?;
    let dropout = adapter.config.dropout;
    if !(0.0..1.0).contains(&dropout) {
        return Err(AdapterError::BadAdapter { problem: format!("dropout {dropout} is outside [0, 1)") });
    }
    let dir = dir.as_ref();
    let weights = weights_bytes(adapter, dims)?;
    let config = config_json(&adapter.config, base_model_name);
    std::fs::create_dir_all(dir).map_err(|cause| AdapterError::Io { path: dir.to_owned(), cause })?;
    write_atomically(&dir.join(PEFT_WEIGHTS_FILE), &weights)?;
    write_atomically(&dir.join(PEFT_CONFIG_FILE), config.as_bytes())
}

/// Reads the PEFT adapter in directory `dir` for a model of `dims`. The result has `dims.n_layer`
/// layers, the rows of B of q and k in GGUF order, and its targets in [`Target::ALL`] order.
pub fn load_peft(dir: impl AsRef<Path>, dims: &ModelDims) -> Result<Adapter, AdapterError> {
    let dir = dir.as_ref();
    load_peft_files(&dir.join(PEFT_CONFIG_FILE), &dir.join(PEFT_WEIGHTS_FILE), dims)
}

/// [`load_peft`] of files held in memory: the text of `adapter_config.json` and the bytes of
/// `adapter_model.safetensors`. Errors name the two files by their usual names.
pub fn load_peft_bytes(config_json: &[u8], weights: Vec<u8>, dims: &ModelDims) -> Result<Adapter, AdapterError> {
    dims.validate()?;
    let config = parse_config(Path::new(PEFT_CONFIG_FILE), config_json)?;
    let weights = SafeTensors::from_bytes(weights)?;
    read_tensors(config, Path::new(PEFT_WEIGHTS_FILE), &weights, dims)
}

/// [`load_peft`] with the two paths given apart (a `.safetensors` of another name).
pub(crate) fn load_peft_files(config_path: &Path, weights_path: &Path, dims: &ModelDims) -> Result<Adapter, AdapterError> {
    dims.validate()?;
    const BOTH: &str = "a PEFT adapter is a directory holding adapter_config.json and adapter_model.safetensors";
    if !config_path.exists() {
        return Err(AdapterError::MissingFile { path: config_path.to_owned(), hint: BOTH.into() });
    }
    let text = std::fs::read(config_path).map_err(|cause| AdapterError::Io { path: config_path.to_owned(), cause })?;
    let config = parse_config(config_path, &text)?;
    if !weights_path.exists() {
        let pickle = weights_path.with_file_name("adapter_model.bin");
        let hint = if pickle.exists() {
            "there is an adapter_model.bin (a pickle), which ferrolm does not read; save the adapter with save_pretrained(..., safe_serialization=True)"
        } else {
            BOTH
        };
        return Err(AdapterError::MissingFile { path: weights_path.to_owned(), hint: hint.into() });
    }
    let weights = SafeTensors::open(weights_path)?;
    read_tensors(config, weights_path, &weights, dims)
}

/// The safetensors file of `adapter` (checked), B of q and k back in Hugging Face row order.
fn weights_bytes(adapter: &Adapter, dims: &ModelDims) -> Result<Vec<u8>, AdapterError> {
    let rank = adapter.config.rank;
    let mut tensors: Vec<(String, [u64; 2], Vec<u8>)> = Vec::new();
    for (layer, pairs) in adapter.layers.iter().enumerate() {
        for (target, pair) in Target::ALL.into_iter().zip(pairs) {
            let Some(pair) = pair else { continue };
            // B (out, R): GGUF row order in memory, Hugging Face order in the file.
            let b_hf = if rope_permuted(target) { permute_b_rows(&pair.b, rank, dims.head_dim, false) } else { pair.b.clone() };
            tensors.push((tensor_name(layer, target, HALVES[0]), [rank as u64, pair.n_in as u64], f32_to_le_bytes(&pair.a)));
            tensors.push((tensor_name(layer, target, HALVES[1]), [pair.n_out as u64, rank as u64], f32_to_le_bytes(&b_hf)));
        }
    }
    let to_write: Vec<TensorToWrite> = tensors.iter().map(|(name, shape, bytes)| (name.as_str(), Dtype::F32, &shape[..], &bytes[..])).collect();
    Ok(serialize(&to_write, &[("format", "pt")])?)
}

/// `base_model.model.model.layers.{layer}.self_attn.q_proj.lora_{half}.weight` and the like.
fn tensor_name(layer: usize, target: Target, half: &str) -> String {
    format!("{KEY_PREFIX}{}.lora_{half}.weight", target.hf_module(layer))
}

/// `adapter_config.json` as PEFT 0.18 writes it: every key with its default unless the adapter
/// says otherwise, sorted, indented by 2. `peft_version` is left out: ferrolm is not PEFT.
fn config_json(config: &LoraConfig, base_model_name: &str) -> String {
    let mut targets = config.targets.clone();
    targets.sort();
    targets.dedup();
    let target_modules: Vec<Value> = targets.iter().map(|t| Value::from(t.hf_name())).collect();
    let empty = || Value::Object(Map::new());
    let mut entries = vec![
        ("alpha_pattern", empty()),
        ("auto_mapping", Value::Null),
        ("base_model_name_or_path", Value::from(base_model_name)),
        ("bias", Value::from("none")),
        ("corda_config", Value::Null),
        ("ensure_weight_tying", Value::from(false)),
        ("eva_config", Value::Null),
        ("exclude_modules", Value::Null),
        ("fan_in_fan_out", Value::from(false)),
        ("inference_mode", Value::from(true)),
        ("init_lora_weights", Value::from(true)),
        ("layer_replication", Value::Null),
        ("layers_pattern", Value::Null),
        ("layers_to_transform", Value::Null),
        ("loftq_config", empty()),
        ("lora_alpha", json_number(config.alpha)),
        ("lora_bias", Value::from(false)),
        ("lora_dropout", json_float(config.dropout)),
        ("megatron_config", Value::Null),
        ("megatron_core", Value::from("megatron.core")),
        ("modules_to_save", Value::Null),
        ("peft_type", Value::from("LORA")),
        ("qalora_group_size", Value::from(16)),
        ("r", Value::from(config.rank)),
        ("rank_pattern", empty()),
        ("revision", Value::Null),
        ("target_modules", Value::Array(target_modules)),
        ("target_parameters", Value::Null),
        ("task_type", Value::from("CAUSAL_LM")),
        ("trainable_token_indices", Value::Null),
        ("use_dora", Value::from(false)),
        ("use_qalora", Value::from(false)),
        ("use_rslora", Value::from(config.rslora)),
    ];
    // Sorted as PEFT's json.dumps(sort_keys=True), whichever map serde_json was built with.
    entries.sort_by_key(|(key, _)| *key);
    let map: Map<String, Value> = entries.into_iter().map(|(key, value)| (key.to_owned(), value)).collect();
    // A map of JSON values always serializes.
    serde_json::to_string_pretty(&Value::Object(map)).unwrap_or_default()
}

/// An f32 as JSON: an integer when it is one (`16`, as PEFT writes `lora_alpha`), else as
/// [`json_float`].
fn json_number(value: f32) -> Value {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return Value::from(value as i64);
    }
    json_float(value)
}

/// An f32 as a JSON float: the shortest decimal that reads back as the same f32 (`0.05`, not
/// `0.05000000074505806`; `0.0` for zero, as Python writes a float).
fn json_float(value: f32) -> Value {
    value.to_string().parse::<f64>().map_or(Value::Null, Value::from)
}

/// The LoRA settings of `adapter_config.json`, after refusing what ferrolm cannot honour.
fn parse_config(path: &Path, text: &[u8]) -> Result<LoraConfig, AdapterError> {
    let json_error = |message: String| AdapterError::Json { path: path.to_owned(), message };
    let value: Value = serde_json::from_slice(text).map_err(|e| json_error(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(json_error(format!("it is {}", describe(&value))));
    };
    let settings = Settings { path, map: &map };

    match settings.get("peft_type") {
        Some(Value::String(kind)) if kind == "LORA" => {}
        None => return Err(settings.missing("peft_type", "every PEFT adapter_config.json names its method; this file is not one")),
        Some(other) => return Err(settings.unsupported("peft_type", other, "ferrolm reads LoRA adapters only (peft_type \"LORA\")")),
    }
    match settings.get("task_type") {
        None => {}
        Some(Value::String(kind)) if kind == "CAUSAL_LM" => {}
        Some(other) => {
            return Err(settings.unsupported("task_type", other, "ferrolm reads adapters of causal language models (task_type \"CAUSAL_LM\")"))
        }
    }
    match settings.get("bias") {
        None => {}
        Some(Value::String(kind)) if kind == "none" => {}
        Some(other) => return Err(settings.unsupported("bias", other, "ferrolm adapters carry no biases; train with bias=\"none\"")),
    }
    for (key, hint) in [
        (
            "fan_in_fan_out",
            "the adapter is for Conv1D layers stored (in, out), as in GPT-2; a Llama's linear maps are (out, in), so train with fan_in_fan_out=False",
        ),
        ("use_dora", "DoRA adapters (with magnitude vectors) are not supported; train a plain LoRA (use_dora=False)"),
        ("lora_bias", "a bias on LoRA B is not supported; train with lora_bias=False"),
        ("use_qalora", "QA-LoRA adapters are not supported; train with use_qalora=False"),
    ] {
        settings.refuse_true(key, hint)?;
    }
    for (key, hint) in [
        ("rank_pattern", "ferrolm adapters have one rank for every map; train without rank_pattern"),
        ("alpha_pattern", "ferrolm adapters have one alpha for every map; train without alpha_pattern"),
        (
            "modules_to_save",
            "the adapter also replaces whole modules (such as a new head), which ferrolm does not load; train without modules_to_save",
        ),
        ("trainable_token_indices", "the adapter also trains token embeddings, which ferrolm does not load"),
        ("layer_replication", "the adapter repeats layers of the base model, which ferrolm does not do"),
        ("target_parameters", "the adapter targets raw parameters (such as MoE experts), not the seven linear maps of a Llama block"),
    ] {
        settings.refuse_non_empty(key, hint)?;
    }
    if let Some(Value::String(init)) = settings.get("init_lora_weights") {
        if ["pissa", "olora", "corda", "loftq"].iter().any(|method| init.to_ascii_lowercase().starts_with(method)) {
            return Err(settings.unsupported(
                "init_lora_weights",
                &Value::from(init.as_str()),
                "this initialisation also changes the base weights; convert the adapter first with PEFT's save_pretrained(..., path_initial_model_for_weight_conversion=...)",
            ));
        }
    }

    // Defaults are PEFT's LoraConfig defaults.
    let rank = settings.rank()?;
    let alpha = settings.number("lora_alpha", 8.0, "a finite number", |v| v.is_finite())?;
    let dropout = settings.number("lora_dropout", 0.0, "a probability in [0, 1)", |v| (0.0..1.0).contains(&v))?;
    let rslora = settings.bool("use_rslora", false)?;
    let targets = settings.targets()?;
    Ok(LoraConfig { rank, alpha, rslora, dropout, targets })
}

/// The keys of `adapter_config.json`, with the file's path for errors. A `null` value counts as
/// absent, as in PEFT.
struct Settings<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Settings<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn missing(&self, key: &str, hint: &str) -> AdapterError {
        AdapterError::MissingKey { path: self.path.to_owned(), key: key.to_owned(), hint: hint.to_owned() }
    }

    fn unsupported(&self, key: &str, found: &Value, hint: &str) -> AdapterError {
        AdapterError::Unsupported { path: self.path.to_owned(), key: key.to_owned(), found: describe(found), hint: hint.to_owned() }
    }

    fn bad_value(&self, key: &str, found: &Value, expected: &str) -> AdapterError {
        AdapterError::BadValue { path: self.path.to_owned(), key: key.to_owned(), found: describe(found), expected: expected.to_owned() }
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool, AdapterError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(value)) => Ok(*value),
            Some(other) => Err(self.bad_value(key, other, "true or false")),
        }
    }

    /// Fails if `key` is true.
    fn refuse_true(&self, key: &str, hint: &str) -> Result<(), AdapterError> {
        if self.bool(key, false)? {
            return Err(self.unsupported(key, &Value::Bool(true), hint));
        }
        Ok(())
    }

    /// Fails unless `key` is absent, null, false or an empty object, list or string.
    fn refuse_non_empty(&self, key: &str, hint: &str) -> Result<(), AdapterError> {
        let empty = match self.get(key) {
            None | Some(Value::Bool(false)) => true,
            Some(Value::Object(map)) => map.is_empty(),
            Some(Value::Array(items)) => items.is_empty(),
            Some(Value::String(text)) => text.is_empty(),
            Some(_) => false,
        };
        match self.get(key) {
            Some(value) if !empty => Err(self.unsupported(key, value, hint)),
            _ => Ok(()),
        }
    }

    fn number(&self, key: &str, default: f32, expected: &str, valid: impl Fn(f32) -> bool) -> Result<f32, AdapterError> {
        let Some(value) = self.get(key) else { return Ok(default) };
        match value.as_f64().map(|v| v as f32) {
            Some(number) if valid(number) => Ok(number),
            _ => Err(self.bad_value(key, value, expected)),
        }
    }

    fn rank(&self) -> Result<usize, AdapterError> {
        let Some(value) = self.get("r") else { return Ok(8) };
        match value.as_u64().and_then(|r| usize::try_from(r).ok()) {
            Some(rank) if (1..=MAX_RANK).contains(&rank) => Ok(rank),
            _ => Err(self.bad_value("r", value, &format!("an integer from 1 to {MAX_RANK}"))),
        }
    }

    /// `target_modules`: a list of module names (the last dotted part counts, as PEFT matches
    /// suffixes), "all-linear", or a plain regex alternation; absent means PEFT's Llama default,
    /// q and v. Returned in [`Target::ALL`] order without repeats.
    fn targets(&self) -> Result<Vec<Target>, AdapterError> {
        const KEY: &str = "target_modules";
        const ONLY_SEVEN: &str = "ferrolm adapts only q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj and down_proj of a Llama block";
        let mut targets = match self.get(KEY) {
            None => vec![Target::Q, Target::V],
            Some(Value::String(text)) if text == "all-linear" => Target::ALL.to_vec(),
            Some(Value::String(text)) => simple_regex_targets(text).ok_or_else(|| {
                self.unsupported(
                    KEY,
                    &Value::from(text.as_str()),
                    "ferrolm reads target_modules as a list of module names, \"all-linear\" or a plain alternation such as \".*\\.(q_proj|v_proj)\"; write the list, e.g. [\"q_proj\", \"v_proj\"]",
                )
            })?,
            Some(Value::Array(items)) => {
                let mut targets = Vec::with_capacity(items.len());
                for item in items {
                    let name = item.as_str().ok_or_else(|| self.bad_value(KEY, item, "a list of module names"))?;
                    let last = name.rsplit('.').next().unwrap_or(name);
                    let target = Target::ALL.into_iter().find(|t| t.hf_name() == last).ok_or_else(|| self.unsupported(KEY, item, ONLY_SEVEN))?;
                    targets.push(target);
                }
                targets
            }
            Some(other) => return Err(self.bad_value(KEY, other, "a list of module names or a string")),
        };
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return Err(self.bad_value(KEY, &Value::Array(Vec::new()), "at least one module name"));
        }
        Ok(targets)
    }
}

/// The targets of a regex that PEFT would fullmatch against `model.layers.3.self_attn.q_proj`, if
/// it is a plain one: `.*` (optionally followed by `\.` or `.`), then one module name or a group
/// `(a|b)` / `(?:a|b)` of them, optionally `$`. Anything else is `None`.
fn simple_regex_targets(pattern: &str) -> Option<Vec<Target>> {
    let rest = pattern.strip_prefix(".*")?;
    let rest = rest.strip_prefix("\\.").or_else(|| rest.strip_prefix('.')).unwrap_or(rest);
    let rest = rest.strip_suffix('$').unwrap_or(rest);
    let names = match rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        Some(group) => group.strip_prefix("?:").unwrap_or(group),
        None => rest,
    };
    names.split('|').map(|name| Target::ALL.into_iter().find(|t| t.hf_name() == name)).collect()
}

/// The pairs in `weights`, checked against `config` and `dims`.
fn read_tensors(config: LoraConfig, path: &Path, weights: &SafeTensors, dims: &ModelDims) -> Result<Adapter, AdapterError> {
    let rank = config.rank;
    // (layer, target) -> names of [A, B].
    let mut found: BTreeMap<(usize, Target), [Option<&str>; 2]> = BTreeMap::new();
    for name in weights.names() {
        let (layer, target, half) = parse_key(path, name, dims)?;
        if !config.targets.contains(&target) {
            return Err(AdapterError::Inconsistent {
                path: path.to_owned(),
                problem: format!("tensor {} adapts {}, which target_modules in {PEFT_CONFIG_FILE} does not list", quote(name), target.hf_name()),
                hint: "the config and the weights do not belong together; save the adapter again".into(),
            });
        }
        found.entry((layer, target)).or_default()[half] = Some(name);
    }

    let mut layers: Vec<[Option<LoraPair>; 7]> = (0..dims.n_layer).map(|_| std::array::from_fn(|_| None)).collect();
    for ((layer, target), halves) in found {
        let [Some(a_name), Some(b_name)] = halves else {
            let (present, missing) = match halves {
                [Some(a), _] => (a.to_owned(), tensor_name(layer, target, HALVES[1])),
                [_, Some(b)] => (b.to_owned(), tensor_name(layer, target, HALVES[0])),
                // Every entry was made with at least one half.
                [None, None] => continue,
            };
            return Err(AdapterError::MissingHalf { path: path.to_owned(), present: quote(&present), missing: quote(&missing) });
        };
        let (n_out, n_in) = dims.shape(target);
        let a = read_matrix(path, weights, a_name, [rank, n_in], 0, dims)?;
        let b_hf = read_matrix(path, weights, b_name, [n_out, rank], 1, dims)?;
        // B (out, R): Hugging Face row order in the file, GGUF order in memory.
        let b = if rope_permuted(target) { permute_b_rows(&b_hf, rank, dims.head_dim, true) } else { b_hf };
        layers[layer][target.index()] = Some(LoraPair { a, b, n_in, n_out });
    }
    if let Some(target) = config.targets.iter().find(|t| layers.iter().all(|pairs| pairs[t.index()].is_none())) {
        return Err(AdapterError::Inconsistent {
            path: path.to_owned(),
            problem: format!("target_modules in {PEFT_CONFIG_FILE} lists {}, but this file holds no {0} weights", target.hf_name()),
            hint: "the config and the weights do not belong together, or the weights are incomplete; save the adapter again".into(),
        });
    }
    Ok(Adapter { config, layers })
}

/// Tensor `name` as f32, after checking that its shape is `expected` ([rows, cols], with the rank
/// on axis `rank_axis`) and that it is finite.
fn read_matrix(
    path: &Path,
    weights: &SafeTensors,
    name: &str,
    expected: [usize; 2],
    rank_axis: usize,
    dims: &ModelDims,
) -> Result<Vec<f32>, AdapterError> {
    let expected = expected.map(|n| n as u64);
    let found = weights.shape(name)?;
    if found != expected {
        let other_axis = 1 - rank_axis;
        let hint = if found == [expected[1], expected[0]] {
            "it is transposed: PEFT stores A as (r, in) and B as (out, r)".to_owned()
        } else if found.len() == 2 && found[other_axis] == expected[other_axis] {
            format!("r in {PEFT_CONFIG_FILE} is {}: the config and the weights do not belong together", expected[rank_axis])
        } else {
            model_hint(dims)
        };
        return Err(AdapterError::Shape { path: path.to_owned(), tensor: quote(name), found: found.to_vec(), expected: expected.to_vec(), hint });
    }
    let values = weights.to_f32_vec(name)?;
    if let Some((index, value)) = first_non_finite(&values) {
        return Err(AdapterError::NonFinite { path: path.to_owned(), tensor: quote(name), index, value });
    }
    Ok(values)
}

/// (layer, target, 0 for A or 1 for B) of a PEFT tensor name, or why it is not one.
fn parse_key(path: &Path, name: &str, dims: &ModelDims) -> Result<(usize, Target, usize), AdapterError> {
    let unknown = || AdapterError::UnknownTensor { path: path.to_owned(), tensor: quote(name), hint: unknown_key_hint(name).to_owned() };
    let rest = name.strip_prefix(KEY_PREFIX).and_then(|r| r.strip_prefix("model.layers.")).ok_or_else(unknown)?;
    let layer_text = rest.split('.').next().unwrap_or("");
    if layer_text.is_empty() || !layer_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(unknown());
    }
    let layer: usize = layer_text.parse().map_err(|_| unknown())?;
    // Compared with the names we would write, so that "07" or a stray suffix is not taken as one.
    let (target, half) =
        Target::ALL.into_iter().flat_map(|t| [(t, 0), (t, 1)]).find(|&(t, half)| tensor_name(layer, t, HALVES[half]) == name).ok_or_else(unknown)?;
    if layer >= dims.n_layer {
        return Err(AdapterError::LayerOutOfRange { path: path.to_owned(), tensor: quote(name), layer, n_layer: dims.n_layer });
    }
    Ok((layer, target, half))
}

/// What a key that is not a LoRA pair of the seven maps is likely to be.
fn unknown_key_hint(name: &str) -> &'static str {
    if name.contains("lora_magnitude_vector") {
        "it is a DoRA magnitude vector; ferrolm reads plain LoRA adapters only"
    } else if name.contains("lora_embedding_") || name.contains("embed_tokens") {
        "adapters of the token embeddings are not supported"
    } else if name.contains("lm_head") {
        "adapters of the output head are not supported"
    } else if name.ends_with(".bias") {
        "LoRA biases are not supported; train with bias=\"none\" and lora_bias=False"
    } else if ["lora_A", "lora_B"].iter().any(|half| name.contains(&format!(".{half}.")) && !name.ends_with(&format!(".{half}.weight"))) {
        "keys look like base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight (no adapter name); save the adapter with PEFT's save_pretrained"
    } else {
        "keys look like base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight and ...mlp.down_proj.lora_B.weight"
    }
}

/// A short description of a JSON value for error messages: `true`, `"all"`, `{"q_proj": 16}`...,
/// cut to about 60 characters. JSON escapes keep it on one line.
fn describe(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 60 {
        let cut = (0..=57).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    text
}
