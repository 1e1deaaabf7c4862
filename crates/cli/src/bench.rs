//! `ferrolm bench`: prompt processing and generation speed, measured the way llama-bench does.
//!
//! pp = one forward of P tokens (logits of the last token only); tg = N single-token decode steps.
//! Both start from an empty cache, or with `-d DEPTH` from a cache already holding DEPTH tokens
//! (llama-bench's `-d`: the depth is filled once, untimed, and each repetition rewinds to it).
//! Token ids are fixed pseudo-random numbers, as in llama-bench. Each test runs once to warm up,
//! then `reps` times.

use anyhow::{bail, Result};
use kernels::pool::{split_range, ThreadPool};
use model::{Llama, Logits, SeqTokens};
use std::time::Instant;

/// Settings of one bench run.
pub struct BenchArgs {
    pub n_prompt: usize,
    /// Tokens already in the cache when pp and tg start.
    pub depth: usize,
    pub n_gen: usize,
    /// Sequences decoded together in a second tg test (1: none).
    pub batch: usize,
    pub reps: usize,
    pub json: bool,
}

/// Mean, standard deviation and median of a sample.
fn stats(xs: &[f64]) -> (f64, f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
    (mean, var.sqrt(), median)
}

fn tokens(n: usize, n_vocab: usize) -> Vec<u32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % n_vocab as u64) as u32
        })
        .collect()
}

/// Reads a buffer much larger than the caches on all threads: achieved read bandwidth in GB/s.
fn memory_read_bandwidth(pool: &ThreadPool) -> f64 {
    const BYTES: usize = 512 << 20;
    let buf: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let sums: Vec<std::sync::atomic::AtomicU64> = (0..pool.n_threads()).map(|_| Default::default()).collect();
        pool.run(&|i, n| {
            let range = split_range(buf.len(), i, n);
            // Eight independent sums so the loop is bound by loads, not by one add chain.
            let mut acc = [0u64; 8];
            for chunk in buf[range].chunks_exact(8) {
                for (a, v) in acc.iter_mut().zip(chunk) {
                    *a = a.wrapping_add(*v);
                }
            }
            sums[i].store(acc.iter().fold(0, |a, b| a.wrapping_add(*b)), std::sync::atomic::Ordering::Relaxed);
        });
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(&sums);
        best = best.max(BYTES as f64 / secs / 1e9);
    }
    best
}

