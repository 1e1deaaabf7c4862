//! The engine alone (no HTTP) under the serving benchmark's load: CLIENTS closed-loop clients,
//! each sending REQUESTS requests of a PROMPT-token prompt (distinct random tokens, so nothing is
//! shared) and generating GEN tokens (end-of-generation ignored). Prints the aggregate generated
//! tokens/s, the steps, tokens per step and the share of time spent in the step. A tool for
//! comparing engine and kernel variants on one machine in one run, not a test.
//!
//!     cargo run --release -p engine --example engine_bench [-- MODEL THREADS CLIENTS REQUESTS PROMPT GEN]

use engine::{Core, EngineConfig, Event, Metrics, Request};
use generate::sampler::SamplerConfig;
use generate::GenerateOptions;
use model::Llama;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let default_model = format!("{}/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf", std::env::var("HOME").unwrap_or_default());
    let path = args.first().cloned().unwrap_or(default_model);
    let num = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (threads, clients, requests, prompt_len, gen) = (num(1, 2), num(2, 16), num(3, 3), num(4, 144), num(5, 128));
    let model = Llama::open(&path, threads).expect("the model");
    let tok = Arc::new(model::tokenizer_gguf::tokenizer_from_gguf(model.file()).expect("its tokenizer"));
    let (level, order, n_vocab) = (model.level(), model.sum_order(), model.config.n_vocab);
    let config = EngineConfig { n_ctx: 4096, ..EngineConfig::default() };
    let metrics = Arc::new(Metrics::default());
    let queued = Arc::new(AtomicUsize::new(0));
    let mut core = Core::new(model, tok, config, metrics.clone(), queued.clone()).expect("the engine");
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut prompt = || -> Vec<u32> {
        (0..prompt_len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % (n_vocab as u64 - 100)) as u32 + 100
            })
            .collect()
    };
    let options = GenerateOptions { max_tokens: gen, ignore_eos: true, sampler: SamplerConfig::greedy(), ..GenerateOptions::default() };
    let done = Arc::new(Mutex::new(Vec::<usize>::new())); // clients whose request ended
    let generated = Arc::new(AtomicUsize::new(0));
    let mut sent = vec![0usize; clients];
    let mut id = 0u64;
    let mut submit = |core: &mut Core, client: usize, sent: &mut Vec<usize>| {
        let (done, generated) = (done.clone(), generated.clone());
        queued.fetch_add(1, Relaxed);
        let sink = Box::new(move |e: Event| {
            match e {
                Event::Delta { tokens, .. } => {
                    generated.fetch_add(tokens, Relaxed);
                }
                Event::Done(_) | Event::Error { .. } => done.lock().unwrap().push(client),
                _ => {}
            }
            true
        });
        core.add(id, Request { prompt: prompt(), options: options.clone(), n: 1, beam: None }, sink, Instant::now());
        id += 1;
        sent[client] += 1;
    };
    for c in 0..clients {
        submit(&mut core, c, &mut sent);
    }
    let start = Instant::now();
    let (mut steps, mut tokens, mut in_step) = (0usize, 0usize, 0f64);
    while !core.is_idle() {
        let t = Instant::now();
        let stats = core.step().expect("a step");
        in_step += t.elapsed().as_secs_f64();
        steps += 1;
        tokens += stats.tokens;
        let ended: Vec<usize> = std::mem::take(&mut *done.lock().unwrap());
        for c in ended {
            if sent[c] < requests {
                submit(&mut core, c, &mut sent);
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let n = generated.load(Relaxed);
    println!(
        "{level:?}, {order:?} order, {threads} threads, {clients} clients x {requests} requests, prompts of {prompt_len}, {gen} generated: {:.1} generated tok/s, {steps} steps of {:.1} tokens ({:.1} ms each), {:.0}% of the time in steps",
        n as f64 / wall,
        tokens as f64 / steps as f64,
        1e3 * in_step / steps as f64,
        100.0 * in_step / wall
    );
}
