//! The engine's scheduler over a tiny model: whatever the load, the budget, the sequence limit
//! and the pool size, every request ends, no block leaks, the token budget is never exceeded, and
//! each choice generates exactly what it generates alone (preemption, prefix caching and chunked
//! prompts included).

use engine::{Core, EngineConfig, Event, Metrics, Request, Sink, Usage};
use generate::beam::BeamConfig;
use generate::sampler::SamplerConfig;
use generate::{GenerateOptions, Generation, Session, StopReason};
use gguf::GgufFile;
use model::testing::{tiny_llama_gguf, TinySpec};
use model::tokenizer_gguf::tokenizer_from_gguf;
use model::{Llama, KV_BLOCK};
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokenizer::Tokenizer;

const N_CTX: usize = 96;

fn model() -> Llama {
    Llama::from_file(GgufFile::from_bytes(tiny_llama_gguf(&TinySpec::default())).unwrap(), 1).unwrap()
}

fn tokenizer(model: &Llama) -> Arc<Tokenizer> {
    Arc::new(tokenizer_from_gguf(model.file()).unwrap())
}

/// What one request received.
#[derive(Default, Debug)]
struct Received {
    text: Vec<String>,
    reasons: Vec<Option<StopReason>>,
    tokens: Vec<usize>,
    logprobs: Vec<Vec<generate::sampler::Logprobs>>,
    usage: Option<Usage>,
    error: Option<String>,
    events_after_end: usize,
}

fn sink(n: usize, into: Arc<Mutex<Received>>) -> Sink {
    {
        let mut r = into.lock().unwrap();
        r.text = vec![String::new(); n];
        r.reasons = vec![None; n];
        r.tokens = vec![0; n];
        r.logprobs = vec![Vec::new(); n];
    }
    Box::new(move |event| {
        let mut r = into.lock().unwrap();
        if r.usage.is_some() || r.error.is_some() {
            r.events_after_end += 1;
        }
        match event {
            Event::Delta { choice, text, logprobs, .. } => {
                r.text[choice].push_str(&text);
                r.logprobs[choice].extend(logprobs);
            }
            Event::Finished { choice, reason, tokens } => {
                r.reasons[choice] = Some(reason);
                r.tokens[choice] = tokens;
            }
            Event::Done(usage) => r.usage = Some(usage),
            Event::Error { message } => r.error = Some(message),
        }
        true
    })
}

fn alone(model: &Llama, tok: &Tokenizer, prompt: &[u32], options: &GenerateOptions) -> Generation {
    let mut session = Session::new(model, N_CTX, 16).unwrap();
    session.generate(tok, prompt, options, &mut |_| true).unwrap()
}

struct Setup {
    core: Core,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

fn setup(max_seqs: usize, max_batch_tokens: usize, blocks: usize) -> (Setup, Llama, Arc<Tokenizer>) {
    let m = model();
    let tok = tokenizer(&m);
    let config = EngineConfig {
        n_ctx: N_CTX,
        max_seqs,
        max_batch_tokens,
        kv_memory: EngineConfig::block_bytes(&m.config, m.kv_type()) * blocks as u64,
        queue: 1000,
        prefault_kv: true,
    };
    let metrics = Arc::new(Metrics::default());
    let queued = Arc::new(AtomicUsize::new(0));
    let core = Core::new(model(), tok.clone(), config, metrics.clone(), queued.clone()).unwrap();
    (Setup { core, queued, metrics }, m, tok)
}

impl Setup {
    fn add(&mut self, id: u64, request: Request) -> Arc<Mutex<Received>> {
        let got = Arc::new(Mutex::new(Received::default()));
        self.queued.fetch_add(1, Relaxed);
        let n = request.beam.as_ref().map_or(request.n, |b| b.num_return_sequences);
        self.core.add(id, request, sink(n, got.clone()), Instant::now());
        got
    }
}

fn prompt(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) % 250 + 3).collect()
}

fn options(max_tokens: usize, seed: Option<u64>, logprobs: usize) -> GenerateOptions {
    let sampler = match seed {
        None => SamplerConfig { logprobs, ..SamplerConfig::greedy() },
        Some(seed) => SamplerConfig { temperature: 1.1, top_k: 0, top_p: 0.97, min_p: 0.0, seed, logprobs, ..SamplerConfig::default() },
    };
    GenerateOptions { max_tokens, sampler, ..GenerateOptions::default() }
}

/// Choice `i` of a request must equal the request alone with seed + i.
fn assert_alone(model: &Llama, tok: &Tokenizer, request: &Request, got: &Received, what: &str) {
    for i in 0..request.n {
        let mut options = request.options.clone();
        options.sampler.seed = options.sampler.seed.wrapping_add(i as u64);
        let want = alone(model, tok, &request.prompt, &options);
        assert_eq!(got.text[i], want.text, "{what}: choice {i} text");
        assert_eq!(got.tokens[i], want.tokens.len(), "{what}: choice {i} tokens");
        assert_eq!(got.reasons[i], Some(want.stop_reason), "{what}: choice {i} reason");
        assert_eq!(got.logprobs[i], want.logprobs, "{what}: choice {i} logprobs");
    }
}

