//! The generation loop: prefill the prompt, then decode one token at a time with the KV cache,
//! sampling each token, streaming text out, and stopping on end-of-generation tokens, stop
//! strings, the token limit or a full context.

use crate::draft::{draft_from, DraftModel, Speculation};
use crate::draft_policy::DraftPolicy;
use crate::sampler::{Logprobs, Sampler, SamplerConfig};
use crate::speculative::{verify_sampled, DraftProbs};
use crate::stop::{StopMatcher, StopOutcome};
use crate::GenerateError;
use model::{KvCache, Llama, Logits, ModelError, Scratch};
use std::time::{Duration, Instant};
use tokenizer::{StreamDecoder, Tokenizer};

/// What to generate and how to choose tokens.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// Strings that end generation when they appear in the text; they are never emitted.
    pub stop: Vec<String>,
    /// How tokens are chosen.
    pub sampler: SamplerConfig,
    /// Speculative decoding: how tokens are drafted (not used when log-probabilities are asked
    /// for). Greedy output is unchanged by it; sampled output keeps its distribution.
    pub speculative: Option<Speculation>,
    /// Keep generating past end-of-generation tokens (they are emitted as text like any other):
    /// for benchmarks that need a fixed number of tokens.
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_tokens: 256, stop: Vec::new(), sampler: SamplerConfig::default(), speculative: None, ignore_eos: false }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token (EOS).
    EndOfGeneration,
    /// A stop string appeared in the text.
    StopString,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The KV cache is full.
    ContextFull,
    /// The text callback asked to stop.
    Cancelled,
}

/// The result of one generation.
#[derive(Clone, Debug)]
pub struct Generation {
    /// Generated token ids (an end-of-generation token included when it ended generation).
    pub tokens: Vec<u32>,
    /// The emitted text (stop strings excluded).
    pub text: String,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// Prompt tokens evaluated in the prefill (those not already in the cache).
    pub prompt_tokens: usize,
    /// Time spent in the prefill.
    pub prefill_time: Duration,
    /// Time spent decoding (from the first sampled token to the end).
    pub decode_time: Duration,
    /// Tokens proposed by speculative drafting.
    pub drafted: usize,
    /// Drafted tokens that verification accepted.
    pub accepted: usize,
    /// Forward calls that verified drafts.
    pub verify_calls: usize,
    /// Decoding steps that did not try to draft, backing off after drafts kept being rejected
    /// ([`DraftPolicy`]); prompt lookup might have found no match at some of them anyway.
    pub backoff_steps: usize,
    /// Log-probabilities of each generated token and its top alternatives, when the sampler
    /// asks for them ([`SamplerConfig::logprobs`] > 0); one entry per token of `tokens`.
    pub logprobs: Vec<Logprobs>,
}

/// The output side of one sequence: decides when generation ends (end-of-generation token, stop
/// string, token limit, cancellation) and turns tokens into text. Shared by every generation
/// loop (the server's engine too) so they all end and emit alike.
pub struct Emitter {
    stops: StopMatcher,
    decoder: StreamDecoder,
    max_tokens: usize,
    ignore_eos: bool,
    decode_start: Instant,
    /// The result so far.
    pub out: Generation,
}

impl Emitter {
    /// The output side of a sequence generated with `options` after `prompt_tokens` prompt tokens
    /// evaluated in `prefill_time`.
    pub fn new(options: &GenerateOptions, prompt_tokens: usize, prefill_time: Duration) -> Emitter {
        Emitter {
            stops: StopMatcher::new(options.stop.clone()),
            decoder: StreamDecoder::new(),
            max_tokens: options.max_tokens,
            ignore_eos: options.ignore_eos,
            decode_start: Instant::now(),
            out: Generation {
                tokens: Vec::new(),
                text: String::new(),
                stop_reason: StopReason::MaxTokens,
                prompt_tokens,
                prefill_time,
                decode_time: Duration::ZERO,
                drafted: 0,
                accepted: 0,
                verify_calls: 0,
                backoff_steps: 0,
                logprobs: Vec::new(),
            },
        }
    }

    /// Whether no token may be generated at all (`max_tokens` is 0).
    pub fn is_full(&self) -> bool {
        self.out.tokens.len() >= self.max_tokens
    }

    /// Takes the next decided token; `false` when generation ends with it (the reason is set).
    pub fn push(&mut self, tokenizer: &Tokenizer, token: u32, on_text: &mut dyn FnMut(&str) -> bool) -> bool {
        self.out.tokens.push(token);
        if !self.ignore_eos && tokenizer.is_end_of_generation(token) {
            self.out.stop_reason = StopReason::EndOfGeneration;
            return false;
        }
        let piece = self.decoder.push(tokenizer, token);
        match self.stops.push(&piece) {
            StopOutcome::Stopped(text) => {
                self.emit(&text, on_text);
                self.out.stop_reason = StopReason::StopString;
                return false;
            }
            StopOutcome::Continue(text) => {
                if !self.emit(&text, on_text) {
                    self.out.stop_reason = StopReason::Cancelled;
                    return false;
                }
            }
        }
        if self.out.tokens.len() >= self.max_tokens {
            self.out.stop_reason = StopReason::MaxTokens;
            return false;
        }
        true
    }

