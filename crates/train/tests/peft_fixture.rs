//! A PEFT-made adapter (tests/fixtures/lora, made by tools/make_lora_fixture.py with PyTorch and
//! PEFT on the default model dequantized to f32) read by ferrolm gives PEFT's logits: in the f32
//! training forward, which computes what PyTorch computes, to a few thousandths; in inference
//! (activations rounded to int8) the adapter's effect agrees loosely.

use model::{Llama, Logits};
use serde_json::Value;
use std::path::PathBuf;
use train::adapter::{load_peft, ModelDims};
use train::{Activations, Batch, LoraParams, TrainModel};

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/lora").join(path)
}

#[test]
fn peft_adapter_gives_pefts_logits() {
    let Some(path) = model::paths::model_for_tests() else { return };
    let want: Value = serde_json::from_str(&std::fs::read_to_string(fixture("peft_logits.json")).unwrap()).unwrap();
    let mut llama = Llama::open(&path, 2).unwrap();
    let adapter = load_peft(fixture("peft_adapter"), &ModelDims::from_config(&llama.config)).unwrap();
    assert_eq!((adapter.config.rank, adapter.config.alpha), (4, 8.0));
    let tokens: Vec<u32> = want["token_ids"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    let positions: Vec<usize> = want["positions"].as_array().unwrap().iter().map(|p| p["position"].as_u64().unwrap() as usize).collect();
    let union = |i: usize, key: &str| -> Vec<(usize, f64)> {
        let u = &want["positions"][i]["union"];
        u["ids"]
            .as_array()
            .unwrap()
            .iter()
            .zip(u[key].as_array().unwrap())
            .map(|(id, v)| (id.as_u64().unwrap() as usize, v.as_f64().unwrap()))
            .collect()
    };
    // The training forward, f32 like PyTorch.
    let model = TrainModel::<f32>::from_llama(&llama, 2).unwrap();
    let batch = Batch { tokens: tokens.clone(), labels: vec![-100; tokens.len()], seqs: std::iter::once(0..tokens.len()).collect() };
    let v = model.config.n_vocab;
    let mut worst = [0f64; 2];
    for (k, (params, key)) in [
        (LoraParams::<f32>::from_adapter(&adapter, &model.config).unwrap(), "with_adapter"),
        (LoraParams::<f32>::init(&train::LoraConfig { targets: vec![], ..Default::default() }, &model.config, 0), "without_adapter"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut acts = Activations::default();
        model.forward(&params, &batch, &mut acts, None);
        let logits = model.logits(&acts, &positions);
        for i in 0..positions.len() {
            for (id, value) in union(i, key) {
                worst[k] = worst[k].max((logits[i * v + id] as f64 - value).abs());
            }
        }
    }
    eprintln!("training forward vs PyTorch: with the adapter {:.2e}, without {:.2e}", worst[0], worst[1]);
    assert!(worst[0] < 1e-3 && worst[1] < 1e-3, "f32 forward vs PyTorch: {worst:?}");
    // Inference with the adapter unmerged: the adapter's effect on the top logits, ours against PEFT's.
    let logits_of = |llama: &Llama| {
        let mut cache = llama.new_cache(tokens.len()).unwrap();
        let mut scratch = llama.new_scratch(tokens.len(), tokens.len()).unwrap();
        llama.forward(&tokens, &mut cache, &mut scratch, Logits::All).unwrap().to_vec()
    };
    let base = logits_of(&llama);
    llama.set_lora(Some(adapter.to_lora_set(1.0))).unwrap();
    let adapted = logits_of(&llama);
    let (mut err, mut effect) = (0f64, 0f64);
    for (i, &p) in positions.iter().enumerate() {
        for ((id, with), (_, without)) in union(i, "with_adapter").into_iter().zip(union(i, "without_adapter")) {
            let ours = (adapted[p * v + id] - base[p * v + id]) as f64;
            err = err.max((ours - (with - without)).abs());
            effect = effect.max((with - without).abs());
        }
    }
    eprintln!("inference: the adapter's effect {effect:.3}, ours apart from PEFT's by {err:.3}");
    assert!(err < 0.25 * effect, "the adapter's effect in inference ({err}) vs PEFT's ({effect})");
}

/// An adapter ferrolm wrote (`finetune --rank 1 --alpha 4 --targets q,k,v --lr 1e-2 --max-steps 3`
/// on examples/numbers), loaded by PEFT (`tools/make_lora_fixture.py --check-ours`): PEFT's logits
/// with it are the f32 training forward's, so the files mean the same thing on both sides (q/k row
/// order included).
#[test]
fn peft_reads_our_adapter_as_we_do() {
    let Some(path) = model::paths::model_for_tests() else { return };
    let want: Value = serde_json::from_str(&std::fs::read_to_string(fixture("ours_peft_logits.json")).unwrap()).unwrap();
    assert_eq!(want["missing_tensors"].as_array().map(Vec::len), Some(0), "PEFT found every tensor");
    assert_eq!(want["unused_tensors"].as_array().map(Vec::len), Some(0), "PEFT used every tensor");
    let llama = Llama::open(&path, 2).unwrap();
    let adapter = load_peft(fixture("ours_adapter"), &ModelDims::from_config(&llama.config)).unwrap();
    let tokens: Vec<u32> = want["token_ids"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    let model = TrainModel::<f32>::from_llama(&llama, 2).unwrap();
    let params = LoraParams::<f32>::from_adapter(&adapter, &model.config).unwrap();
    let batch = Batch { tokens: tokens.clone(), labels: vec![-100; tokens.len()], seqs: std::iter::once(0..tokens.len()).collect() };
    let mut acts = Activations::default();
    model.forward(&params, &batch, &mut acts, None);
    let (mut worst, mut effect) = (0f64, 0f64);
    for p in want["positions"].as_array().unwrap() {
        let logits = model.logits(&acts, &[p["position"].as_u64().unwrap() as usize]);
        let u = &p["union"];
        let ids = u["ids"].as_array().unwrap();
        for ((id, with), without) in ids.iter().zip(u["with_adapter"].as_array().unwrap()).zip(u["without_adapter"].as_array().unwrap()) {
            let (with, without) = (with.as_f64().unwrap(), without.as_f64().unwrap());
            worst = worst.max((logits[id.as_u64().unwrap() as usize] as f64 - with).abs());
            effect = effect.max((with - without).abs());
        }
    }
    eprintln!("our adapter in PEFT vs the f32 training forward: {worst:.2e} (the adapter moves these logits by up to {effect:.3})");
    assert!(worst < 1e-3 && effect > 20.0 * worst, "apart by {worst}, adapter effect {effect}");
}
