//! Compares ferrolm's logits with a dump from tools/dump_llama_cpp_logits.py, position by
//! position: max and mean absolute difference, bit-identical logits and the argmaxes, then in all.
//!
//! cargo run --release -p ferrolm --example compare_logits -- MODEL DUMP.bin [decode]
//!
//! With `decode` ferrolm runs one token per call (the dump must then come from one-token calls
//! too: `dump_llama_cpp_logits.py ... decode`). With `LORA=ADAPTER.gguf` in the environment both
//! sides apply that adapter. Run with `FERROLM_SUM_ORDER=llama-cpp` for llama.cpp's order.

use model::{Llama, Logits};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 && !(args.len() == 4 && args[3] == "decode") {
        eprintln!("usage: compare_logits MODEL DUMP.bin [decode]");
        std::process::exit(2);
    }
    let mut model = Llama::open(&args[1], 2).unwrap_or_else(|e| panic!("{e}"));
    if let Ok(path) = std::env::var("LORA") {
        let dims = train::adapter::ModelDims::from_config(&model.config);
        let adapter = train::adapter::load(std::path::Path::new(&path), &dims).unwrap_or_else(|e| panic!("{path}: {e}"));
        model.set_lora(Some(adapter.to_lora_set(1.0))).unwrap_or_else(|e| panic!("{e}"));
    }
    let bytes = std::fs::read(&args[2]).unwrap_or_else(|e| panic!("{}: {e}", args[2]));
    let word = |i: usize| u32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]);
    let (n, v) = (word(0) as usize, word(1) as usize);
    let tokens: Vec<u32> = (0..n).map(|i| word(2 + i)).collect();
    let theirs: Vec<f32> = (0..n * v).map(|i| f32::from_bits(word(2 + n + i))).collect();
    let mut cache = model.new_cache(n).unwrap_or_else(|e| panic!("{e}"));
    let mut scratch = model.new_scratch(n, n).unwrap_or_else(|e| panic!("{e}"));
    // The whole sequence as one prompt, or (`decode`) one token per call.
    let ours: Vec<f32> = if args.len() == 4 {
        let mut all = Vec::with_capacity(n * v);
        for t in 0..n {
            all.extend_from_slice(model.forward(&tokens[t..t + 1], &mut cache, &mut scratch, Logits::Last).unwrap_or_else(|e| panic!("{e}")));
        }
        all
    } else {
        model.forward(&tokens, &mut cache, &mut scratch, Logits::All).unwrap_or_else(|e| panic!("{e}")).to_vec()
    };
    let argmax = |x: &[f32]| kernels::ops::argmax(x);
    let (mut worst, mut sum, mut agree) = (0f32, 0f64, 0);
    let identical = ours.iter().zip(&theirs).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
    for t in 0..n {
        let (a, b) = (&ours[t * v..(t + 1) * v], &theirs[t * v..(t + 1) * v]);
        let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        worst = worst.max(d);
        sum += a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum::<f64>() / v as f64;
        agree += (argmax(a) == argmax(b)) as usize;
        let same = a.iter().zip(b).filter(|(x, y)| x.to_bits() == y.to_bits()).count();
        println!("position {t:4}: max |diff| {d:.3e}, {same}/{v} bit-identical, argmax {} vs {}", argmax(a), argmax(b));
    }
    println!(
        "{n} positions: max |diff| {worst:.3e}, mean |diff| {:.3e}, argmax agrees at {agree}/{n}, {identical}/{} logits bit-identical",
        sum / n as f64,
        n * v
    );
}