    fn emit(&mut self, text: &str, on_text: &mut dyn FnMut(&str) -> bool) -> bool {
        self.out.text.push_str(text);
        text.is_empty() || on_text(text)
    }

    /// Ends generation: flushes what the decoder and the stop matcher held back (unless a stop
    /// string or the caller ended it) and returns the result.
    pub fn finish(mut self, on_text: &mut dyn FnMut(&str) -> bool) -> Generation {
        if !matches!(self.out.stop_reason, StopReason::StopString | StopReason::Cancelled) {
            let tail = self.decoder.finish();
            let text = match self.stops.push(&tail) {
                StopOutcome::Stopped(text) => {
                    self.out.stop_reason = StopReason::StopString;
                    text
                }
                StopOutcome::Continue(mut text) => {
                    text.push_str(&self.stops.finish());
                    text
                }
            };
            self.emit(&text, on_text);
        }
        self.out.decode_time = self.decode_start.elapsed();
        self.out
    }
}

/// A sequence being generated: the model's view (KV cache, scratch) plus the tokens it holds.
///
/// A session keeps its cache between calls, so a chat appends each turn instead of evaluating the
/// whole conversation again: [`Session::generate`] reuses the longest common prefix of the tokens
/// already in the cache and the new prompt.
pub struct Session<'m> {
    model: &'m Llama,
    cache: KvCache,
    scratch: Scratch,
    /// The tokens whose keys and values the cache holds, in order.
    tokens: Vec<u32>,
    /// The draft model of [`Speculation::DraftModel`], when the session has one.
    draft: Option<DraftModel<'m>>,
}

impl<'m> Session<'m> {
    /// A session with room for `n_ctx` positions, evaluating prompts `batch` tokens at a time.
    pub fn new(model: &'m Llama, n_ctx: usize, batch: usize) -> Result<Session<'m>, GenerateError> {
        let batch = batch.min(n_ctx).max(1);
        let cache = model.new_cache(n_ctx)?;
        let scratch = model.new_scratch(batch, n_ctx)?;
        // Room for every position up front, so the per-token push never reallocates.
        let mut tokens = Vec::new();
        tokens.try_reserve_exact(n_ctx).map_err(|_| GenerateError::InvalidArgument(format!("no memory for a context of {n_ctx} tokens")))?;
        Ok(Session { model, cache, scratch, tokens, draft: None })
    }

    /// A session that can also draft with `draft` ([`Speculation::DraftModel`]): a smaller model
    /// with the same vocabulary, or the model's own first layers. It keeps a cache of its own.
    pub fn with_draft_model(model: &'m Llama, draft: &'m Llama, n_ctx: usize, batch: usize) -> Result<Session<'m>, GenerateError> {
        let mut session = Session::new(model, n_ctx, batch)?;
        session.draft = Some(DraftModel::new(draft, model, n_ctx, batch.min(n_ctx).max(1))?);
        Ok(session)
    }

    /// The tokens the cache holds.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The most positions the session holds.
    pub fn n_ctx(&self) -> usize {
        self.cache.capacity()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.cache.clear();
        self.tokens.clear();
        if let Some(d) = self.draft.as_mut() {
            d.clear();
        }
    }

    /// Runs `tokens` and chooses the next one: greedy decoding takes the argmax found inside the
    /// output head, other samplers read the logits.
    fn step(&mut self, tokens: &[u32], sampler: &mut Sampler, logprobs: &mut Vec<Logprobs>) -> Result<u32, GenerateError> {
        if sampler.is_plain_greedy() {
            return Ok(self.model.forward_greedy(tokens, &mut self.cache, &mut self.scratch)?);
        }
        let logits = self.model.forward(tokens, &mut self.cache, &mut self.scratch, Logits::Last)?;
        let (token, lp) = sampler.sample_with_logprobs(logits);
        logprobs.extend(lp);
        Ok(token)
    }

