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
    /// Prompt-lookup speculative decoding (greedy decoding only; ignored when sampling).
    pub speculative: Option<PromptLookup>,
}

/// Prompt-lookup (n-gram) drafting: the tokens that followed the latest earlier occurrence of the
/// sequence's last `ngram` tokens are proposed as a draft of up to `draft_len` tokens, verified in
/// one forward call. Greedy output is identical with and without it (the verification computes
/// every position exactly as step-by-step decoding does); it pays off when the output repeats
/// its input (editing, quoting, extraction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptLookup {
    /// Longest n-gram to match; shorter ones are tried down to 1.
    pub ngram: usize,
    /// Most tokens drafted per step.
    pub draft_len: usize,
}

impl Default for PromptLookup {
    fn default() -> Self {
        PromptLookup { ngram: 3, draft_len: 4 }
    }
}

/// The draft for `history`: the tokens after the latest earlier match of its last n tokens
/// (n from `lookup.ngram` down to 1), at most `max` of them. Empty when nothing matches.
fn draft_from(history: &[u32], lookup: PromptLookup, max: usize) -> &[u32] {
    let len = history.len();
    for n in (1..=lookup.ngram.min(len.saturating_sub(1))).rev() {
        let tail = &history[len - n..];
        // Latest earlier occurrence that has at least one token after it.
        if let Some(start) = (0..len - n).rev().find(|&j| &history[j..j + n] == tail) {
            let from = start + n;
            return &history[from..(from + max).min(len)];
        }
    }
    &[]
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_tokens: 256, stop: Vec::new(), sampler: SamplerConfig::default(), speculative: None }
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
            drafted: 0,
            accepted: 0,
        };
        let lookup = options.speculative.filter(|_| sampler.is_plain_greedy());
        // Tokens decided but not yet emitted; all but the last are already in the cache.
        let mut pending: Vec<u32> = vec![next];
        let mut pos = 0;
        let (mut draft, mut batch) = (Vec::new(), Vec::new()); // reused across steps
        let mut emit = |text: &str, out: &mut Generation| -> bool {
            out.text.push_str(text);
            text.is_empty() || on_text(text)
        };
        while out.tokens.len() < options.max_tokens {
            next = pending[pos];
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
            sampler.accept(next);
            if pos + 1 < pending.len() {
                // Already verified and in the cache.
                pos += 1;
                continue;
            }
            if self.cache.len() == self.cache.capacity() {
                out.stop_reason = StopReason::ContextFull;
                break;
            }
            let token = next;
            pending.clear();
            pos = 0;
            let room = (self.cache.capacity() - self.cache.len() - 1).min(options.max_tokens - out.tokens.len());
            draft.clear();
            if let Some(l) = lookup {
                self.tokens.push(token);
                draft.extend_from_slice(draft_from(&self.tokens, l, l.draft_len.min(room)));
                self.tokens.pop();
            }
            if !draft.is_empty() {
                // Verify [token, draft...] in one call; keep the drafted tokens up to the first one
                // greedy decoding would not have chosen, then the token it chooses there.
                let start = self.tokens.len();
                self.tokens.push(token);
                batch.clear();
                batch.push(token);
                batch.extend_from_slice(&draft);
                let v = self.model.config.n_vocab;
                let logits = self.model.forward_verify(&batch, &mut self.cache, &mut self.scratch)?;
                let mut accepted = 0;
                let mut chosen = crate::sampler::argmax(&logits[..v]);
                while accepted < draft.len() && draft[accepted] == chosen {
                    accepted += 1;
                    chosen = crate::sampler::argmax(&logits[accepted * v..(accepted + 1) * v]);
                }
                self.cache.truncate(start + 1 + accepted);
                self.tokens.extend_from_slice(&draft[..accepted]);
                pending.extend_from_slice(&draft[..accepted]);
                pending.push(chosen);
                out.drafted += draft.len();
                out.accepted += accepted;
            } else {
                let following = self.step(&[token], &mut sampler)?;
                self.tokens.push(token);
                pending.push(following);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_is_what_followed_the_latest_earlier_match() {
        let l = PromptLookup { ngram: 2, draft_len: 3 };
        // ... 5 6 7 8 9 ... 5 6 | 1 2 ... 5 6 -> the latest earlier "5 6" is followed by 1 2
        let h = [5, 6, 7, 8, 9, 5, 6, 1, 2, 5, 6];
        assert_eq!(draft_from(&h, l, 3), &[1, 2, 5]);
        assert_eq!(draft_from(&h, l, 1), &[1]);
        // No bigram match: fall back to the last token alone.
        let h = [1, 2, 3, 9, 4, 3];
        assert_eq!(draft_from(&h, l, 2), &[9, 4]);
        // Nothing matches at all.
        assert!(draft_from(&[1, 2, 3], l, 4).is_empty());
        assert!(draft_from(&[], l, 4).is_empty());
        assert!(draft_from(&[7], l, 4).is_empty());
    }
}
