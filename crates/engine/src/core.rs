//! The scheduler and the step: which tokens of which requests go into the next forward call.
//!
//! Every step has one budget of tokens (`max_batch_tokens`). Running sequences that decode take
//! one token each first, so streams never stall; then running prompts continue in chunks; then
//! waiting requests start, first come first served, while the budget, the sequence limit and the
//! free KV blocks allow. A request that starts takes back the longest cached prefix of its prompt
//! from the pool's prefix cache. When a running sequence needs a block and none is free, the
//! newest running request is preempted: its blocks go back (they stay cached), and it returns to
//! the front of the queue to be computed again later (recompute, as vLLM does).
//!
//! None of this changes what a request generates: a forward call gives each sequence the bits it
//! would get alone, whatever the chunking of its prompt (tested in the model crate), cached blocks
//! hold the bits the request would have computed, and each choice samples with its own seeded
//! random stream. So a seeded request yields the same text whatever else is running.

use crate::metrics::Metrics;
use crate::{EngineConfig, Event, Request, Sink, Usage};
use generate::beam::{BeamConfig, BeamSearch, FinishReason};
use generate::sampler::{Sampler, SamplerConfig, SamplerError};
use generate::{Emitter, GenerateOptions, StopReason};
use model::{KvPool, Llama, Logits, ModelError, Scratch, SeqCache, SeqTokens};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokenizer::Tokenizer;

/// One completion of a request.
struct Choice {
    seq: SeqCache,
    /// The prompt and the tokens decided so far: what the sequence's positions hold once computed.
    tokens: Vec<u32>,
    sampler: Sampler,
    emitter: Option<Emitter>,
    done: bool,
    /// Tokens of `tokens[seq.len()..]` scheduled in this step.
    scheduled: usize,
    /// Ends for lack of KV blocks even with the pool to itself.
    out_of_room: bool,
    last_token_at: Option<Instant>,
}

impl Choice {
    fn new(seq: SeqCache, tokens: Vec<u32>, sampler: Sampler) -> Choice {
        Choice { seq, tokens, sampler, emitter: None, done: false, scheduled: 0, out_of_room: false, last_token_at: None }
    }

    /// Tokens not yet computed.
    fn pending(&self) -> usize {
        self.tokens.len() - self.seq.len()
    }
}

/// A request: its `n` choices (one until its prompt is computed; the others fork from it).
struct Group {
    id: u64,
    prompt_len: usize,
    n: usize,
    options: GenerateOptions,
    choices: Vec<Choice>,
    sink: Sink,
    arrived: Instant,
    started: bool,
    first_token: bool,
    cancelled: bool,
    cached_tokens: usize,
    completion_tokens: usize,
    finish: Option<StopReason>,
    /// Beam search: the choices are the running beams.
    beams: Option<Beams>,
    /// A beam search that has sent its hypotheses.
    beams_done: bool,
}

/// A beam search request's state: the search, the logits row each running beam got this step
/// (a step needs every beam's row), and the stop strings.
struct Beams {
    search: BeamSearch,
    rows: Vec<Option<Vec<f32>>>,
    stop: Vec<String>,
}

impl Group {
    /// Sequences this request runs (all `n` once its prompt has forked; every beam of a search).
    fn width(&self) -> usize {
        if let Some(b) = &self.beams {
            return b.search.config().num_beams;
        }
        if self.choices.len() < self.n {
            self.n
        } else {
            self.choices.iter().filter(|c| !c.done).count()
        }
    }

    /// Sends an event; a closed sink (the client went away) cancels the request.
    fn send(&mut self, event: Event) {
        if !self.cancelled && !(self.sink)(event) {
            self.cancelled = true;
        }
    }

    fn is_finished(&self) -> bool {
        if self.beams.is_some() || self.beams_done {
            return self.beams_done;
        }
        self.choices.len() == self.n && self.choices.iter().all(|c| c.done)
    }
}

/// A choice's sampler: the request's settings with seed + i, the prompt fed to the penalties.
fn sampler_for(options: &GenerateOptions, i: usize, prompt: &[u32]) -> Result<Sampler, SamplerError> {
    generate::choice_sampler(&options.sampler, i, prompt)
}

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StepStats {
    /// Tokens in the forward call.
    pub tokens: usize,
    /// Sequences in it.
    pub seqs: usize,
    /// Requests preempted.
    pub preempted: usize,
}

