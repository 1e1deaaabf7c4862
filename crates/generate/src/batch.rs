//! Several sequences generated together: one forward call per step for all of them.
//!
//! [`generate_batch`] decodes different prompts side by side; [`generate_n`] makes `n`
//! completions of one prompt that share its KV blocks (the prompt is evaluated once, and the
//! blocks are copied only where the completions write). Each sequence keeps its own sampler
//! (with its own seeded random stream and penalty history), stop strings, end-of-generation test
//! and token limit; a finished sequence leaves the batch and gives its blocks back.
//!
//! A sequence's tokens do not depend on the company it keeps: [`Llama::forward_seqs`] gives
//! every sequence the bits it would get alone, prompts are evaluated in the same chunks as
//! [`Session::generate`](crate::Session::generate) uses, and the random stream belongs to the
//! sequence. So a prompt in a batch yields exactly what it yields alone, for greedy and for
//! seeded sampling (tested).

use crate::generate::Emitter;
use crate::sampler::{Logprobs, Sampler, SamplerConfig, SamplerError};
use crate::{GenerateError, GenerateOptions, Generation, StopReason};
use model::{KvPool, Llama, Logits, ModelError, Scratch, SeqCache, SeqTokens};
use std::time::Instant;
use tokenizer::Tokenizer;

/// Sizes shared by the sequences of a batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchSizes {
    /// The most positions of one sequence (prompt and generated tokens).
    pub n_ctx: usize,
    /// Prompt tokens evaluated per forward call (the same meaning as for a
    /// [`Session`](crate::Session)).
    pub prefill_chunk: usize,
}

/// One sequence of a batch being generated.
struct Running {
    seq: SeqCache,
    sampler: Sampler,
    emitter: Emitter,
    logprobs: Vec<Logprobs>,
    /// The token decided last, not yet emitted.
    next: u32,
    done: bool,
}

/// The shared state of a batch: the model, one pool of KV blocks, the scratch.
struct Batch<'m> {
    model: &'m Llama,
    pool: KvPool,
    scratch: Scratch,
    sizes: BatchSizes,
}

impl<'m> Batch<'m> {
    /// A batch whose sequences need at most `lengths[i]` positions each (prompt and generated
    /// tokens, capped at the context): the pool holds exactly their blocks.
    fn new(model: &'m Llama, lengths: impl Iterator<Item = usize>, sizes: BatchSizes) -> Result<Batch<'m>, GenerateError> {
        let n_ctx = sizes.n_ctx.max(1);
        let (mut n_seqs, mut n_blocks) = (0usize, 0usize);
        for len in lengths {
            n_seqs += 1;
            n_blocks = n_blocks.saturating_add(len.clamp(1, n_ctx).div_ceil(model::KV_BLOCK));
        }
        if n_seqs == 0 {
            return Err(GenerateError::InvalidArgument("a batch needs at least one sequence".into()));
        }
        let prefill_chunk = sizes.prefill_chunk.min(n_ctx).max(1);
        let pool = model.new_pool_blocks(n_blocks, n_ctx)?;
        let scratch = model.new_scratch(prefill_chunk.max(n_seqs), n_ctx)?;
        Ok(Batch { model, pool, scratch, sizes: BatchSizes { n_ctx, prefill_chunk } })
    }

    /// Evaluates `prompt` into `seq` in chunks of `prefill_chunk` tokens and returns the logits
    /// row of its last token (left in the scratch).
    fn prefill(&mut self, seq: &mut SeqCache, prompt: &[u32]) -> Result<&[f32], GenerateError> {
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if prompt.len() > self.sizes.n_ctx {
            return Err(ModelError::ContextFull { capacity: self.sizes.n_ctx, needed: prompt.len() }.into());
        }
        let chunks = prompt.len().div_ceil(self.sizes.prefill_chunk);
        for (i, chunk) in prompt.chunks(self.sizes.prefill_chunk).enumerate() {
            let logits = if i + 1 == chunks { Logits::Last } else { Logits::Skip };
            self.model.forward_seqs(&mut [SeqTokens { seq, tokens: chunk, logits }], &mut self.pool, &mut self.scratch)?;
        }
        Ok(self.scratch.logits(self.model.config.n_vocab))
    }

    /// Decodes every running sequence to its end, one forward call per step for all of them.
    /// `on_text(i, text)` gets sequence i's text as it becomes final; `false` cancels that one.
    fn decode(&mut self, tokenizer: &Tokenizer, running: &mut [Running], on_text: &mut dyn FnMut(usize, &str) -> bool) -> Result<(), GenerateError> {
        let v = self.model.config.n_vocab;
        let mut ids = Vec::with_capacity(running.len()); // running sequences in this step
        let mut tokens = Vec::with_capacity(running.len());
        loop {
            ids.clear();
            tokens.clear();
            for (i, r) in running.iter_mut().enumerate() {
                if r.done {
                    continue;
                }
                if r.emitter.is_full() || !r.emitter.push(tokenizer, r.next, &mut |text| on_text(i, text)) {
                    self.end(r);
                    continue;
                }
                r.sampler.accept(r.next);
                if r.seq.len() == self.sizes.n_ctx {
                    r.emitter.out.stop_reason = StopReason::ContextFull;
                    self.end(r);
                    continue;
                }
                ids.push(i);
                tokens.push(r.next);
            }
            if ids.is_empty() {
                return Ok(());
            }
            // Only the running sequences are in the call: a finished one costs nothing.
            let mut batch: Vec<SeqTokens> = Vec::with_capacity(ids.len());
            let mut it = ids.iter().peekable();
            for (i, r) in running.iter_mut().enumerate() {
                if it.peek() == Some(&&i) {
                    let k = batch.len();
                    batch.push(SeqTokens { seq: &mut r.seq, tokens: std::slice::from_ref(&tokens[k]), logits: Logits::Last });
                    it.next();
                }
            }
            let logits = self.model.forward_seqs(&mut batch, &mut self.pool, &mut self.scratch)?;
            drop(batch);
            for (row, &i) in ids.iter().enumerate() {
                let r = &mut running[i];
                let (token, lp) = r.sampler.sample_with_logprobs(&logits[row * v..(row + 1) * v]);
                r.logprobs.extend(lp);
                r.next = token;
            }
        }
    }

    fn end(&mut self, r: &mut Running) {
        r.done = true;
        self.pool.release(&mut r.seq);
    }
}

fn finish(running: Vec<Running>, on_text: &mut dyn FnMut(usize, &str) -> bool) -> Vec<Generation> {
    running
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut out = r.emitter.finish(&mut |text| on_text(i, text));
            out.logprobs = r.logprobs;
            out.logprobs.truncate(out.tokens.len());
            out
        })
        .collect()
}

