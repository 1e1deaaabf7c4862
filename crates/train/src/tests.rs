//! Gradient checks: every backward function, and the whole model on a tiny random Llama, against
//! central finite differences in f64.

use crate::lora::{LoraConfig, Target};
use crate::model::{Activations, Batch, LoraParams, TrainModel};
use crate::ops::{self, AttnShape};
use crate::rng::Rng;
use gguf::GgufFile;
use kernels::ThreadPool;
use model::testing::{tiny_llama_gguf, TinySpec};
use model::{Llama, Logits};

fn random(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * scale).collect()
}

/// Checks `analytic` against central differences of `loss` around `x` at `indices` (all when
/// None): |a - n| <= 1e-6 max(1, |a|, |n|).
fn check(name: &str, x: &[f64], analytic: &[f64], indices: Option<&[usize]>, loss: &dyn Fn(&[f64]) -> f64) {
    let all: Vec<usize> = (0..x.len()).collect();
    let eps = 1e-6;
    for &i in indices.unwrap_or(&all) {
        let mut xp = x.to_vec();
        xp[i] += eps;
        let lp = loss(&xp);
        xp[i] -= 2.0 * eps;
        let lm = loss(&xp);
        let numeric = (lp - lm) / (2.0 * eps);
        let a = analytic[i];
        let tol = 1e-6 * 1f64.max(a.abs()).max(numeric.abs());
        assert!((a - numeric).abs() <= tol, "{name}[{i}]: analytic {a:e}, finite differences {numeric:e}");
    }
}

/// sum(dy * y): a scalar whose gradient with respect to y is dy.
fn weighted(dy: &[f64], y: &[f64]) -> f64 {
    dy.iter().zip(y).map(|(a, b)| a * b).sum()
}

#[test]
fn rms_norm_backward_matches_finite_differences() {
    let mut rng = Rng::new(1);
    let (n, d) = (3, 8);
    let x = random(&mut rng, n * d, 1.0);
    let w: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 * 0.1).collect();
    let dy = random(&mut rng, n * d, 1.0);
    let f = |x: &[f64]| {
        let (mut y, mut r) = (vec![0.0; n * d], vec![0.0; n]);
        ops::rms_norm_forward(x, &w, 1e-5, &mut y, &mut r);
        weighted(&dy, &y)
    };
    let (mut y, mut r) = (vec![0.0; n * d], vec![0.0; n]);
    ops::rms_norm_forward(&x, &w, 1e-5, &mut y, &mut r);
    let mut dx = vec![0.0; n * d];
    ops::rms_norm_backward_add(&dy, &x, &w, &r, &mut dx);
    check("rms_norm dx", &x, &dx, None, &f);
}

#[test]
fn rope_backward_matches_finite_differences() {
    let mut rng = Rng::new(2);
    let (n, heads, dh) = (3, 2, 8);
    let mut cos_sin = vec![(0.0, 0.0); n * dh / 2];
    for pos in 0..n {
        kernels::ops::rope_angles(pos + 5, 10000.0, dh, &mut cos_sin[pos * dh / 2..(pos + 1) * dh / 2]);
    }
    let x = random(&mut rng, n * heads * dh, 1.0);
    let dy = random(&mut rng, n * heads * dh, 1.0);
    let f = |x: &[f64]| {
        let mut y = x.to_vec();
        ops::rope_forward(&mut y, dh, &cos_sin);
        weighted(&dy, &y)
    };
    let mut dx = dy.clone();
    ops::rope_backward(&mut dx, dh, &cos_sin);
    check("rope dx", &x, &dx, None, &f);
}