/// Runs the benchmark and prints a table or one JSON object.
pub fn run(model: &Llama, args: &BenchArgs, model_name: &str) -> Result<()> {
    if args.reps == 0 || (args.n_prompt == 0 && args.n_gen == 0) {
        bail!("nothing to measure: give -r >= 1 and -p or -n > 0");
    }
    let n_ctx = args.depth + args.n_prompt.max(args.n_gen).max(1);
    // As llama-bench, the tests may run past the training context (pp512 at depth 8000 of an
    // 8192-position model): the speed is what is measured. The depth itself must fit.
    let n_ctx_train = model.config.n_ctx_train;
    if args.depth > n_ctx_train {
        bail!("-d {} exceeds the model's context length {n_ctx_train}", args.depth);
    }
    if n_ctx > n_ctx_train {
        eprintln!("note: -d + -p/-n = {n_ctx} positions run past the model's context length {n_ctx_train} (speed only: text there degrades)");
    }
    let mut cache = model.new_cache(n_ctx)?;
    let kv_bytes = cache.memory_bytes();
    // Batches of at most 512 tokens, as llama-bench's default micro-batch and as the engine
    // prefills: a longer prompt is one forward call that runs 512 tokens at a time.
    let mut scratch = model.new_scratch(args.n_prompt.clamp(1, 512).max(args.depth.min(512)), n_ctx)?;
    let v = model.config.n_vocab;
    // The depth, filled once (in batches of the scratch's size); each test rewinds to it.
    if args.depth > 0 {
        let filler = tokens(args.depth + 1, v);
        model.forward(&filler[1..], &mut cache, &mut scratch, Logits::Skip)?;
    }
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    if args.n_prompt > 0 {
        let prompt = tokens(args.n_prompt, v);
        for rep in 0..=args.reps {
            cache.truncate(args.depth);
            let start = Instant::now();
            model.forward(&prompt, &mut cache, &mut scratch, Logits::Last)?;
            if rep > 0 {
                pp.push(args.n_prompt as f64 / start.elapsed().as_secs_f64());
            }
        }
    }
    if args.n_gen > 0 {
        let gen = tokens(args.n_gen, v);
        for rep in 0..=args.reps {
            cache.truncate(args.depth);
            let start = Instant::now();
            for &t in &gen {
                model.forward(&[t], &mut cache, &mut scratch, Logits::Last)?;
            }
            if rep > 0 {
                tg.push(args.n_gen as f64 / start.elapsed().as_secs_f64());
            }
        }
    }
    // Batched tg (at depth 0): B sequences, one token each per forward call, interleaved with
    // single tg.
    let mut tgb = Vec::new();
    let mut tg1 = Vec::new();
    if args.batch > 1 && args.n_gen > 0 {
        let b = args.batch;
        let gen = tokens(args.n_gen * b, v);
        let mut pool = model.new_pool(b, n_ctx)?;
        let mut bscratch = model.new_scratch(b, n_ctx)?;
        for rep in 0..=args.reps {
            cache.clear();
            let start = Instant::now();
            for &t in &gen[..args.n_gen] {
                model.forward(&[t], &mut cache, &mut scratch, Logits::Last)?;
            }
            let one = args.n_gen as f64 / start.elapsed().as_secs_f64();
            let mut seqs: Vec<_> = (0..b).map(|_| pool.sequence()).collect();
            let start = Instant::now();
            for step in gen.chunks_exact(b) {
                let mut batch: Vec<SeqTokens> =
                    seqs.iter_mut().zip(step).map(|(seq, t)| SeqTokens { seq, tokens: std::slice::from_ref(t), logits: Logits::Last }).collect();
                model.forward_seqs(&mut batch, &mut pool, &mut bscratch)?;
            }
            let many = (args.n_gen * b) as f64 / start.elapsed().as_secs_f64();
            for seq in &mut seqs {
                pool.release(seq);
            }
            if rep > 0 {
                tg1.push(one);
                tgb.push(many);
            }
        }
    }
    let weight_bytes = model.weight_bytes_per_token() as f64;
    let bandwidth = memory_read_bandwidth(&ThreadPool::try_new(model.n_threads()).map_err(anyhow::Error::msg)?);
    let (pp_mean, pp_std, pp_med) = if pp.is_empty() { (0.0, 0.0, 0.0) } else { stats(&pp) };
    let (tg_mean, tg_std, tg_med) = if tg.is_empty() { (0.0, 0.0, 0.0) } else { stats(&tg) };
    let tg_gbs = tg_med * weight_bytes / 1e9;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": model_name, "threads": model.n_threads(), "n_prompt": args.n_prompt, "n_gen": args.n_gen, "depth": args.depth,
                "reps": args.reps, "pp": pp_med, "pp_mean": pp_mean, "pp_std": pp_std, "tg": tg_med, "tg_mean": tg_mean,
                "tg_std": tg_std, "weight_bytes_per_token": weight_bytes as u64, "tg_weight_read_gbs": tg_gbs,
                "memory_read_gbs": bandwidth, "kernels": format!("{:?}", model.level()), "sum_order": format!("{:?}", model.sum_order()),
                "kv_type": model.kv_type().name(), "kv_cache_bytes": kv_bytes,
                "batch": args.batch, "tg_batch": if tgb.is_empty() { 0.0 } else { stats(&tgb).2 },
                "tg_batch_single": if tg1.is_empty() { 0.0 } else { stats(&tg1).2 },
            })
        );
    } else {
        println!(
            "model: {model_name}, {} threads, kernels {:?}, sum order {:?}, KV cache {} ({:.1} MiB for {n_ctx} positions)",
            model.n_threads(),
            model.level(),
            model.sum_order(),
            model.kv_type().name(),
            kv_bytes as f64 / (1 << 20) as f64
        );
        // llama-bench's labels: "pp512 @ d4096".
        let at = if args.depth > 0 { format!(" @ d{}", args.depth) } else { String::new() };
        if !pp.is_empty() {
            println!("{:<12} {pp_med:>9.1} tokens/s (mean {pp_mean:.1} +- {pp_std:.1}, {} reps)", format!("pp{}{at}", args.n_prompt), args.reps);
        }
        if !tg.is_empty() {
            println!("{:<12} {tg_med:>9.1} tokens/s (mean {tg_mean:.1} +- {tg_std:.1}, {} reps)", format!("tg{}{at}", args.n_gen), args.reps);
            println!(
                "weights read per token {:.1} MB -> {tg_gbs:.1} GB/s in tg, machine read bandwidth {bandwidth:.1} GB/s ({:.0}% of it)",
                weight_bytes / 1e6,
                100.0 * tg_gbs / bandwidth
            );
        }
        if !tgb.is_empty() {
            let ratios: Vec<f64> = tgb.iter().zip(&tg1).map(|(m, o)| m / o).collect();
            let (one, many, ratio) = (stats(&tg1).2, stats(&tgb).2, stats(&ratios).2);
            println!(
                "tg{:<5} {} sequences together: {many:.1} tokens/s in all, against {one:.1} for one sequence in the same reps ({ratio:.2}x, median of per-rep ratios)",
                args.n_gen, args.batch
            );
        }
    }
    Ok(())
}
