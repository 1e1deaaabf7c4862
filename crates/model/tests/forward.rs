//! The Llama forward pass on tiny random models: against a plain f32 reference written
//! independently here, and the equivalences the KV cache and threads must keep.

use gguf::GgufFile;
use kernels::quant::dequantize_row;
use kernels::Format;
use model::testing::{tiny_llama_gguf, TinySpec, TINY_WINDOW};
use model::{KvType, Llama, Logits, ModelError};

fn load(spec: &TinySpec, threads: usize) -> Llama {
    Llama::from_file(GgufFile::from_bytes(tiny_llama_gguf(spec)).unwrap(), threads).unwrap()
}

/// Dequantized tensor (rows, cols) as f32.
fn tensor(file: &GgufFile, name: &str) -> (Vec<f32>, usize) {
    let info = file.tensor(name).unwrap();
    let cols = info.dims[0] as usize;
    let format = model::llama::kernel_format(info.ggml_type).unwrap_or_else(|| panic!("{:?}", info.ggml_type));
    let n = info.n_elements as usize;
    let mut out = vec![0f32; n];
    let rb = format.row_bytes(cols).unwrap();
    for (r, row) in out.chunks_exact_mut(cols).enumerate() {
        dequantize_row(format, &file.tensor_data(info)[r * rb..(r + 1) * rb], row);
    }
    (out, cols)
}

fn matvec(w: &[f32], cols: usize, x: &[f64]) -> Vec<f64> {
    w.chunks_exact(cols).map(|row| row.iter().zip(x).map(|(a, b)| *a as f64 * b).sum()).collect()
}

fn rms(x: &[f64], w: &[f32], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    x.iter().zip(w).map(|(v, w)| v / (ms + eps).sqrt() * *w as f64).collect()
}