#[test]
fn swiglu_backward_matches_finite_differences() {
    let mut rng = Rng::new(3);
    let n = 12;
    let gu = random(&mut rng, 2 * n, 3.0);
    let da = random(&mut rng, n, 1.0);
    let f = |gu: &[f64]| {
        let mut a = vec![0.0; n];
        ops::swiglu_forward(&gu[..n], &gu[n..], &mut a);
        weighted(&da, &a)
    };
    let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
    ops::swiglu_backward(&da, &gu[..n], &gu[n..], &mut dg, &mut du);
    let analytic: Vec<f64> = dg.into_iter().chain(du).collect();
    check("swiglu d(g, u)", &gu, &analytic, None, &f);
}

#[test]
fn attention_backward_matches_finite_differences() {
    let mut rng = Rng::new(4);
    let pool = ThreadPool::new(2);
    let shape = AttnShape { n_head: 4, n_head_kv: 2, head_dim: 4 };
    let seqs = vec![0..3, 3..8];
    let n = 8;
    let (qw, kw) = (16, 8);
    let qkv = random(&mut rng, n * (qw + 2 * kw), 1.0);
    let dout = random(&mut rng, n * qw, 1.0);
    let run = |qkv: &[f64]| {
        let (q, rest) = qkv.split_at(n * qw);
        let (k, v) = rest.split_at(n * kw);
        let mut probs = vec![0.0; shape.probs_len(&seqs)];
        let mut out = vec![0.0; n * qw];
        ops::attention_forward(&pool, &shape, &seqs, q, k, v, &mut probs, &mut out);
        (probs, out)
    };
    let f = |qkv: &[f64]| weighted(&dout, &run(qkv).1);
    let (probs, out) = run(&qkv);
    // A sequence's rows never see another sequence: the first row attends to itself only.
    assert_eq!(&out[3 * qw..3 * qw + 4], &qkv[n * qw + n * kw + 3 * kw..][..4]);
    let (q, rest) = qkv.split_at(n * qw);
    let (k, v) = rest.split_at(n * kw);
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * qw], vec![0.0; n * kw], vec![0.0; n * kw]);
    ops::attention_backward(&pool, &shape, &seqs, q, k, v, &probs, &dout, &mut dq, &mut dk, &mut dv);
    let analytic: Vec<f64> = dq.into_iter().chain(dk).chain(dv).collect();
    check("attention d(q, k, v)", &qkv, &analytic, None, &f);
}

#[test]
fn lora_backward_matches_finite_differences() {
    let mut rng = Rng::new(5);
    let pool = ThreadPool::new(2);
    let (n, n_in, n_out, r) = (5, 6, 7, 3);
    let scaling = 2.0;
    for with_mask in [false, true] {
        // Parameters: x (N, in), A (r, in), B (out, r), one vector.
        let p = random(&mut rng, n * n_in + r * n_in + n_out * r, 1.0);
        let mask: Vec<f64> = (0..n * n_in).map(|_| if rng.uniform() < 0.3 { 0.0 } else { 1.0 / 0.7 }).collect();
        let m = with_mask.then_some(&mask[..]);
        let dy = random(&mut rng, n * n_out, 1.0);
        let split = |p: &[f64]| -> (Vec<f64>, Vec<f64>, Vec<f64>) {
            (p[..n * n_in].to_vec(), p[n * n_in..n * n_in + r * n_in].to_vec(), p[n * n_in + r * n_in..].to_vec())
        };
        let f = |p: &[f64]| {
            let (x, a, b) = split(p);
            let (mut u, mut y) = (vec![0.0; n * r], vec![0.0; n * n_out]);
            ops::lora_forward(&pool, &x, m, &a, &b, n_in, scaling, &mut u, &mut y);
            weighted(&dy, &y)
        };
        let (x, a, b) = split(&p);
        let (mut u, mut y) = (vec![0.0; n * r], vec![0.0; n * n_out]);
        ops::lora_forward(&pool, &x, m, &a, &b, n_in, scaling, &mut u, &mut y);
        let (mut dx, mut da, mut db) = (vec![0.0; n * n_in], vec![0.0; r * n_in], vec![0.0; n_out * r]);
        ops::lora_backward_add(&pool, &dy, &x, m, &a, &b, &u, n_in, scaling, &mut da, &mut db, &mut dx);
        let analytic: Vec<f64> = dx.into_iter().chain(da).chain(db).collect();
        check(if with_mask { "lora with dropout" } else { "lora" }, &p, &analytic, None, &f);
    }
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    use crate::real::Real;
    let mut rng = Rng::new(6);
    let logits = random(&mut rng, 9, 4.0);
    let f = |x: &[f64]| f64::cross_entropy(x, 4, 0.5, None) * 0.5;
    let mut g = vec![0.0; 9];
    let _ = f64::cross_entropy(&logits, 4, 0.5, Some(&mut g));
    check("cross-entropy", &logits, &g, None, &f);
    // The f32 path (the kernels' fused log-sum-exp) agrees with the f64 one.
    let l32: Vec<f32> = logits.iter().map(|&x| x as f32).collect();
    let mut g32 = vec![0.0f32; 9];
    let loss32 = f32::cross_entropy(&l32, 4, 0.5, Some(&mut g32));
    assert!((loss32 - f64::cross_entropy(&logits, 4, 0.5, None)).abs() < 1e-5);
    for (a, b) in g32.iter().zip(&g) {
        assert!((*a as f64 - b).abs() < 1e-6);
    }
}