/// Whether a sequence got its blocks.
enum Reserved {
    Yes,
    /// Its own request was the newest and went back to the queue.
    Preempted,
    /// Not even the whole pool holds it.
    NoRoom,
}

/// The engine's state, stepped by its thread (or directly, in tests).
pub struct Core {
    model: Llama,
    tokenizer: Arc<Tokenizer>,
    pool: KvPool,
    scratch: Scratch,
    config: EngineConfig,
    waiting: VecDeque<Group>,
    running: Vec<Group>, // in arrival order
    metrics: Arc<Metrics>,
    /// Requests submitted and not yet started (the queue limit counts these).
    queued: Arc<AtomicUsize>,
}

impl Core {
    /// A core with its pool and scratch allocated.
    pub fn new(
        model: Llama,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
        metrics: Arc<Metrics>,
        queued: Arc<AtomicUsize>,
    ) -> Result<Core, ModelError> {
        let n_blocks = config.kv_blocks(&model.config, model.kv_type());
        let mut pool = model.new_pool_blocks(n_blocks, config.n_ctx)?;
        if config.prefault_kv {
            pool.prefault();
        }
        let scratch = model.new_scratch(config.max_batch_tokens, config.n_ctx)?;
        metrics.kv_blocks_total.store(n_blocks as u64, Relaxed);
        Ok(Core { model, tokenizer, pool, scratch, config, waiting: VecDeque::new(), running: Vec::new(), metrics, queued })
    }

    /// Whether nothing is running or waiting.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Blocks in the pool.
    pub fn n_blocks(&self) -> usize {
        self.pool.n_blocks()
    }

    /// Blocks no sequence holds.
    pub fn free_blocks(&self) -> usize {
        self.pool.free_blocks()
    }

    /// Requests (running, waiting).
    pub fn counts(&self) -> (usize, usize) {
        (self.running.len(), self.waiting.len())
    }

    /// Sequences running (the `max_seqs` limit counts these).
    pub fn running_seqs(&self) -> usize {
        self.running.iter().map(Group::width).sum()
    }

    /// Queues a request checked by [`crate::Engine::submit`] (or a test).
    pub fn add(&mut self, id: u64, request: Request, mut sink: Sink, arrived: Instant) {
        let Request { prompt, options, n, beam } = request;
        let sampler = match sampler_for(&options, 0, &prompt) {
            Ok(s) => s,
            Err(e) => {
                sink(Event::Error { message: e.to_string() });
                self.queued.fetch_sub(1, Relaxed);
                return;
            }
        };
        let first = Choice::new(self.pool.sequence(), prompt.clone(), sampler);
        let beams = match beam.map(|config| beam_config(config, &options, prompt.len(), self.config.n_ctx)).map(BeamSearch::new) {
            None => None,
            Some(Ok(search)) => Some(Beams { search, rows: vec![None], stop: options.stop.clone() }),
            Some(Err(e)) => {
                let mut sink = sink;
                sink(Event::Error { message: e.to_string() });
                self.queued.fetch_sub(1, Relaxed);
                return;
            }
        };
        self.waiting.push_back(Group {
            id,
            prompt_len: prompt.len(),
            // A beam search forks its beams itself.
            n: if beams.is_some() { 1 } else { n.max(1) },
            beams,
            beams_done: false,
            options,
            choices: vec![first],
            sink,
            arrived,
            started: false,
            first_token: false,
            cancelled: false,
            cached_tokens: 0,
            completion_tokens: 0,
            finish: None,
        });
        self.update_gauges();
    }

    /// Drops request `id` wherever it is and frees its blocks at once; no-op if it has ended.
    pub fn cancel(&mut self, id: u64) {
        if let Some(i) = self.waiting.iter().position(|g| g.id == id) {
            if let Some(g) = self.waiting.remove(i) {
                self.drop_group(g);
            }
        } else if let Some(i) = self.running.iter().position(|g| g.id == id) {
            let g = self.running.remove(i);
            self.drop_group(g);
        }
        self.update_gauges();
    }

    /// Ends every request with an error (the model failed).
    pub fn fail_all(&mut self, message: &str) {
        let groups: Vec<Group> = self.running.drain(..).chain(self.waiting.drain(..)).collect();
        for mut g in groups {
            g.send(Event::Error { message: message.to_string() });
            self.drop_group(g);
        }
        self.update_gauges();
    }