#[test]
fn requests_joining_and_leaving_get_what_they_get_alone() {
    let (mut s, m, tok) = setup(8, 24, 40);
    let requests: Vec<Request> = (0..6)
        .map(|i| Request {
            prompt: prompt(5 + 17 * i, i as u32),
            options: options(4 + 3 * i, (i % 2 == 1).then_some(100 + i as u64), if i == 4 { 2 } else { 0 }),
            n: if i == 3 { 3 } else { 1 },
            beam: None,
        })
        .collect();
    let mut got = Vec::new();
    let mut steps = 0;
    // Two requests first, one more every third step: they join running batches.
    for (i, r) in requests.iter().enumerate().take(2) {
        got.push(s.add(i as u64, r.clone()));
    }
    while !s.core.is_idle() || got.len() < requests.len() {
        if steps % 3 == 0 && got.len() < requests.len() {
            let i = got.len();
            got.push(s.add(i as u64, requests[i].clone()));
        }
        let stats = s.core.step().unwrap();
        assert!(stats.tokens <= 24);
        steps += 1;
        assert!(steps < 1000, "the requests never finished");
    }
    for (i, (r, g)) in requests.iter().zip(&got).enumerate() {
        let g = g.lock().unwrap();
        assert!(g.error.is_none(), "{:?}", g.error);
        assert_alone(&m, &tok, r, &g, &format!("request {i}"));
        let usage = g.usage.unwrap();
        assert_eq!(usage.prompt_tokens, r.prompt.len());
        assert_eq!(usage.completion_tokens, g.tokens.iter().sum::<usize>());
        assert_eq!(g.events_after_end, 0);
    }
    assert_eq!(s.core.free_blocks(), s.core.n_blocks(), "every block back");
    assert_eq!(s.queued.load(Relaxed), 0);
}

#[test]
fn a_shared_prefix_is_computed_once() {
    let (mut s, m, tok) = setup(4, 64, 20);
    let system = prompt(70, 5); // two full blocks and a part
    let mut a = system.clone();
    a.extend(prompt(9, 1));
    let mut b = system.clone();
    b.extend(prompt(12, 2));
    let ra = Request { prompt: a, options: options(3, None, 0), n: 1, beam: None };
    let rb = Request { prompt: b, options: options(3, None, 0), n: 1, beam: None };
    let ga = s.add(1, ra.clone());
    while !s.core.is_idle() {
        s.core.step().unwrap();
    }
    let gb = s.add(2, rb.clone());
    let mut computed = 0;
    while !s.core.is_idle() {
        computed += s.core.step().unwrap().tokens;
    }
    let (ua, ub) = (ga.lock().unwrap().usage.unwrap(), gb.lock().unwrap().usage.unwrap());
    assert_eq!(ua.cached_tokens, 0);
    assert_eq!(ub.cached_tokens, 2 * KV_BLOCK, "the system prompt's two full blocks");
    assert_eq!(computed, rb.prompt.len() - 2 * KV_BLOCK + 2, "the rest of the prompt and the decode steps");
    assert_alone(&m, &tok, &rb, &gb.lock().unwrap(), "after a prefix hit");
    assert_eq!(s.metrics.prefix_cache_hits.load(Relaxed), 2 * KV_BLOCK as u64);
}

#[test]
fn cancelling_frees_the_blocks_at_once() {
    let (mut s, _m, _tok) = setup(4, 64, 20);
    let _a = s.add(1, Request { prompt: prompt(50, 1), options: options(40, None, 0), n: 2, beam: None });
    let _b = s.add(2, Request { prompt: prompt(60, 2), options: options(40, None, 0), n: 1, beam: None });
    for _ in 0..4 {
        s.core.step().unwrap();
    }
    assert!(s.core.free_blocks() < s.core.n_blocks());
    s.core.cancel(1);
    s.core.cancel(2);
    assert!(s.core.is_idle());
    assert_eq!(s.core.free_blocks(), s.core.n_blocks());
    assert_eq!(s.metrics.kv_blocks_used.load(Relaxed), 0);
    assert_eq!(s.queued.load(Relaxed), 0);
}

#[test]
fn a_closed_sink_cancels_its_request() {
    let (mut s, _m, _tok) = setup(4, 64, 20);
    s.queued.fetch_add(1, Relaxed);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    s.core.add(
        1,
        Request { prompt: prompt(10, 1), options: options(50, None, 0), n: 1, beam: None },
        Box::new(move |_| {
            c.fetch_add(1, Relaxed);
            false
        }),
        Instant::now(),
    );
    for _ in 0..5 {
        s.core.step().unwrap();
    }
    assert!(s.core.is_idle());
    assert_eq!(calls.load(Relaxed), 1, "no event after the sink closed");
    assert_eq!(s.core.free_blocks(), s.core.n_blocks());
}