fn tiny_llama() -> Llama {
    let spec = TinySpec { n_layer: 2, ..TinySpec::default() };
    Llama::from_file(GgufFile::from_bytes(tiny_llama_gguf(&spec)).unwrap(), 1).unwrap()
}

/// Two sequences (lengths 7 and 5) whose labels score some rows and skip others.
fn tiny_batch(vocab: usize) -> Batch {
    let mut rng = Rng::new(9);
    let tokens: Vec<u32> = (0..12).map(|_| 3 + (rng.next_u64() % (vocab as u64 - 3)) as u32).collect();
    let mut labels: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    for i in [0, 1, 2, 7, 8] {
        labels[i] = -100;
    }
    Batch { tokens, labels, seqs: vec![0..7, 7..12] }
}

#[test]
fn whole_model_gradient_matches_finite_differences() {
    let llama = tiny_llama();
    let model = TrainModel::<f64>::from_llama(&llama, 2).unwrap();
    let config = LoraConfig { rank: 2, alpha: 4.0, ..LoraConfig::default() };
    let mut params = LoraParams::<f64>::init(&config, &model.config, 7);
    // B nonzero, so that A's gradients are nonzero too.
    let mut rng = Rng::new(8);
    for slot in params.slots.iter().flatten().flatten() {
        for v in &mut params.values[slot.b.clone()] {
            *v = (rng.uniform() * 2.0 - 1.0) * 0.1;
        }
    }
    let batch = tiny_batch(model.config.n_vocab);
    let count = batch.scored().len();
    assert_eq!(count, 7);
    let mean_loss = |values: &[f64]| {
        let p = LoraParams { values: values.to_vec(), ..params.clone() };
        let mut acts = Activations::default();
        model.forward(&p, &batch, &mut acts, None);
        model.loss_backward(&p, &batch, &acts, 1.0, None).nll / count as f64
    };
    let mut acts = Activations::default();
    model.forward(&params, &batch, &mut acts, None);
    let mut grads = vec![0.0; params.values.len()];
    let loss = model.loss_backward(&params, &batch, &acts, 1.0 / count as f64, Some(&mut grads));
    assert!((loss.nll / count as f64 - mean_loss(&params.values)).abs() < 1e-12);
    // Every A and B of every target in both layers, a few entries each.
    let mut indices = Vec::new();
    for slot in params.slots.iter().flatten().flatten() {
        for range in [&slot.a, &slot.b] {
            for j in 0..3 {
                indices.push(range.start + (j * 7919) % range.len());
            }
        }
    }
    assert_eq!(indices.len(), 2 * 7 * 2 * 3);
    assert!(indices.iter().all(|&i| grads[i] != 0.0), "every checked gradient is nonzero");
    check("model", &params.values, &grads, Some(&indices), &mean_loss);
}