    fn drop_group(&mut self, mut g: Group) {
        if !g.started {
            self.queued.fetch_sub(1, Relaxed);
        }
        for c in &mut g.choices {
            self.pool.release(&mut c.seq);
        }
        self.metrics.finished[2].fetch_add(1, Relaxed);
    }

    /// One step: schedules, runs one forward call, samples, streams. Returns what it did; zero
    /// tokens means nothing could run (idle, or waiting for a command).
    pub fn step(&mut self) -> Result<StepStats, ModelError> {
        self.pool.reclaim();
        let mut stats = StepStats::default();
        let mut budget = self.config.max_batch_tokens;
        // Decodes first, oldest request first; then the prompts already started.
        for decode in [true, false] {
            let mut gi = 0;
            while gi < self.running.len() {
                // A beam search steps all its beams together: all of them or none.
                if decode && self.running[gi].beams.is_some() {
                    let need = self.running[gi].choices.iter().filter(|c| !c.done && c.scheduled == 0 && c.pending() == 1).count();
                    if need > budget {
                        gi += 1;
                        continue;
                    }
                }
                let mut ci = 0;
                let mut preempted = false;
                while ci < self.running[gi].choices.len() && budget > 0 {
                    let c = &self.running[gi].choices[ci];
                    let pending = c.pending();
                    if !c.done && c.scheduled == 0 && !c.out_of_room && pending > 0 && (pending == 1) == decode {
                        match self.reserve(gi, ci, pending.min(budget), &mut budget, &mut stats) {
                            Reserved::Yes => {}
                            Reserved::Preempted => {
                                preempted = true;
                                break;
                            }
                            Reserved::NoRoom => self.running[gi].choices[ci].out_of_room = true,
                        }
                    }
                    ci += 1;
                }
                if !preempted {
                    gi += 1;
                }
            }
        }
        self.admit(&mut budget);
        stats.tokens = self.config.max_batch_tokens - budget;
        if stats.tokens > 0 {
            self.forward_and_sample(&mut stats)?;
        }
        self.end_out_of_room();
        self.remove_ended();
        if stats.tokens == 0 && self.running.is_empty() && !self.waiting.is_empty() {
            // Nothing runs and the oldest request cannot start: it never will.
            if let Some(mut g) = self.waiting.pop_front() {
                g.send(Event::Error { message: "the request needs more KV cache memory than the server has: raise --kv-memory".into() });
                self.drop_group(g);
            }
        }
        self.update_gauges();
        Ok(stats)
    }

    /// Makes room for `n` more positions of choice `ci` of running request `gi`, preempting the
    /// newest running requests while blocks are short.
    fn reserve(&mut self, gi: usize, ci: usize, n: usize, budget: &mut usize, stats: &mut StepStats) -> Reserved {
        loop {
            let c = &mut self.running[gi].choices[ci];
            match self.pool.reserve(&mut c.seq, n) {
                Ok(()) => {
                    c.scheduled = n;
                    *budget -= n;
                    return Reserved::Yes;
                }
                Err(ModelError::OutOfKvBlocks { .. }) => {
                    let victim = self.running.len() - 1;
                    if victim == gi && self.running.len() == 1 {
                        return Reserved::NoRoom;
                    }
                    *budget += self.preempt(victim);
                    stats.preempted += 1;
                    if victim == gi {
                        return Reserved::Preempted;
                    }
                }
                // Context limits are checked before requests start; anything else is a bug.
                Err(_) => return Reserved::NoRoom,
            }
        }
    }

    /// Sends running request `gi` back to the front of the queue, its blocks freed (they stay in
    /// the prefix cache); returns the tokens it had scheduled in this step.
    fn preempt(&mut self, gi: usize) -> usize {
        let mut g = self.running.remove(gi);
        let mut refund = 0;
        for c in &mut g.choices {
            refund += std::mem::take(&mut c.scheduled);
            self.pool.release(&mut c.seq);
        }
        if let Some(b) = &mut g.beams {
            b.rows.iter_mut().for_each(|r| *r = None);
        }
        self.metrics.preemptions.fetch_add(1, Relaxed);
        self.waiting.push_front(g);
        refund
    }

