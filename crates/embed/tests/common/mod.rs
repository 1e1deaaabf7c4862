//! A tiny random BERT in a sentence-transformers folder (MiniLM's real tokenizer, D = 8), for the
//! tests that need no download, and a plain f64 BERT to check the encoder against.

#![allow(dead_code)] // each test file uses part of this

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors_file::{serialize, Dtype};

pub const VOCAB: usize = 30522;
pub const D: usize = 8;
pub const HEADS: usize = 2;
pub const F: usize = 16;
pub const LAYERS: usize = 2;
pub const POSITIONS: usize = 16;
pub const MAX_SEQ: usize = 12;
pub const EPS: f64 = 1e-12;

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

pub fn config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": VOCAB, "hidden_size": D,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": F,
        "max_position_embeddings": POSITIONS, "type_vocab_size": 2, "layer_norm_eps": EPS, "hidden_act": "gelu",
        "position_embedding_type": "absolute", "pad_token_id": 0
    })
}

pub fn write_safetensors(path: &Path, weights: &BTreeMap<String, (Vec<u64>, Vec<f32>)>) {
    let bytes: Vec<(String, Vec<u64>, Vec<u8>)> =
        weights.iter().map(|(name, (shape, v))| (name.clone(), shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let tensors: Vec<_> = bytes.iter().map(|(n, s, b)| (n.as_str(), Dtype::F32, s.as_slice(), b.as_slice())).collect();
    std::fs::write(path, serialize(&tensors, &[("format", "pt")]).unwrap()).unwrap();
}

/// Writes the tiny model's folder (mean pooling, Normalize, max_seq_length 12) into `dir`.
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

/// The tiny model in a fresh temporary folder.
pub fn tiny_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path());
    dir
}

/// BERT in f64, one sequence, straight from the definition (Hugging Face's `BertModel`): ids ->
/// last hidden states (n, D).
pub fn reference_bert(w: &BTreeMap<String, (Vec<u64>, Vec<f32>)>, ids: &[u32]) -> Vec<Vec<f64>> {
    let get = |name: &str| -> Vec<f64> { w[name].1.iter().map(|&v| v as f64).collect() };
    let n = ids.len();
    let dh = D / HEADS;
    let layer_norm = |x: &[f64], name: &str| -> Vec<f64> {
        let (g, b) = (get(&format!("{name}.weight")), get(&format!("{name}.bias")));
        let mean = x.iter().sum::<f64>() / D as f64;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / D as f64; // biased
        x.iter().enumerate().map(|(i, v)| (v - mean) / (var + EPS).sqrt() * g[i] + b[i]).collect()
    };
    let linear = |x: &[f64], name: &str, out: usize| -> Vec<f64> {
        let (wt, b) = (get(&format!("{name}.weight")), get(&format!("{name}.bias")));
        (0..out).map(|o| b[o] + x.iter().enumerate().map(|(k, v)| v * wt[o * x.len() + k]).sum::<f64>()).collect()
    };
    let erf = |z: f64| -> f64 {
        // A&S 7.1.26 is too coarse here; integrate exp(-t^2) by Simpson's rule instead (f64-exact enough).
        let steps = 2000;
        let h = z / steps as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(z);
        for i in 1..steps {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        2.0 / std::f64::consts::PI.sqrt() * s * h / 3.0
    };
    let (word, pos, types) =
        (get("embeddings.word_embeddings.weight"), get("embeddings.position_embeddings.weight"), get("embeddings.token_type_embeddings.weight"));
    let mut x: Vec<Vec<f64>> = (0..n)
        .map(|t| {
            let e: Vec<f64> = (0..D).map(|i| word[ids[t] as usize * D + i] + types[i] + pos[t * D + i]).collect();
            layer_norm(&e, "embeddings.LayerNorm")
        })
        .collect();
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        let q: Vec<Vec<f64>> = x.iter().map(|r| linear(r, &format!("{p}.attention.self.query"), D)).collect();
        let k: Vec<Vec<f64>> = x.iter().map(|r| linear(r, &format!("{p}.attention.self.key"), D)).collect();
        let v: Vec<Vec<f64>> = x.iter().map(|r| linear(r, &format!("{p}.attention.self.value"), D)).collect();
        let mut ctx = vec![vec![0f64; D]; n];
        for t in 0..n {
            for h in 0..HEADS {
                let r = h * dh..(h + 1) * dh;
                let s: Vec<f64> = (0..n).map(|j| r.clone().map(|i| q[t][i] * k[j][i]).sum::<f64>() / (dh as f64).sqrt()).collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in r {
                    ctx[t][i] = (0..n).map(|j| e[j] / z * v[j][i]).sum();
                }
            }
        }
        for t in 0..n {
            let o = linear(&ctx[t], &format!("{p}.attention.output.dense"), D);
            let a: Vec<f64> = (0..D).map(|i| x[t][i] + o[i]).collect();
            let a = layer_norm(&a, &format!("{p}.attention.output.LayerNorm"));
            let hmid: Vec<f64> =
                linear(&a, &format!("{p}.intermediate.dense"), F).into_iter().map(|u| 0.5 * u * (1.0 + erf(u / 2f64.sqrt()))).collect();
            let f = linear(&hmid, &format!("{p}.output.dense"), D);
            let y: Vec<f64> = (0..D).map(|i| a[i] + f[i]).collect();
            x[t] = layer_norm(&y, &format!("{p}.output.LayerNorm"));
        }
    }
    x
}