/// The summed NLL of the batch's scored rows in inference (each sequence alone, int8 activations).
fn inference_nll(llama: &Llama, batch: &Batch) -> f64 {
    let mut total = 0.0;
    for seq in &batch.seqs {
        let tokens = &batch.tokens[seq.clone()];
        let mut cache = llama.new_cache(tokens.len()).unwrap();
        let mut scratch = llama.new_scratch(tokens.len(), tokens.len()).unwrap();
        let logits = llama.forward(tokens, &mut cache, &mut scratch, Logits::All).unwrap().to_vec();
        let v = llama.config.n_vocab;
        for t in 0..tokens.len() - 1 {
            let label = batch.labels[seq.start + t + 1];
            if label >= 0 {
                total += kernels::loss::cross_entropy_row(&logits[t * v..(t + 1) * v], label as u32, 1.0, None);
            }
        }
    }
    total
}

#[test]
fn step_zero_is_the_base_model() {
    // B = 0: the adapter changes nothing, whatever A holds; and the training forward is the same
    // model as inference (which rounds activations to int8, hence the tolerance).
    let llama = tiny_llama();
    let model = TrainModel::<f32>::from_llama(&llama, 2).unwrap();
    let batch = tiny_batch(model.config.n_vocab);
    let count = batch.scored().len();
    let none = LoraConfig { targets: vec![], ..LoraConfig::default() };
    let base = LoraParams::<f32>::init(&none, &model.config, 1);
    let adapted = LoraParams::<f32>::init(&LoraConfig::default(), &model.config, 1);
    assert!(adapted.values.iter().any(|&v| v != 0.0));
    let loss_of = |p: &LoraParams<f32>| {
        let mut acts = Activations::default();
        model.forward(p, &batch, &mut acts, None);
        model.loss_backward(p, &batch, &acts, 1.0, None).nll
    };
    assert_eq!(loss_of(&base).to_bits(), loss_of(&adapted).to_bits());
    // Inference's loss on the same rows.
    let inference = inference_nll(&llama, &batch);
    let ours = loss_of(&base);
    eprintln!("training forward {ours} vs inference {inference}");
    assert!((ours - inference).abs() / inference < 0.01, "training forward {} vs inference {} over {count} rows", ours, inference);
    let _ = Target::ALL;
}

#[test]
fn inference_applies_the_adapter_as_training_does() {
    // A trained-looking adapter (B nonzero) changes the loss, by the same amount in the training
    // forward and in inference with the adapter unmerged (which rounds activations to int8).
    let mut llama = tiny_llama();
    let model = TrainModel::<f32>::from_llama(&llama, 2).unwrap();
    let batch = tiny_batch(model.config.n_vocab);
    let mut params = LoraParams::<f32>::init(&LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() }, &model.config, 3);
    let mut rng = Rng::new(11);
    for slot in params.slots.iter().flatten().flatten() {
        for v in &mut params.values[slot.b.clone()] {
            *v = ((rng.uniform() * 2.0 - 1.0) * 0.3) as f32;
        }
    }
    let mut acts = Activations::default();
    model.forward(&params, &batch, &mut acts, None);
    let trained = model.loss_backward(&params, &batch, &acts, 1.0, None).nll;
    let inference_loss = |llama: &Llama| inference_nll(llama, &batch);
    let base = inference_loss(&llama);
    llama.set_lora(Some(params.to_adapter().to_lora_set(1.0))).unwrap();
    let adapted = inference_loss(&llama);
    eprintln!("base {base}, adapted: inference {adapted}, training forward {trained}");
    assert!((adapted - base).abs() / base > 0.02, "the adapter changes the loss: {base} -> {adapted}");
    assert!((adapted - trained).abs() / trained < 0.01, "inference {adapted} vs training forward {trained}");
    // An adapter for other sizes is refused and changes nothing.
    let mut wrong = params.to_adapter().to_lora_set(1.0);
    wrong.layers.pop();
    assert!(llama.set_lora(Some(wrong)).is_err());
    assert_eq!(inference_loss(&llama).to_bits(), adapted.to_bits());
}

