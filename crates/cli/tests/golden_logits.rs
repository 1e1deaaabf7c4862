//! Logits against a stored dump of llama.cpp's (tools/make_logits_fixture.py: every 16th
//! vocabulary id and each row's argmax), in llama.cpp's summation order, at every kernel level:
//! rows of the whole sequence run as one prompt, and rows of one-token decode steps.
//!
//! ferrolm's `llama-cpp` order is that of llama.cpp built with AVX-512 (its attention sums f16 dot
//! products 16 lanes at a time). Against a dump from such a build the rows must be bit-identical.
//! An AVX2-only build sums 8 lanes at a time, so against its dump only what attention does not mix
//! can be identical: the first position bit for bit, and the argmax of every row (measured on
//! Zen 3: other logits within 0.79). The fixture says which build made it. Skipped without the
//! model, except under CI.

use kernels::{Level, SumOrder};
use model::{Llama, Logits};
use serde_json::Value;

fn fixture() -> (Value, Vec<f32>) {
    let dir = format!("{}/../../tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(format!("{dir}/logits.json")).unwrap()).unwrap();
    let bytes = std::fs::read(format!("{dir}/logits.bin")).unwrap();
    let values = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (meta, values)
}

fn list(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

/// Compares `row` at `ids` with `want`: (logits whose bits differ, largest difference, whether
/// the argmax over `ids` is the same).
fn compare(row: &[f32], ids: &[usize], want: &[f32]) -> (usize, f32, bool) {
    let bad = ids.iter().zip(want).filter(|(&i, w)| row[i].to_bits() != w.to_bits()).count();
    let worst = ids.iter().zip(want).map(|(&i, w)| (row[i] - w).abs()).fold(0f32, f32::max);
    let argmax = |x: &mut dyn Iterator<Item = f32>| x.enumerate().fold((0, f32::NEG_INFINITY), |b, (i, v)| if v > b.1 { (i, v) } else { b }).0;
    let same_argmax = argmax(&mut ids.iter().map(|&i| row[i])) == argmax(&mut want.iter().copied());
    (bad, worst, same_argmax)
}

#[test]
fn logits_match_llama_cpp_in_its_order() {
    let Some(path) = model::paths::model_for_tests() else { return };
    let (meta, values) = fixture();
    let strict = meta["avx512"].as_bool().unwrap();
    let tokens: Vec<u32> = list(&meta["tokens"]).into_iter().map(|t| t as u32).collect();
    let (ids, n_prompt) = (list(&meta["ids"]), meta["n_prompt"].as_u64().unwrap() as usize);
    let (prefill_at, decode_at) = (list(&meta["prefill_positions"]), list(&meta["decode_positions"]));
    let want = |row: usize| &values[row * ids.len()..(row + 1) * ids.len()];
    assert_eq!(values.len(), (prefill_at.len() + decode_at.len()) * ids.len());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut model = Llama::open(&path, threads).unwrap();
    model.set_sum_order(SumOrder::LlamaCpp);
    assert_eq!(model.config.n_vocab, meta["n_vocab"].as_u64().unwrap() as usize);
    let v = model.config.n_vocab;
    let check = |what: &str, p: usize, row: &[f32], want: &[f32]| {
        let (bad, worst, same_argmax) = compare(row, &ids, want);
        if strict || p == 0 {
            assert_eq!(bad, 0, "{what} row at position {p}: {bad} of {} logits differ from llama.cpp's (largest {worst:e})", ids.len());
        } else {
            assert!(same_argmax && worst < 1.0, "{what} row at position {p}: argmax same {same_argmax}, largest difference {worst:e}");
        }
    };
    for level in Level::all_available() {
        model.set_level(level);
        // The whole sequence as one prompt.
        let mut cache = model.new_cache(64).unwrap();
        let mut scratch = model.new_scratch(64, 64).unwrap();
        let all = model.forward(&tokens, &mut cache, &mut scratch, Logits::All).unwrap().to_vec();
        for (r, &p) in prefill_at.iter().enumerate() {
            check(&format!("{level:?} prompt"), p, &all[p * v..(p + 1) * v], want(r));
        }
        // The prompt, then one token per call, as the decode rows were made.
        let mut cache = model.new_cache(64).unwrap();
        model.forward(&tokens[..n_prompt], &mut cache, &mut scratch, Logits::Last).unwrap();
        for p in n_prompt..tokens.len() {
            let row = model.forward(&tokens[p..p + 1], &mut cache, &mut scratch, Logits::Last).unwrap().to_vec();
            if let Some(r) = decode_at.iter().position(|&d| d == p) {
                check(&format!("{level:?} decode"), p, &row, want(prefill_at.len() + r));
            }
        }
    }
}