    /// Starts waiting requests, oldest first, while the budget, `max_seqs` and the free blocks
    /// allow; each takes back its cached prefix and schedules its first chunk.
    fn admit(&mut self, budget: &mut usize) {
        while *budget > 0 {
            let Some(front) = self.waiting.front() else { break };
            if self.running_seqs() + front.width() > self.config.max_seqs {
                break;
            }
            let Some(mut g) = self.waiting.pop_front() else { break };
            let mut used = 0;
            let mut fits = true;
            let first_start = !g.started;
            for c in g.choices.iter_mut().filter(|c| !c.done) {
                let hit = self.pool.match_prefix(&mut c.seq, &c.tokens[..c.tokens.len() - 1]);
                if first_start {
                    g.cached_tokens = hit;
                    self.metrics.prefix_cache_queries.fetch_add(g.prompt_len as u64, Relaxed);
                    self.metrics.prefix_cache_hits.fetch_add(hit as u64, Relaxed);
                }
                let n = c.pending().min(*budget - used);
                if n == 0 {
                    continue;
                }
                if self.pool.reserve(&mut c.seq, n).is_err() {
                    fits = false;
                    break;
                }
                c.scheduled = n;
                used += n;
            }
            if !fits {
                for c in &mut g.choices {
                    c.scheduled = 0;
                    self.pool.release(&mut c.seq);
                }
                if first_start {
                    g.cached_tokens = 0;
                }
                self.waiting.push_front(g);
                break;
            }
            *budget -= used;
            if first_start {
                g.started = true;
                self.queued.fetch_sub(1, Relaxed);
                self.metrics.queue_time.observe(g.arrived.elapsed().as_secs_f64());
                self.metrics.prompt_tokens.fetch_add(g.prompt_len as u64, Relaxed);
            }
            self.running.push(g);
        }
    }

    /// The forward call over every scheduled chunk, then a token for each sequence whose chunk
    /// reached its end.
    fn forward_and_sample(&mut self, stats: &mut StepStats) -> Result<(), ModelError> {
        let Core { model, tokenizer, pool, scratch, running, metrics, config, .. } = self;
        let mut batch = Vec::new();
        for g in running.iter_mut() {
            for c in g.choices.iter_mut().filter(|c| c.scheduled > 0) {
                let start = c.seq.len();
                let end = start + c.scheduled;
                let logits = if end == c.tokens.len() { Logits::Last } else { Logits::Skip };
                batch.push(SeqTokens { seq: &mut c.seq, tokens: &c.tokens[start..end], logits });
            }
        }
        stats.seqs = batch.len();
        let result = model.forward_seqs(&mut batch, pool, scratch);
        drop(batch);
        let logits = match result {
            Ok(logits) => logits,
            Err(e) => {
                for g in running.iter_mut() {
                    for c in &mut g.choices {
                        c.scheduled = 0;
                    }
                }
                return Err(e);
            }
        };
        let v = model.config.n_vocab;
        let now = Instant::now();
        let mut row = 0;
        for g in running.iter_mut() {
            let before = g.choices.len();
            for ci in 0..before {
                let c = &mut g.choices[ci];
                if c.scheduled == 0 {
                    continue;
                }
                c.scheduled = 0;
                pool.register_blocks(&mut c.seq, &c.tokens);
                if c.seq.len() < c.tokens.len() {
                    continue; // a prompt chunk: no logits yet
                }
                let logits = &logits[row * v..(row + 1) * v];
                row += 1;
                if let Some(b) = &mut g.beams {
                    b.rows[ci] = Some(logits.to_vec());
                    continue;
                }
                if g.choices.len() < g.n {
                    // The prompt is done: the other choices fork from it and decide from the same row.
                    let prompt = &g.choices[0].tokens[..g.prompt_len];
                    let mut forks = Vec::with_capacity(g.n - 1);
                    for i in 1..g.n {
                        let sampler = sampler_for(&g.options, i, prompt).expect("checked when the request was added");
                        forks.push(Choice::new(pool.fork(&g.choices[0].seq), prompt.to_vec(), sampler));
                    }
                    g.choices.extend(forks);
                    for cj in 0..g.n {
                        decide(g, cj, logits, tokenizer, metrics, config.n_ctx, now, pool);
                    }
                } else {
                    decide(g, ci, logits, tokenizer, metrics, config.n_ctx, now, pool);
                }
            }
            if g.beams.as_ref().is_some_and(|b| b.rows.iter().all(Option::is_some)) {
                beam_step(g, pool, tokenizer, v, metrics);
            }
        }
        Ok(())
    }