/// The whole model in f64 over dequantized weights, recomputing everything for every position:
/// no cache, no quantized activations, RoPE with powf per pair, GELU by its formula. Llama, or
/// Gemma 3 (embeddings times sqrt(D), per-head q/k norms, NeoX RoPE with the sliding-window
/// layers' own base, post-norms, GeGLU). Returns logits (T, V).
fn reference_logits(file: &GgufFile, tokens: &[u32]) -> Vec<Vec<f64>> {
    let c = model::LlamaConfig::from_gguf(file).unwrap();
    let gemma = c.architecture == "gemma3";
    let (d, h, hkv, dh) = (c.n_embd, c.n_head, c.n_head_kv, c.head_dim);
    let eps = c.rms_eps as f64;
    let (embd, _) = tensor(file, "token_embd.weight");
    let embd_scale = if gemma { (d as f64).sqrt() } else { 1.0 };
    let mut xs: Vec<Vec<f64>> = tokens.iter().map(|&t| embd[t as usize * d..][..d].iter().map(|&v| v as f64 * embd_scale).collect()).collect();
    let rope = |v: &mut [f64], pos: usize, base: f64| {
        for head in v.chunks_exact_mut(dh) {
            for i in 0..dh / 2 {
                let theta = pos as f64 * base.powf(-2.0 * i as f64 / dh as f64);
                // Llama's GGUF pairs are adjacent; Gemma's are the two halves of a head.
                let (ia, ib) = if gemma { (i, i + dh / 2) } else { (2 * i, 2 * i + 1) };
                let (a, b) = (head[ia], head[ib]);
                head[ia] = a * theta.cos() - b * theta.sin();
                head[ib] = a * theta.sin() + b * theta.cos();
            }
        }
    };
    for l in 0..c.n_layer {
        let g = |s: &str| tensor(file, &format!("blk.{l}.{s}"));
        let (an, _) = g("attn_norm.weight");
        let ((wq, k1), (wk, _), (wv, _), (wo, ko)) = (g("attn_q.weight"), g("attn_k.weight"), g("attn_v.weight"), g("attn_output.weight"));
        let base = if gemma && l % 6 < 5 { 10000.0 } else { c.rope_base as f64 };
        let head_norm = |v: &mut Vec<f64>, name: &str| {
            if gemma {
                let (w, _) = g(name);
                *v = v.chunks_exact(dh).flat_map(|head| rms(head, &w, eps)).collect();
            }
        };
        let mut qs = vec![];
        let mut ks = vec![];
        let mut vs = vec![];
        for (pos, x) in xs.iter().enumerate() {
            let xn = rms(x, &an, eps);
            let mut q = matvec(&wq, k1, &xn);
            let mut k = matvec(&wk, k1, &xn);
            head_norm(&mut q, "attn_q_norm.weight");
            head_norm(&mut k, "attn_k_norm.weight");
            rope(&mut q, pos, base);
            rope(&mut k, pos, base);
            qs.push(q);
            ks.push(k);
            vs.push(matvec(&wv, k1, &xn));
        }
        for (pos, x) in xs.iter_mut().enumerate() {
            let mut att = vec![0f64; h * dh];
            for head in 0..h {
                let kvh = head / (h / hkv);
                // Gemma's sliding-window layers see the last TINY_WINDOW positions only.
                let first = if gemma && l % 6 < 5 { (pos + 1).saturating_sub(TINY_WINDOW) } else { 0 };
                let scores: Vec<f64> =
                    (first..=pos).map(|s| (0..dh).map(|i| qs[pos][head * dh + i] * ks[s][kvh * dh + i]).sum::<f64>() / (dh as f64).sqrt()).collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                for (j, sc) in scores.iter().enumerate() {
                    for i in 0..dh {
                        att[head * dh + i] += (sc - m).exp() / z * vs[first + j][kvh * dh + i];
                    }
                }
            }
            let mut o = matvec(&wo, ko, &att);
            if gemma {
                o = rms(&o, &g("post_attention_norm.weight").0, eps);
            }
            for (a, b) in x.iter_mut().zip(o) {
                *a += b;
            }
            let (fnw, _) = g("ffn_norm.weight");
            let xn = rms(x, &fnw, eps);
            let ((wg, kg), (wu, _), (wd, kd)) = (g("ffn_gate.weight"), g("ffn_up.weight"), g("ffn_down.weight"));
            let gate = matvec(&wg, kg, &xn);
            let up = matvec(&wu, kg, &xn);
            let gelu = |g: f64| 0.5 * g * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * g * (1.0 + 0.044715 * g * g)).tanh());
            let act: Vec<f64> = gate.iter().zip(&up).map(|(&g, u)| if gemma { gelu(g) * u } else { g / (1.0 + (-g).exp()) * u }).collect();
            let mut o = matvec(&wd, kd, &act);
            if gemma {
                o = rms(&o, &g("post_ffw_norm.weight").0, eps);
            }
            for (a, b) in x.iter_mut().zip(o) {
                *a += b;
            }
        }
    }
    let (on, _) = tensor(file, "output_norm.weight");
    xs.iter().map(|x| matvec(&embd, d, &rms(x, &on, eps))).collect()
}