    /// Generates a continuation of `prompt` (the whole sequence: earlier turns included).
    ///
    /// `on_text` receives each piece of text as soon as it is final (complete UTF-8, not part of a
    /// possible stop string); returning `false` cancels.
    pub fn generate(
        &mut self,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        options: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, GenerateError> {
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if prompt.len() > self.cache.capacity() {
            return Err(GenerateError::Model(ModelError::ContextFull { capacity: self.cache.capacity(), needed: prompt.len() }));
        }
        let mut sampler = Sampler::new(options.sampler.clone())?;

        // Reuse the cached prefix; at least the last prompt token is evaluated for its logits.
        let common = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1);
        self.cache.truncate(common);
        self.tokens.truncate(common);
        let started = Instant::now();
        // The penalties look back over the prompt too, as llama.cpp's do.
        for &token in prompt {
            sampler.accept(token);
        }
        let mut logprobs = Vec::new();
        let mut next = self.step(&prompt[common..], &mut sampler, &mut logprobs)?;
        self.tokens.extend_from_slice(&prompt[common..]);
        let mut em = Emitter::new(options, prompt.len() - common, started.elapsed());

        // Log-probabilities are reported per sampled token, which speculation does not give.
        let speculation = options.speculative.filter(|_| options.sampler.logprobs == 0);
        if let Some(Speculation::DraftModel { .. }) = speculation {
            match self.draft.as_mut() {
                Some(d) => d.start(&options.sampler)?,
                None => {
                    return Err(GenerateError::InvalidArgument(
                        "speculative decoding with a draft model needs a session made with Session::with_draft_model".into(),
                    ))
                }
            }
        }
        // How many tokens to draft: fewer, or none for a while, when drafts keep being rejected.
        let mut policy = speculation.map(|s| DraftPolicy::new(s.draft_len()));
        let greedy = sampler.is_plain_greedy();
        let v = self.model.config.n_vocab;
        // Tokens decided but not yet emitted; all but the last are already in the cache.
        let mut pending: Vec<u32> = vec![next];
        let mut pos = 0;
        let (mut draft, mut batch, mut probs) = (Vec::new(), Vec::new(), Vec::new()); // reused across steps
        while !em.is_full() {
            next = pending[pos];
            if !em.push(tokenizer, next, on_text) {
                break;
            }
            sampler.accept(next);
            if pos + 1 < pending.len() {
                // Already verified and in the cache.
                pos += 1;
                continue;
            }
            if self.cache.len() == self.cache.capacity() {
                em.out.stop_reason = StopReason::ContextFull;
                break;
            }
            let token = next;
            pending.clear();
            pos = 0;
            // Drafts must fit the cache, the token limit and one verification batch with the token.
            let room = (self.cache.capacity() - self.cache.len() - 1)
                .min(options.max_tokens - em.out.tokens.len())
                .min(self.scratch.max_tokens().saturating_sub(1));
            draft.clear();
            let want = policy.as_mut().map_or(0, |p| p.next_len()).min(room);
            if want > 0 {
                self.tokens.push(token);
                let proposed = match speculation {
                    Some(Speculation::PromptLookup(l)) => {
                        draft.extend_from_slice(draft_from(&self.tokens, l, want));
                        Ok(())
                    }
                    Some(Speculation::DraftModel { .. }) => match self.draft.as_mut() {
                        Some(d) => d.propose(&self.tokens, want, &mut draft),
                        None => Ok(()),
                    },
                    None => Ok(()),
                };
                self.tokens.pop();
                proposed?;
            }
            if !draft.is_empty() {
                // Verify [token, draft...] in one call; each row is what step-by-step decoding
                // would compute. Keep the accepted prefix of the draft, then the token chosen
                // after it.
                let start = self.tokens.len();
                batch.clear();
                batch.push(token);
                batch.extend_from_slice(&draft);
                let k = draft.len();
                let logits = self.model.forward_verify(&batch, &mut self.cache, &mut self.scratch)?;
                // Only now is the token in the cache (a failed call leaves both as they were).
                self.tokens.push(token);
                let (accepted, chosen) = if greedy {
                    // Greedy: keep drafts up to the first one the argmax would not have chosen.
                    let mut accepted = 0;
                    let mut chosen = crate::sampler::argmax(&logits[..v]);
                    while accepted < k && draft[accepted] == chosen {
                        accepted += 1;
                        chosen = crate::sampler::argmax(&logits[accepted * v..(accepted + 1) * v]);
                    }
                    (accepted, chosen)
                } else {
                    // Sampling: the standard acceptance rule keeps the target distribution.
                    probs.resize((k + 1) * v, 0.0);
                    sampler.distributions_after_drafts(logits, &draft, &mut probs);
                    // A draft model that sampled gave its distributions; a greedy one (temperature
                    // 0 with penalties makes the target sample but not the draft) is one-hot.
                    let q = match (speculation, self.draft.as_ref()) {
                        (Some(Speculation::DraftModel { .. }), Some(d)) if d.sampled() && d.q.len() >= k * v => DraftProbs::Rows(&d.q[..k * v]),
                        _ => DraftProbs::OneHot,
                    };
                    let verdict = verify_sampled(&probs, q, &draft, v, sampler.rng_mut())?;
                    (verdict.accepted, verdict.next)
                };
                self.cache.truncate(start + 1 + accepted);
                self.tokens.extend_from_slice(&draft[..accepted]);
                pending.extend_from_slice(&draft[..accepted]);
                pending.push(chosen);
                em.out.drafted += k;
                em.out.accepted += accepted;
                em.out.verify_calls += 1;
                if let Some(p) = policy.as_mut() {
                    p.record(k, accepted);
                }
            } else {
                let following = self.step(&[token], &mut sampler, &mut logprobs)?;
                self.tokens.push(token);
                pending.push(following);
            }
        }
        let mut out = em.finish(on_text);
        out.backoff_steps = policy.map_or(0, |p| p.skipped());
        logprobs.truncate(out.tokens.len());
        out.logprobs = logprobs;
        Ok(out)
    }
}