/// Generates a continuation for each `(prompt, options)` pair, all decoded together.
///
/// Each result is what [`Session::generate`](crate::Session::generate) on a fresh session with
/// the same `n_ctx` and prefill chunk gives for that prompt alone (speculative decoding is not
/// used in a batch). `on_text(i, text)` streams sequence i's text; returning `false` cancels that
/// sequence only.
pub fn generate_batch(
    model: &Llama,
    tokenizer: &Tokenizer,
    requests: &[(Vec<u32>, GenerateOptions)],
    sizes: BatchSizes,
    on_text: &mut dyn FnMut(usize, &str) -> bool,
) -> Result<Vec<Generation>, GenerateError> {
    let lengths = requests.iter().map(|(p, o)| p.len().saturating_add(o.max_tokens));
    let mut batch = Batch::new(model, lengths, sizes)?;
    let mut running = Vec::with_capacity(requests.len());
    for (prompt, options) in requests {
        running.push(start(&mut batch, prompt, options)?);
    }
    batch.decode(tokenizer, &mut running, on_text)?;
    Ok(finish(running, on_text))
}

/// The sampler of completion `i` of a prompt: `config` with seed + i (wrapping), the prompt fed
/// to the penalties (they look back over it too, as in a session). Completion i then equals a
/// single generation with that seed.
pub fn choice_sampler(config: &SamplerConfig, i: usize, prompt: &[u32]) -> Result<Sampler, SamplerError> {
    let mut config = config.clone();
    config.seed = config.seed.wrapping_add(i as u64);
    let mut sampler = Sampler::new(config)?;
    for &t in prompt {
        sampler.accept(t);
    }
    Ok(sampler)
}

/// Starts one sequence of a batch: evaluates its prompt and chooses its first token.
fn start(batch: &mut Batch, prompt: &[u32], options: &GenerateOptions) -> Result<Running, GenerateError> {
    let mut sampler = choice_sampler(&options.sampler, 0, prompt)?;
    let started = Instant::now();
    let mut seq = batch.pool.sequence();
    let logits = batch.prefill(&mut seq, prompt)?;
    let (next, lp) = sampler.sample_with_logprobs(logits);
    let emitter = Emitter::new(options, prompt.len(), started.elapsed());
    Ok(Running { seq, sampler, emitter, logprobs: lp.into_iter().collect(), next, done: false })
}

/// `n` completions of one prompt, decoded together, the prompt evaluated once and its KV blocks
/// shared. Completion i samples with seed `options.sampler.seed + i` (wrapping), so it equals a
/// single generation with that seed; with greedy decoding all n are the same.
pub fn generate_n(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    options: &GenerateOptions,
    n: usize,
    sizes: BatchSizes,
    on_text: &mut dyn FnMut(usize, &str) -> bool,
) -> Result<Vec<Generation>, GenerateError> {
    if n == 0 {
        return Err(GenerateError::InvalidArgument("the number of completions must be at least 1".into()));
    }
    // The prompt's blocks are shared: each completion owns at most its own blocks in full.
    let len = prompt.len().saturating_add(options.max_tokens);
    let mut batch = Batch::new(model, std::iter::repeat_n(len, n), sizes)?;
    let started = Instant::now();
    let mut first = batch.pool.sequence();
    let v = model.config.n_vocab;
    let row = batch.prefill(&mut first, prompt)?[..v].to_vec();
    let prefill_time = started.elapsed();
    let mut running = Vec::with_capacity(n);
    for i in 0..n {
        let mut sampler = choice_sampler(&options.sampler, i, prompt)?;
        let (next, lp) = sampler.sample_with_logprobs(&row);
        let seq = if i + 1 == n { std::mem::take(&mut first) } else { batch.pool.fork(&first) };
        // Only the first completion is charged with the prompt's evaluation.
        let (prompt_tokens, time) = if i == 0 { (prompt.len(), prefill_time) } else { (0, std::time::Duration::ZERO) };
        running.push(Running {
            seq,
            sampler,
            emitter: Emitter::new(options, prompt_tokens, time),
            logprobs: lp.into_iter().collect(),
            next,
            done: false,
        });
    }
    batch.decode(tokenizer, &mut running, on_text)?;
    Ok(finish(running, on_text))
}