#[test]
fn a_preempted_request_is_recomputed_and_generates_the_same() {
    // Four blocks; each request needs three once it passes 64 positions: one must yield.
    let (mut s, m, tok) = setup(4, 64, 4);
    let requests: Vec<Request> =
        (0..2).map(|i| Request { prompt: prompt(50, 3 + i), options: options(30, Some(9 + i as u64), 1), n: 1, beam: None }).collect();
    let got: Vec<_> = requests.iter().enumerate().map(|(i, r)| s.add(i as u64, r.clone())).collect();
    let mut preempted = 0;
    while !s.core.is_idle() {
        preempted += s.core.step().unwrap().preempted;
    }
    assert!(preempted > 0, "the pool was meant to run out");
    assert_eq!(s.metrics.preemptions.load(Relaxed), preempted as u64);
    for (i, (r, g)) in requests.iter().zip(&got).enumerate() {
        assert_alone(&m, &tok, r, &g.lock().unwrap(), &format!("request {i}"));
    }
    assert_eq!(s.core.free_blocks(), s.core.n_blocks());
}

#[test]
fn a_beam_search_among_other_requests_equals_the_search_alone() {
    let m = model();
    let tok = tokenizer(&m);
    let eos = tok.end_of_generation_ids().to_vec();
    for (blocks, stop) in [(40, vec![]), (6, vec![]), (40, vec!["e".to_string()])] {
        let (mut s, _, _) = setup(8, 24, blocks);
        let p = prompt(30, 77);
        let mut config = BeamConfig::new(3, 12, eos.clone());
        config.num_return_sequences = 2;
        let want = generate::beam_search(&m, &tok, &p, &config, &stop, N_CTX, 16).unwrap();
        let options = GenerateOptions { max_tokens: 12, stop: stop.clone(), ..options(12, None, 0) };
        let other = s.add(1, Request { prompt: prompt(40, 5), options: options.clone(), n: 2, beam: None });
        let beams = s.add(2, Request { prompt: p.clone(), options, n: 1, beam: Some(config) });
        let mut steps = 0;
        while !s.core.is_idle() {
            s.core.step().unwrap();
            steps += 1;
            assert!(steps < 500);
        }
        let got = beams.lock().unwrap();
        assert!(got.error.is_none(), "{:?}", got.error);
        assert_eq!(got.text.len(), 2);
        for (i, w) in want.iter().enumerate() {
            assert_eq!(got.text[i], w.text, "pool of {blocks} blocks, stop {stop:?}: hypothesis {i}");
            assert_eq!(got.tokens[i], w.tokens.len());
        }
        assert!(other.lock().unwrap().usage.is_some());
        assert_eq!(s.core.free_blocks(), s.core.n_blocks());
    }
}

/// A request added by the property test: id, request, what it received, when it is cancelled.
type Added = (u64, Request, Arc<Mutex<Received>>, Option<usize>);

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random loads on small pools (preemption happens often): the invariants hold at every
    /// step, every request ends, nothing leaks, and every choice equals its generation alone
    /// unless the pool could not hold it at all.
    #[test]
    fn the_scheduler_keeps_its_promises(
        max_seqs in 1usize..5,
        budget in 1usize..40,
        blocks in 3usize..10,
        reqs in proptest::collection::vec((1usize..80, 1usize..24, 1usize..3, proptest::option::of(0u64..50), 0usize..12, proptest::option::of(0usize..30)), 1..6),
    ) {
        let (mut s, m, tok) = setup(max_seqs, budget, blocks);
        let mut added: Vec<Added> = Vec::new();
        let mut step = 0;
        loop {
            for (i, &(len, max_tokens, n, seed, at, cancel)) in reqs.iter().enumerate() {
                if at == step && n <= max_seqs {
                    let r = Request { prompt: prompt(len, i as u32), options: options(max_tokens, seed, 0), n, beam: None };
                    let got = s.add(i as u64, r.clone());
                    added.push((i as u64, r, got, cancel.map(|c| c + step)));
                }
            }
            for (id, _, _, cancel) in &added {
                if *cancel == Some(step) {
                    s.core.cancel(*id);
                }
            }
            let stats = s.core.step().unwrap();
            prop_assert!(stats.tokens <= budget, "budget exceeded: {} > {}", stats.tokens, budget);
            prop_assert!(s.core.running_seqs() <= max_seqs);
            step += 1;
            if s.core.is_idle() && step > 12 {
                break;
            }
            prop_assert!(step < 3000, "requests starved: {:?}", s.core.counts());
        }
        prop_assert_eq!(s.core.free_blocks(), s.core.n_blocks(), "blocks leaked");
        prop_assert_eq!(s.queued.load(Relaxed), 0);
        for (i, r, got, cancel) in &added {
            let g = got.lock().unwrap();
            prop_assert_eq!(g.events_after_end, 0);
            let ended = g.usage.is_some() || g.error.is_some();
            if cancel.is_none() {
                prop_assert!(ended, "request {} never ended", i);
            }
            let Some(usage) = g.usage else { continue };
            prop_assert_eq!(usage.completion_tokens, g.tokens.iter().sum::<usize>());
            let full = g.reasons.contains(&Some(StopReason::ContextFull));
            if !full && cancel.is_none() {
                assert_alone(&m, &tok, r, &g, &format!("request {i}"));
            }
        }
    }
}