#[test]
fn forward_matches_independent_f64_reference_for_every_format() {
    let tokens: Vec<u32> = vec![1, 40, 77, 200, 5, 263, 3, 99, 150];
    // K-quant rows are 256 wide: those models are 256 wide, with a 512-wide feed-forward.
    let wide = TinySpec { n_embd: 256, n_ff: 512, ..TinySpec::default() };
    let cases = [
        (TinySpec { matrix_format: Format::F32, ..TinySpec::default() }, 0.005),
        (TinySpec { matrix_format: Format::F16, ..TinySpec::default() }, 0.005),
        (TinySpec { matrix_format: Format::Q8_0, ..TinySpec::default() }, 0.01),
        (TinySpec { matrix_format: Format::Q4_0, ..TinySpec::default() }, 0.01),
        (TinySpec { matrix_format: Format::Q4_1, ..TinySpec::default() }, 0.01),
        (TinySpec { matrix_format: Format::Q5_0, ..TinySpec::default() }, 0.01),
        (TinySpec { matrix_format: Format::Q5_1, ..TinySpec::default() }, 0.01),
        (TinySpec { matrix_format: Format::Q4_K, ..wide.clone() }, 0.01),
        (TinySpec { matrix_format: Format::Q5_K, ..wide.clone() }, 0.01),
        (TinySpec { matrix_format: Format::Q6_K, ..wide.clone() }, 0.01),
        (TinySpec { matrix_format: Format::Q3_K, ..wide.clone() }, 0.01),
        (TinySpec { matrix_format: Format::Q2_K, ..wide.clone() }, 0.01),
        (TinySpec { matrix_format: Format::Q8_K, ..wide.clone() }, 0.01),
        // Gemma 3's variations, six layers so that one attends globally with its own RoPE base.
        (TinySpec { gemma: true, n_layer: 6, matrix_format: Format::Q8_0, ..TinySpec::default() }, 0.01),
        (TinySpec { gemma: true, n_layer: 6, matrix_format: Format::Q4_K, ..wide.clone() }, 0.01),
    ];
    for (spec, tol) in cases {
        let mf = spec.matrix_format;
        let bytes = tiny_llama_gguf(&spec);
        let file = GgufFile::from_bytes(bytes.clone()).unwrap();
        let want = reference_logits(&file, &tokens);
        let model = Llama::from_file(GgufFile::from_bytes(bytes).unwrap(), 2).unwrap();
        let mut cache = model.new_cache(32).unwrap();
        let mut scratch = model.new_scratch(16, 32).unwrap();
        let got = model.forward(&tokens, &mut cache, &mut scratch, Logits::All).unwrap();
        let v = model.config.n_vocab;
        let mut worst = 0f64;
        for (t, row) in want.iter().enumerate() {
            for (a, b) in got[t * v..(t + 1) * v].iter().zip(row) {
                worst = worst.max((*a as f64 - b).abs());
            }
        }
        // 8-bit activations and an f16 cache bound the difference; a wrong RoPE pairing, mask,
        // scale or head mapping gives errors of order 1.
        let scale = want.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
        assert!(worst < tol * scale, "{mf:?} (gemma: {}): max |logit - reference| = {worst}, max |logit| {scale}", spec.gemma);
    }
}

#[test]
fn gemma_sliding_window_gives_each_token_the_same_bits_in_any_batch() {
    // 20 tokens against a window of 6: the windowed kernel from the 6th token on. Prefill in one
    // batch, in batches of 5, and token by token give the same bits, on 1 and 2 threads.
    let spec = TinySpec { gemma: true, n_layer: 6, ..TinySpec::default() };
    let tokens: Vec<u32> = (0..20).map(|i| (i * 37 % 262) as u32).collect();
    let run = |threads: usize, batch: usize| -> Vec<f32> {
        let model = load(&spec, threads);
        let v = model.config.n_vocab;
        let mut cache = model.new_cache(64).unwrap();
        let mut scratch = model.new_scratch(batch, 64).unwrap();
        let mut out = Vec::new();
        for chunk in tokens.chunks(batch) {
            out.extend_from_slice(&model.forward(chunk, &mut cache, &mut scratch, Logits::All).unwrap()[..chunk.len() * v]);
        }
        out
    };
    let want = run(2, 20);
    for (threads, batch) in [(1, 20), (2, 5), (2, 1), (1, 1)] {
        assert!(run(threads, batch) == want, "{threads} threads, batches of {batch}");
    }
}

#[test]
fn prefill_equals_token_by_token_decode() {
    let model = load(&TinySpec::default(), 2);
    let tokens: Vec<u32> = (0..20).map(|i| (i * 37 % 262) as u32).collect();
    let v = model.config.n_vocab;
    let mut cache = model.new_cache(64).unwrap();
    let mut scratch = model.new_scratch(32, 64).unwrap();
    let all = model.forward(&tokens, &mut cache, &mut scratch, Logits::All).unwrap().to_vec();
    let mut cache = model.new_cache(64).unwrap();
    for (t, &tok) in tokens.iter().enumerate() {
        let one = model.forward(&[tok], &mut cache, &mut scratch, Logits::Last).unwrap();
        for (a, b) in one.iter().zip(&all[t * v..(t + 1) * v]) {
            assert!((a - b).abs() < 1e-4, "position {t}: {a} vs {b}");
        }
    }
}

