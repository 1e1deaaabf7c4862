//! The generation loop: prefill the prompt, then decode one token at a time with the KV cache,
//! sampling each token, streaming text out, and stopping on end-of-generation tokens, stop
//! strings, the token limit or a full context.

use crate::sampler::{Sampler, SamplerConfig};
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
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_tokens: 256, stop: Vec::new(), sampler: SamplerConfig::default() }
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
        Ok(Session { model, cache, scratch, tokens })
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
    }

    /// Runs `tokens` and chooses the next one: greedy decoding takes the argmax found inside the
    /// output head, other samplers read the logits.
    fn step(&mut self, tokens: &[u32], sampler: &mut Sampler) -> Result<u32, GenerateError> {
        if sampler.is_plain_greedy() {
            return Ok(self.model.forward_greedy(tokens, &mut self.cache, &mut self.scratch)?);
        }
        let logits = self.model.forward(tokens, &mut self.cache, &mut self.scratch, Logits::Last)?;
        Ok(sampler.sample(logits))
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
        let mut stops = StopMatcher::new(options.stop.clone());
        let mut decoder = StreamDecoder::new();

        // Reuse the cached prefix; at least the last prompt token is evaluated for its logits.
        let common = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1);
        self.cache.truncate(common);
        self.tokens.truncate(common);
        let started = Instant::now();
        // The penalties look back over the prompt too, as llama.cpp's do.
        for &token in prompt {
            sampler.accept(token);
        }
        let mut next = self.step(&prompt[common..], &mut sampler)?;
        self.tokens.extend_from_slice(&prompt[common..]);
        let prefill_time = started.elapsed();
        let decode_start = Instant::now();

        let mut out = Generation {
            tokens: Vec::new(),
            text: String::new(),
            stop_reason: StopReason::MaxTokens,
            prompt_tokens: prompt.len() - common,
            prefill_time,
            decode_time: Duration::ZERO,
        };
        let mut emit = |text: &str, out: &mut Generation| -> bool {
            out.text.push_str(text);
            text.is_empty() || on_text(text)
        };
        while out.tokens.len() < options.max_tokens {
            out.tokens.push(next);
            if tokenizer.is_end_of_generation(next) {
                out.stop_reason = StopReason::EndOfGeneration;
                break;
            }
            let piece = decoder.push(tokenizer, next);
            match stops.push(&piece) {
                StopOutcome::Stopped(text) => {
                    emit(&text, &mut out);
                    out.stop_reason = StopReason::StopString;
                    break;
                }
                StopOutcome::Continue(text) => {
                    if !emit(&text, &mut out) {
                        out.stop_reason = StopReason::Cancelled;
                        break;
                    }
                }
            }
            if out.tokens.len() == options.max_tokens {
                break;
            }
            if self.cache.len() == self.cache.capacity() {
                out.stop_reason = StopReason::ContextFull;
                break;
            }
            let token = next;
            sampler.accept(token);
            next = self.step(&[token], &mut sampler)?;
            self.tokens.push(token);
        }
        if !matches!(out.stop_reason, StopReason::StopString | StopReason::Cancelled) {
            // Flush what the decoder and the stop matcher held back.
            let tail = decoder.finish();
            let text = match stops.push(&tail) {
                StopOutcome::Stopped(text) => {
                    out.stop_reason = StopReason::StopString;
                    text
                }
                StopOutcome::Continue(mut text) => {
                    text.push_str(&stops.finish());
                    text
                }
            };
            emit(&text, &mut out);
        }
        out.decode_time = decode_start.elapsed();
        Ok(out)
    }
}
