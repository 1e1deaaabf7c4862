//! Hostile input for both readers: random bytes, random byte edits of valid files, and random
//! values under the config's keys. Each must load or fail, never panic; every error of the adapter
//! layer itself is one line.

use std::sync::OnceLock;

use gguf::{GgmlType, GgufFile, GgufWriter, Value as GgufValue};
use proptest::prelude::*;
use serde_json::{json, Value as JsonValue};
use train::adapter::{load_gguf_bytes, load_peft_bytes, save_gguf, save_peft, AdapterError, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};
use train::Target;

use crate::{config, random_adapter, tiny_dims, TempDir};

/// A valid tiny adapter in both formats: (config JSON, safetensors, GGUF).
fn valid_files() -> &'static (Vec<u8>, Vec<u8>, Vec<u8>) {
    static FILES: OnceLock<(Vec<u8>, Vec<u8>, Vec<u8>)> = OnceLock::new();
    FILES.get_or_init(|| {
        let dims = tiny_dims();
        let adapter = random_adapter(&dims, config(2, 4.0, false, &[Target::Q, Target::K, Target::Down]), 17);
        let dir = TempDir::new("fuzz-valid");
        save_peft(&adapter, &dims, dir.path(), "tiny").unwrap();
        save_gguf(&adapter, &dims, dir.join("a.gguf")).unwrap();
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        (read(PEFT_CONFIG_FILE), read(PEFT_WEIGHTS_FILE), read("a.gguf"))
    })
}

/// Errors raised by the adapter readers themselves (not the containers' parsers) are one line.
fn check(result: Result<train::Adapter, AdapterError>) -> Result<(), TestCaseError> {
    match result {
        Ok(adapter) => prop_assert_eq!(adapter.layers.len(), 3),
        Err(AdapterError::Safetensors(_) | AdapterError::Gguf(_)) => {}
        Err(error) => {
            let text = error.to_string();
            prop_assert!(!text.contains('\n'), "an error message spans lines: {}", text);
        }
    }
    Ok(())
}

/// `bytes` with each `(position, byte)` edit applied at `position % len`.
fn edited(bytes: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let len = out.len();
    for &(position, byte) in edits {
        out[position % len] = byte;
    }
    out
}

/// JSON values of every kind, small and odd.
fn json_value() -> impl Strategy<Value = JsonValue> {
    let leaf = prop_oneof![
        Just(JsonValue::Null),
        any::<bool>().prop_map(JsonValue::from),
        any::<i64>().prop_map(JsonValue::from),
        any::<f64>().prop_map(|v| serde_json::Number::from_f64(v).map_or(JsonValue::Null, JsonValue::Number)),
        prop::sample::select(vec!["LORA", "CAUSAL_LM", "none", "all", "all-linear", "q_proj", ".*(q_proj)", "\n", ""]).prop_map(JsonValue::from),
        ".{0,12}".prop_map(JsonValue::from),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(JsonValue::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|entries| JsonValue::Object(entries.into_iter().collect())),
        ]
    })
}

const CONFIG_KEYS: [&str; 16] = [
    "peft_type",
    "task_type",
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "bias",
    "use_rslora",
    "fan_in_fan_out",
    "use_dora",
    "rank_pattern",
    "alpha_pattern",
    "modules_to_save",
    "init_lora_weights",
    "layer_replication",
    "lora_bias",
];

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), config_bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let dims = tiny_dims();
        check(load_gguf_bytes(bytes.clone(), &dims))?;
        check(load_peft_bytes(&config_bytes, bytes.clone(), &dims))?;
        check(load_peft_bytes(&valid_files().0, bytes, &dims))?;
    }

    #[test]
    fn random_bytes_after_a_valid_magic_never_panic(tail in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = b"GGUF\x03\0\0\0".to_vec();
        bytes.extend(tail);
        check(load_gguf_bytes(bytes, &tiny_dims()))?;
    }

    #[test]
    fn edits_of_a_valid_gguf_never_panic(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8), header_only in any::<bool>()) {
        let gguf = &valid_files().2;
        // Most edits of the data only change values; aim half of them at the header and metadata.
        let edits: Vec<(usize, u8)> = edits.into_iter().map(|(p, b)| (if header_only { p % 400 } else { p }, b)).collect();
        check(load_gguf_bytes(edited(gguf, &edits), &tiny_dims()))?;
    }

    #[test]
    fn structured_edits_of_a_valid_gguf_never_panic(
        tensor in any::<prop::sample::Index>(),
        dims in prop::collection::vec(0u64..20, 1..4),
        float_type in prop::sample::select(vec![GgmlType::F32, GgmlType::F16, GgmlType::BF16]),
        key in prop::sample::select(vec!["general.type", "general.architecture", "adapter.type", "adapter.lora.alpha"]),
        value in prop_oneof![Just(GgufValue::from("adapter")), Just(GgufValue::from("lora")), Just(GgufValue::from("llama")), any::<f32>().prop_map(GgufValue::F32), any::<i64>().prop_map(GgufValue::I64)],
    ) {
        // One tensor gets other dims and another float type (its data sized to fit), one key
        // another value: the shape and metadata checks see what a careless converter could write.
        let file = GgufFile::from_bytes(valid_files().2.clone()).unwrap();
        let changed = tensor.index(file.tensors.len());
        let mut writer = GgufWriter::new();
        for (k, v) in &file.metadata {
            writer.add_kv(k, if k == key { value.clone() } else { v.clone() });
        }
        for (i, info) in file.tensors.iter().enumerate() {
            if i == changed {
                let n: u64 = dims.iter().product();
                writer.add_tensor(&info.name, &dims, float_type, vec![0; n as usize * float_type.type_size()]);
            } else {
                writer.add_tensor(&info.name, &info.dims, info.ggml_type, file.tensor_data(info).to_vec());
            }
        }
        check(load_gguf_bytes(writer.to_bytes().unwrap(), &tiny_dims()))?;
    }

    #[test]
    fn edits_of_a_valid_safetensors_never_panic(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8), header_only in any::<bool>()) {
        let (config, weights, _) = valid_files();
        let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize + 8;
        let edits: Vec<(usize, u8)> = edits.into_iter().map(|(p, b)| (if header_only { p % header_len } else { p }, b)).collect();
        check(load_peft_bytes(config, edited(weights, &edits), &tiny_dims()))?;
    }

    #[test]
    fn edits_of_a_valid_config_never_panic(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let (config, weights, _) = valid_files();
        check(load_peft_bytes(&edited(config, &edits), weights.clone(), &tiny_dims()))?;
    }

    #[test]
    fn any_value_under_a_config_key_loads_or_is_refused(changes in prop::collection::vec((prop::sample::select(CONFIG_KEYS.to_vec()), json_value()), 1..4)) {
        let (config, weights, _) = valid_files();
        let mut json: JsonValue = serde_json::from_slice(config).unwrap();
        for (key, value) in changes {
            json[key] = value;
        }
        let text = serde_json::to_vec(&json).unwrap();
        check(load_peft_bytes(&text, weights.clone(), &tiny_dims()))?;
    }
}

#[test]
fn the_valid_files_load() {
    let (config, weights, gguf) = valid_files();
    let dims = tiny_dims();
    let from_peft = load_peft_bytes(config, weights.clone(), &dims).unwrap();
    assert_eq!(load_gguf_bytes(gguf.clone(), &dims).unwrap(), from_peft);
    assert_eq!(serde_json::from_slice::<JsonValue>(config).unwrap()["target_modules"], json!(["q_proj", "k_proj", "down_proj"]));
}