#[test]
fn prefill_in_small_batches_equals_one_batch() {
    let model = load(&TinySpec::default(), 1);
    let tokens: Vec<u32> = (0..23).map(|i| (i * 11 % 262) as u32).collect();
    let mut cache = model.new_cache(64).unwrap();
    let mut big = model.new_scratch(64, 64).unwrap();
    let want = model.forward(&tokens, &mut cache, &mut big, Logits::Last).unwrap().to_vec();
    let mut cache = model.new_cache(64).unwrap();
    let mut small = model.new_scratch(5, 64).unwrap();
    let got = model.forward(&tokens, &mut cache, &mut small, Logits::Last).unwrap();
    assert_eq!(cache.len(), 23);
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-4);
    }
}

#[test]
fn one_thread_and_many_threads_give_identical_logits() {
    let tokens: Vec<u32> = (0..12).map(|i| (i * 29 % 262) as u32).collect();
    let run = |threads| {
        let model = load(&TinySpec::default(), threads);
        let mut cache = model.new_cache(32).unwrap();
        let mut scratch = model.new_scratch(16, 32).unwrap();
        model.forward(&tokens, &mut cache, &mut scratch, Logits::All).unwrap().to_vec()
    };
    let one = run(1);
    for threads in [2, 3] {
        assert_eq!(one, run(threads), "{threads} threads");
    }
}

#[test]
fn kv_cache_is_never_recomputed_in_decode() {
    let model = load(&TinySpec::default(), 1);
    let mut cache = model.new_cache(64).unwrap();
    let mut scratch = model.new_scratch(16, 64).unwrap();
    let prompt: Vec<u32> = (10..30).collect();
    model.forward(&prompt, &mut cache, &mut scratch, Logits::Last).unwrap();
    for step in 0..10u32 {
        model.forward(&[step + 50], &mut cache, &mut scratch, Logits::Last).unwrap();
    }
    // Each decode step ran exactly one new token through the blocks.
    assert_eq!(model.tokens_evaluated(), 20 + 10);
    assert_eq!(cache.len(), 30);
}

#[test]
fn full_context_is_a_clear_error() {
    let model = load(&TinySpec::default(), 1);
    let mut cache = model.new_cache(8).unwrap();
    let mut scratch = model.new_scratch(8, 8).unwrap();
    model.forward(&[1, 2, 3, 4, 5, 6], &mut cache, &mut scratch, Logits::Last).unwrap();
    let err = model.forward(&[7, 8, 9], &mut cache, &mut scratch, Logits::Last).unwrap_err();
    assert!(matches!(err, ModelError::ContextFull { capacity: 8, needed: 9 }), "{err}");
    assert!(err.to_string().contains("context is full"));
    // The failed call left the cache as it was.
    assert_eq!(cache.len(), 6);
}

#[test]
fn out_of_vocabulary_token_is_an_error() {
    let model = load(&TinySpec::default(), 1);
    let mut cache = model.new_cache(8).unwrap();
    let mut scratch = model.new_scratch(8, 8).unwrap();
    let err = model.forward(&[1, 100_000], &mut cache, &mut scratch, Logits::Last).unwrap_err();
    assert!(matches!(err, ModelError::InvalidToken { token: 100_000, .. }));
}

#[test]
fn missing_tensor_and_wrong_architecture_are_named() {
    let mut w = gguf::GgufWriter::new();
    w.add_kv("general.architecture", gguf::Value::String("mamba".into()));
    let err = Llama::from_file(GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap(), 1).err().unwrap();
    assert!(err.to_string().contains("mamba"), "{err}");
}

#[test]
fn greedy_head_picks_the_argmax_of_the_logits() {
    let model = load(&TinySpec::default(), 2);
    let mut cache = model.new_cache(64).unwrap();
    let mut scratch = model.new_scratch(16, 64).unwrap();
    let mut cache2 = model.new_cache(64).unwrap();
    let mut scratch2 = model.new_scratch(16, 64).unwrap();
    let mut token = 40u32;
    for _ in 0..12 {
        let logits = model.forward(&[token], &mut cache, &mut scratch, Logits::Last).unwrap();
        let want = kernels::ops::argmax(logits) as u32;
        let got = model.forward_greedy(&[token], &mut cache2, &mut scratch2).unwrap();
        assert_eq!(got, want);
        token = got;
    }
}

