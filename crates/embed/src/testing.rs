//! A tiny random BERT in a sentence-transformers folder (MiniLM's real tokenizer, D = 8), for
//! tests here and in other crates (the command line's) that must not depend on a download.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors_file::{serialize, Dtype};

/// V, MiniLM's vocabulary (the tokenizer is the real one).
pub const VOCAB: usize = 30522;
/// D, the hidden size (and the embedding's length).
pub const D: usize = 8;
/// H, attention heads.
pub const HEADS: usize = 2;
/// F, the feed-forward size.
pub const F: usize = 16;
/// L, layers.
pub const LAYERS: usize = 2;
/// Positions in the position table.
pub const POSITIONS: usize = 16;
/// max_seq_length of the sentence-transformers config.
pub const MAX_SEQ: usize = 12;
/// LayerNorm's eps.
pub const EPS: f64 = 1e-12;

/// all-MiniLM-L6-v2's tokenizer.json, from the repository's fixtures.
pub fn minilm_tokenizer_json() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf/minilm/tokenizer.json")
}

/// Values in [-scale, scale) from a fixed seed.
pub fn pseudo_random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

/// The tensors of the tiny model, by name, with their shapes.
pub fn tiny_weights() -> BTreeMap<String, (Vec<u64>, Vec<f32>)> {
    let mut w = BTreeMap::new();
    let mut seed = 0;
    let mut add = |name: &str, shape: &[usize], scale: f32, offset: f32| {
        seed += 1;
        let n = shape.iter().product();
        let values = pseudo_random(n, seed, scale).into_iter().map(|v| v + offset).collect();
        w.insert(name.to_string(), (shape.iter().map(|&d| d as u64).collect(), values));
    };
    add("embeddings.word_embeddings.weight", &[VOCAB, D], 1.0, 0.0);
    add("embeddings.position_embeddings.weight", &[POSITIONS, D], 0.5, 0.0);
    add("embeddings.token_type_embeddings.weight", &[2, D], 0.5, 0.0);
    add("embeddings.LayerNorm.weight", &[D], 0.2, 1.0);
    add("embeddings.LayerNorm.bias", &[D], 0.1, 0.0);
    for i in 0..LAYERS {
        let p = format!("encoder.layer.{i}");
        for part in ["query", "key", "value"] {
            add(&format!("{p}.attention.self.{part}.weight"), &[D, D], 0.5, 0.0);
            add(&format!("{p}.attention.self.{part}.bias"), &[D], 0.1, 0.0);
        }
        add(&format!("{p}.attention.output.dense.weight"), &[D, D], 0.5, 0.0);
        add(&format!("{p}.attention.output.dense.bias"), &[D], 0.1, 0.0);
        add(&format!("{p}.attention.output.LayerNorm.weight"), &[D], 0.2, 1.0);
        add(&format!("{p}.attention.output.LayerNorm.bias"), &[D], 0.1, 0.0);
        add(&format!("{p}.intermediate.dense.weight"), &[F, D], 0.5, 0.0);
        add(&format!("{p}.intermediate.dense.bias"), &[F], 0.1, 0.0);
        add(&format!("{p}.output.dense.weight"), &[D, F], 0.5, 0.0);
        add(&format!("{p}.output.dense.bias"), &[D], 0.1, 0.0);
        add(&format!("{p}.output.LayerNorm.weight"), &[D], 0.2, 1.0);
        add(&format!("{p}.output.LayerNorm.bias"), &[D], 0.1, 0.0);
    }
    w
}

/// The tiny model's config.json.
pub fn config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": VOCAB, "hidden_size": D,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": F,
        "max_position_embeddings": POSITIONS, "type_vocab_size": 2, "layer_norm_eps": EPS, "hidden_act": "gelu",
        "position_embedding_type": "absolute", "pad_token_id": 0
    })
}

/// Writes `weights` as a safetensors file of F32 tensors.
///
/// # Panics
/// If the file cannot be written (this is test support).
pub fn write_safetensors(path: &Path, weights: &BTreeMap<String, (Vec<u64>, Vec<f32>)>) {
    let bytes: Vec<(String, Vec<u64>, Vec<u8>)> =
        weights.iter().map(|(name, (shape, v))| (name.clone(), shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let tensors: Vec<_> = bytes.iter().map(|(n, s, b)| (n.as_str(), Dtype::F32, s.as_slice(), b.as_slice())).collect();
    std::fs::write(path, serialize(&tensors, &[("format", "pt")]).unwrap()).unwrap();
}

/// Writes the tiny model's folder (mean pooling, Normalize, max_seq_length 12) into `dir`.
///
/// # Panics
/// If a file cannot be written (this is test support).
pub fn write_tiny_model(dir: &Path) {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "modules.json",
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    );
    write("1_Pooling/config.json", r#"{"word_embedding_dimension": 8, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}"#);
    write("sentence_bert_config.json", &format!(r#"{{"max_seq_length": {MAX_SEQ}, "do_lower_case": false}}"#));
    write("config.json", &config_json().to_string());
    std::fs::copy(minilm_tokenizer_json(), dir.join("tokenizer.json")).unwrap();
    write_safetensors(&dir.join("model.safetensors"), &tiny_weights());
}