    /// Ends the choices that cannot grow even with the pool to themselves.
    fn end_out_of_room(&mut self) {
        for g in &mut self.running {
            if g.beams.is_some() {
                if g.choices.iter().any(|c| c.out_of_room) {
                    finish_beams(g, &mut self.pool, &self.tokenizer, &self.metrics);
                }
                continue;
            }
            for ci in 0..g.choices.len() {
                if g.choices[ci].out_of_room && !g.choices[ci].done {
                    if let Some(e) = g.choices[ci].emitter.as_mut() {
                        e.out.stop_reason = StopReason::ContextFull;
                    }
                    finish_choice(g, ci, &mut self.pool);
                }
            }
        }
    }

    /// Removes finished and cancelled requests, sending the usage of finished ones.
    fn remove_ended(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            let g = &self.running[i];
            if g.cancelled {
                let g = self.running.remove(i);
                self.drop_group(g);
            } else if g.is_finished() {
                let mut g = self.running.remove(i);
                let usage = Usage { prompt_tokens: g.prompt_len, completion_tokens: g.completion_tokens, cached_tokens: g.cached_tokens };
                g.send(Event::Done(usage));
                self.metrics.e2e_latency.observe(g.arrived.elapsed().as_secs_f64());
                let reason = match g.finish {
                    Some(StopReason::MaxTokens | StopReason::ContextFull) => 1,
                    Some(StopReason::Cancelled) => 2,
                    _ => 0,
                };
                self.metrics.finished[reason].fetch_add(1, Relaxed);
            } else {
                i += 1;
            }
        }
        // A request cancelled while it waited has no blocks but is still counted.
        let mut j = 0;
        while j < self.waiting.len() {
            if self.waiting[j].cancelled {
                if let Some(g) = self.waiting.remove(j) {
                    self.drop_group(g);
                }
            } else {
                j += 1;
            }
        }
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.running.store(self.running.len() as u64, Relaxed);
        m.waiting.store(self.waiting.len() as u64, Relaxed);
        m.kv_blocks_used.store((self.pool.n_blocks() - self.pool.free_blocks()) as u64, Relaxed);
    }
}

/// Choice `ci` of `g` takes its next token from `logits` (V), streams its text, and ends if the
/// token ends it.
#[allow(clippy::too_many_arguments)]
fn decide(g: &mut Group, ci: usize, logits: &[f32], tokenizer: &Tokenizer, metrics: &Metrics, n_ctx: usize, now: Instant, pool: &mut KvPool) {
    let prompt_len = g.prompt_len;
    let c = &mut g.choices[ci];
    let emitter = c.emitter.get_or_insert_with(|| Emitter::new(&g.options, prompt_len, Duration::ZERO));
    if emitter.is_full() {
        // max_tokens 0: nothing to generate.
        finish_choice(g, ci, pool);
        return;
    }
    let (token, logprobs) = c.sampler.sample_with_logprobs(logits);
    c.sampler.accept(token);
    let mut text = String::new();
    let go_on = emitter.push(tokenizer, token, &mut |piece| {
        text.push_str(piece);
        true
    });
    metrics.generation_tokens.fetch_add(1, Relaxed);
    if let Some(t) = c.last_token_at {
        metrics.inter_token_latency.observe(now.duration_since(t).as_secs_f64());
    }
    c.last_token_at = Some(now);
    let mut ends = !go_on;
    if go_on {
        c.tokens.push(token);
        if c.tokens.len() > n_ctx {
            emitter.out.stop_reason = StopReason::ContextFull;
            ends = true;
        }
    }
    if !g.first_token {
        g.first_token = true;
        metrics.time_to_first_token.observe(now.duration_since(g.arrived).as_secs_f64());
    }
    // One event per token, even while its text is held back (a possible stop string, an
    // unfinished UTF-8 character): the receiver counts tokens as they come.
    g.send(Event::Delta { choice: ci, text, tokens: 1, logprobs: logprobs.into_iter().collect() });
    if ends {
        finish_choice(g, ci, pool);
    }
}

/// Ends choice `ci`: flushes its held-back text, reports why it ended, frees its blocks.
fn finish_choice(g: &mut Group, ci: usize, pool: &mut KvPool) {
    let c = &mut g.choices[ci];
    c.done = true;
    pool.release(&mut c.seq);
    let Some(emitter) = c.emitter.take() else {
        g.send(Event::Error { message: "the request ran out of KV cache memory before its first token: raise --kv-memory".into() });
        return;
    };
    let mut text = String::new();
    let out = emitter.finish(&mut |piece| {
        text.push_str(piece);
        true
    });
    if !text.is_empty() {
        g.send(Event::Delta { choice: ci, text, tokens: 0, logprobs: Vec::new() });
    }
    g.completion_tokens += out.tokens.len();
    g.finish.get_or_insert(out.stop_reason);
    g.send(Event::Finished { choice: ci, reason: out.stop_reason, tokens: out.tokens.len() });
}

