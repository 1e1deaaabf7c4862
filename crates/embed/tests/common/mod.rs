//! A tiny random BERT in a sentence-transformers folder (MiniLM's real tokenizer, D = 8), for the
//! tests that need no download, and a plain f64 BERT to check the encoder against.

#![allow(dead_code)] // each test file uses part of this

use std::collections::BTreeMap;

pub use embed::testing::*;

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