#[test]
fn verifying_drafted_tokens_in_one_call_equals_decoding_them_one_by_one() {
    for spec in [TinySpec::default(), TinySpec { matrix_format: Format::Q4_0, ..TinySpec::default() }] {
        let model = load(&spec, 2);
        let v = model.config.n_vocab;
        let prompt: Vec<u32> = (30..47).collect();
        let draft: Vec<u32> = vec![100, 7, 260, 3, 58, 201, 9, 44, 12];
        // Step by step.
        let mut cache = model.new_cache(64).unwrap();
        let mut scratch = model.new_scratch(32, 64).unwrap();
        model.forward(&prompt, &mut cache, &mut scratch, Logits::Last).unwrap();
        let mut want = Vec::new();
        for &t in &draft {
            want.extend_from_slice(model.forward(&[t], &mut cache, &mut scratch, Logits::Last).unwrap());
        }
        // All drafted tokens in one verification call.
        let mut cache = model.new_cache(64).unwrap();
        model.forward(&prompt, &mut cache, &mut scratch, Logits::Last).unwrap();
        let got = model.forward_verify(&draft, &mut cache, &mut scratch).unwrap();
        assert_eq!(got.len(), draft.len() * v);
        assert!(got == &want[..], "verification logits differ from step-by-step decoding");
        // A plain batched forward follows the batch summation order instead (and that is allowed
        // to differ in the last bits), so verification must not use it.
    }
}

#[test]
fn a_q8_cache_stays_near_the_reference_and_gives_each_token_the_same_bits_in_any_batch() {
    // `--kv-type q8_0` on heads of 32 (Llama, and Gemma with its window of 6): the logits stay
    // within 8-bit noise of the f64 reference, and prefill in one batch, in batches of 5 and
    // token by token give the same bits on 1 and 2 threads (attention in the block order's kernel).
    let tokens: Vec<u32> = (0..20).map(|i| (i * 37 % 262) as u32).collect();
    for spec in [
        TinySpec { n_embd: 128, ..TinySpec::default() },
        TinySpec { n_embd: 128, gemma: true, n_layer: 6, matrix_format: Format::Q8_0, ..TinySpec::default() },
    ] {
        let run = |threads: usize, batch: usize| -> (Vec<f32>, usize) {
            let mut model = load(&spec, threads);
            model.set_kv_type(KvType::Q8_0).unwrap();
            let v = model.config.n_vocab;
            let mut cache = model.new_cache(64).unwrap();
            // Keys and values of 64 positions of every layer, 34 bytes per 32 (f16: 64).
            assert_eq!(cache.memory_bytes(), 2 * model.config.n_layer * 64 * model.config.kv_dim() / 32 * 34);
            let mut scratch = model.new_scratch(batch, 64).unwrap();
            let mut out = Vec::new();
            for chunk in tokens.chunks(batch) {
                out.extend_from_slice(&model.forward(chunk, &mut cache, &mut scratch, Logits::All).unwrap()[..chunk.len() * v]);
            }
            (out, v)
        };
        let (want, v) = run(2, 20);
        for (threads, batch) in [(1, 20), (2, 5), (2, 1), (1, 1)] {
            assert!(run(threads, batch).0 == want, "gemma {}: {threads} threads, batches of {batch}", spec.gemma);
        }
        let reference = reference_logits(&GgufFile::from_bytes(tiny_llama_gguf(&spec)).unwrap(), &tokens);
        let scale = reference.iter().flatten().fold(0f64, |m, x| m.max(x.abs()));
        let worst =
            reference.iter().enumerate().flat_map(|(t, row)| row.iter().zip(&want[t * v..]).map(|(r, g)| (r - *g as f64).abs())).fold(0f64, f64::max);
        assert!(worst < 0.02 * scale, "gemma {}: max |logit - reference| = {worst}, max |logit| {scale}", spec.gemma);
    }
    // Heads of 16 split Q8_0 blocks: refused with the reason.
    let mut model = load(&TinySpec::default(), 1);
    let err = model.set_kv_type(KvType::Q8_0).unwrap_err().to_string();
    assert!(err.contains("multiple of 32") && err.contains("--kv-type f16"), "{err}");
}