/// The beam settings of a request: at most its token limit and the room left in the context,
/// ending at the model's end-of-generation tokens (taken by the caller into `config.eos`).
fn beam_config(mut config: BeamConfig, options: &GenerateOptions, prompt_len: usize, n_ctx: usize) -> BeamConfig {
    config.max_new_tokens = config.max_new_tokens.min(options.max_tokens).min(n_ctx.saturating_sub(prompt_len)).max(1);
    config
}

/// One step of a beam search once every running beam has its row: the kept candidates fork
/// their parents' sequences (sharing their blocks), the old beams are let go.
fn beam_step(g: &mut Group, pool: &mut KvPool, tokenizer: &Tokenizer, v: usize, metrics: &Metrics) {
    let Some(b) = g.beams.as_mut() else { return };
    let mut rows = Vec::with_capacity(b.rows.len() * v);
    for r in b.rows.iter_mut() {
        rows.extend(r.take().unwrap_or_default());
    }
    let (choices, prompt_len, stop) = (&g.choices, g.prompt_len, &b.stop);
    let mut candidate = Vec::new();
    let is_final = |beam: usize, token: u32| {
        if stop.is_empty() {
            return false;
        }
        candidate.clear();
        candidate.extend_from_slice(&choices[beam].tokens[prompt_len..]);
        candidate.push(token);
        let text = tokenizer.decode(&candidate, false);
        stop.iter().any(|s| text.contains(s.as_str()))
    };
    let forks = match b.search.step(&rows, v, is_final) {
        Ok(forks) => forks.to_vec(),
        Err(e) => {
            for c in &mut g.choices {
                pool.release(&mut c.seq);
            }
            g.send(Event::Error { message: format!("beam search failed: {e}") });
            g.beams = None;
            g.beams_done = true;
            return;
        }
    };
    if forks.is_empty() {
        finish_beams(g, pool, tokenizer, metrics);
        return;
    }
    let mut next = Vec::with_capacity(forks.len());
    for (parent, token) in forks {
        let mut tokens = g.choices[parent].tokens.clone();
        tokens.push(token);
        next.push(Choice::new(pool.fork(&g.choices[parent].seq), tokens, greedy_sampler()));
    }
    for c in &mut g.choices {
        pool.release(&mut c.seq);
    }
    g.choices = next;
    b.rows = vec![None; g.choices.len()];
}

/// Ends a beam search: its best hypotheses become the choices, sent whole.
fn finish_beams(g: &mut Group, pool: &mut KvPool, tokenizer: &Tokenizer, metrics: &Metrics) {
    let Some(b) = g.beams.take() else { return };
    for c in &mut g.choices {
        c.done = true;
        pool.release(&mut c.seq);
    }
    g.beams_done = true;
    if !g.first_token {
        g.first_token = true;
        metrics.time_to_first_token.observe(g.arrived.elapsed().as_secs_f64());
    }
    for (i, h) in b.search.finish().into_iter().enumerate() {
        let h = generate::BeamResult::from_hypothesis(tokenizer, &b.stop, h);
        let reason = match h.finish {
            FinishReason::Eos => StopReason::EndOfGeneration,
            FinishReason::StopString => StopReason::StopString,
            FinishReason::MaxTokens => StopReason::MaxTokens,
            // Only a search cut short for lack of KV memory ends so.
            FinishReason::Interrupted => StopReason::ContextFull,
        };
        metrics.generation_tokens.fetch_add(h.tokens.len() as u64, Relaxed);
        g.completion_tokens += h.tokens.len();
        g.finish.get_or_insert(reason);
        g.send(Event::Delta { choice: i, text: h.text, tokens: h.tokens.len(), logprobs: Vec::new() });
        g.send(Event::Finished { choice: i, reason, tokens: h.tokens.len() });
    }
}

fn greedy_sampler() -> Sampler {
    // Greedy settings are always valid.
    Sampler::new(SamplerConfig::greedy()).expect("greedy sampler settings are valid")
}