#[test]
fn merge_then_unmerge_gives_back_the_weights() {
    let mut rng = Rng::new(12);
    let (n_out, n_in, r) = (5, 7, 2);
    let pair = crate::lora::LoraPair {
        a: (0..r * n_in).map(|_| rng.uniform() as f32 - 0.5).collect(),
        b: (0..n_out * r).map(|_| rng.uniform() as f32 - 0.5).collect(),
        n_in,
        n_out,
    };
    let w0: Vec<f32> = (0..n_out * n_in).map(|_| rng.uniform() as f32).collect();
    let mut w = w0.clone();
    crate::lora::merge_into(&mut w, &pair, 2.0, 1.0);
    // W + 2 B A, entry (1, 3), by hand.
    let want = w0[n_in + 3] + 2.0 * (0..r).map(|j| pair.b[r + j] * pair.a[j * n_in + 3]).sum::<f32>();
    assert!((w[n_in + 3] - want).abs() < 1e-6);
    crate::lora::merge_into(&mut w, &pair, 2.0, -1.0);
    for (a, b) in w.iter().zip(&w0) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[test]
fn merged_model_matches_the_adapter_unmerged() {
    use crate::merge::{merge_gguf, MergedType};
    let spec = TinySpec { n_layer: 2, ..TinySpec::default() };
    let bytes = tiny_llama_gguf(&spec);
    let mut llama = Llama::from_file(GgufFile::from_bytes(bytes.clone()).unwrap(), 1).unwrap();
    let cfg = llama.config.clone();
    let mut params = LoraParams::<f32>::init(&LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() }, &cfg, 3);
    let mut rng = Rng::new(13);
    for slot in params.slots.iter().flatten().flatten() {
        for v in &mut params.values[slot.b.clone()] {
            *v = ((rng.uniform() * 2.0 - 1.0) * 0.3) as f32;
        }
    }
    let adapter = params.to_adapter();
    let dir = std::env::temp_dir().join(format!("ferrolm-merge-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("merged.gguf");
    let n = merge_gguf(&GgufFile::from_bytes(bytes).unwrap(), &adapter, 1.0, MergedType::F16, &out).unwrap();
    assert_eq!(n, 2 * 7);
    let merged = Llama::open(&out, 1).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let tokens: Vec<u32> = (0..10).map(|i| 5 + i * 7).collect();
    let logits = |m: &Llama| {
        let mut cache = m.new_cache(tokens.len()).unwrap();
        let mut scratch = m.new_scratch(tokens.len(), tokens.len()).unwrap();
        m.forward(&tokens, &mut cache, &mut scratch, Logits::All).unwrap().to_vec()
    };
    let base = logits(&llama);
    llama.set_lora(Some(adapter.to_lora_set(1.0))).unwrap();
    let (unmerged, merged) = (logits(&llama), logits(&merged));
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    eprintln!("merged vs unmerged {:e}, adapter's own effect {:e}", diff(&merged, &unmerged), diff(&base, &unmerged));
    assert!(diff(&base, &unmerged) > 0.5, "the adapter changes the logits");
    assert!(diff(&merged, &unmerged) < 0.1 * diff(&base, &unmerged));
}

#[test]
fn a_tiny_model_overfits_a_tiny_dataset() {
    use crate::optim::AdamW;
    use crate::trainer::Trainer;
    let llama = tiny_llama();
    let model = TrainModel::<f32>::from_llama(&llama, 2).unwrap();
    let params = LoraParams::init(&LoraConfig { rank: 8, alpha: 16.0, ..LoraConfig::default() }, &model.config, 1);
    let mut trainer = Trainer::new(&model, params, AdamW::default());
    let batch = tiny_batch(model.config.n_vocab);
    let first = trainer.step(std::slice::from_ref(&batch), 1e-2, Some(1.0), 0).loss;
    let mut last = first;
    for step in 1..150 {
        last = trainer.step(std::slice::from_ref(&batch), 1e-2, Some(1.0), step).loss;
    }
    assert!(last < 0.05, "loss {first} -> {last}: a LoRA on a random tiny model memorizes 7 targets");
}

#[test]
fn frozen_formats_train_like_f32() {
    // The 8-bit frozen products (weights and their inputs in Q8_0 blocks, on the integer kernels)
    // at every kernel level, and the bf16 ones on AMX where it runs, give the f32 products' loss
    // within 1% and a gradient of every A and B pointing the same way (cosine > 0.99).
    let llama = tiny_llama();
    let exact = TrainModel::<f32>::from_llama(&llama, 2).unwrap();
    let mut params = LoraParams::<f32>::init(&LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() }, &exact.config, 5);
    let mut rng = Rng::new(13);
    for slot in params.slots.iter().flatten().flatten() {
        for v in &mut params.values[slot.b.clone()] {
            *v = ((rng.uniform() * 2.0 - 1.0) * 0.3) as f32;
        }
    }
    let batch = tiny_batch(exact.config.n_vocab);
    let run = |model: &TrainModel<f32>| {
        let mut acts = Activations::default();
        model.forward(&params, &batch, &mut acts, None);
        let mut grads = vec![0f32; params.values.len()];
        let loss = model.loss_backward(&params, &batch, &acts, 1.0, Some(&mut grads)).nll;
        (loss, grads)
    };
    let (want_loss, want_grads) = run(&exact);
    let mut formats: Vec<_> = kernels::Level::all_available().into_iter().map(|level| (crate::FrozenFormat::Q8_0, level)).collect();
    if kernels::bf16mat::amx_available() {
        formats.push((crate::FrozenFormat::Bf16, kernels::Level::best_available()));
    } else {
        eprintln!("no AMX here: bf16 frozen weights are not checked");
    }
    for (format, level) in formats {
        let quant = TrainModel::<f32>::from_llama_as(&llama, 2, format, level).unwrap();
        let (loss, grads) = run(&quant);
        let dot: f64 = grads.iter().zip(&want_grads).map(|(a, b)| *a as f64 * *b as f64).sum();
        let norm = |g: &[f32]| g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let cosine = dot / (norm(&grads) * norm(&want_grads));
        eprintln!("{format:?} {level:?}: loss {loss} vs f32 {want_loss}, gradient cosine {cosine:.6}");
        assert!((loss - want_loss).abs() / want_loss < 0.01, "{format:?} {level:?}: loss {loss} vs {want_loss}");
        assert!(cosine > 0.99, "{format:?} {level:?}: gradient cosine {cosine}");
    }
}

#[test]
fn a_batch_with_nothing_to_score_has_zero_loss_and_no_gradient() {
    // Every label ignored (a record whose answer was cut away): no chunk of the head to run.
    let llama = tiny_llama();
    let model = TrainModel::<f32>::from_llama(&llama, 2).unwrap();
    let params = LoraParams::<f32>::init(&LoraConfig { rank: 2, alpha: 4.0, ..LoraConfig::default() }, &model.config, 3);
    let mut batch = tiny_batch(model.config.n_vocab);
    batch.labels.iter_mut().for_each(|l| *l = -100);
    let mut acts = Activations::default();
    model.forward(&params, &batch, &mut acts, None);
    let mut grads = vec![0f32; params.values.len()];
    let loss = model.loss_backward(&params, &batch, &acts, 1.0, Some(&mut grads));
    assert_eq!((loss.nll, loss.count), (0.0, 0));
    assert!(grads.iter().all(|&g| g == 0.0));
}
