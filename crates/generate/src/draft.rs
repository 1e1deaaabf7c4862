//! Drafters for speculative decoding: prompt lookup (copy what followed the latest earlier
//! occurrence of the last n-gram) and a draft model (a smaller model with the same vocabulary,
//! or the target's own first layers) that proposes tokens one at a time with its own KV cache.
//!
//! A drafter proposes k tokens and, for sampled decoding, the distributions q_0..q_{k-1} it drew
//! them from; the session verifies them against the target in one forward call
//! ([`crate::speculative`] for the acceptance rule).

use crate::rng::Rng;
use crate::sampler::{Sampler, SamplerConfig};
use crate::GenerateError;
use model::{KvCache, Llama, Logits, Scratch};

/// The shortest n-gram match prompt lookup drafts from, by default: a longer match is likelier to
/// be followed by what the model goes on to write.
///
/// Replaying the greedy tokens of SmolLM2-135M on 7 chat answers that write new text (200 tokens
/// each, repeating themselves at times), after a longest match of n tokens the first drafted token
/// was accepted / all of up to 4 were: n = 1: 18% / 9%, n = 2: 43% / 23%, n = 3: 60% / 35%,
/// n = 4: 60% / 42%, n >= 8: 96% / 89%; on the copy benchmark n = 3: 53% / 43%, n = 4: 83% / 62%.
/// A drafted token pays only when it is accepted more often than its share of the verification
/// costs: 0.1-0.3 of a plain step measured with 2 threads, up to 0.9 with one (a step is then less
/// bound by memory). Falling back to 1-token matches ran a chat answer at 0.73x plain decoding.
/// Replayed under three verification cost curves (two measured, one linear), a minimum of 3 gave
/// 0.95-0.99x on the worst of 12 chat answers, 1.09-1.28x on their geometric mean and 1.28-1.95x
/// on the copy task; a minimum of 4 gave 0.96-1.00x, 1.09-1.25x and 1.39-2.06x.
pub const MIN_NGRAM: usize = 4;

/// Prompt-lookup (n-gram) drafting: the tokens that followed the latest earlier occurrence of the
/// sequence's last n tokens (the longest n from `ngram` down to `min_ngram` that matches) are
/// proposed as a draft of up to `draft_len` tokens, verified in one forward call. It pays off
/// when the output repeats its input (editing, quoting, extraction) or itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptLookup {
    /// Longest n-gram to match: the latest occurrence of a longer match is the likelier source
    /// of what comes next.
    pub ngram: usize,
    /// Shortest n-gram to match ([`MIN_NGRAM`] by default); nothing is drafted from shorter
    /// matches, nor at all when it exceeds `ngram`.
    pub min_ngram: usize,
    /// Most tokens drafted per step; [`crate::draft_policy::DraftPolicy`] drafts fewer while
    /// drafts are rejected.
    pub draft_len: usize,
}

impl Default for PromptLookup {
    fn default() -> Self {
        PromptLookup { ngram: 6, min_ngram: MIN_NGRAM, draft_len: 4 }
    }
}

/// How speculative decoding drafts tokens. Greedy output is identical with and without it (the
/// verification computes every position exactly as step-by-step decoding does); sampled output
/// follows the same distribution (speculative sampling), though not the same random draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speculation {
    /// Copy from earlier text.
    PromptLookup(PromptLookup),
    /// Ask the draft model given to [`crate::Session::with_draft_model`] for up to `draft_len`
    /// tokens per step.
    DraftModel {
        /// Most tokens drafted per step; [`crate::draft_policy::DraftPolicy`] drafts fewer while
        /// drafts are rejected.
        draft_len: usize,
    },
}

impl Speculation {
    /// Most tokens drafted per step.
    pub fn draft_len(self) -> usize {
        match self {
            Speculation::PromptLookup(l) => l.draft_len,
            Speculation::DraftModel { draft_len } => draft_len,
        }
    }
}

/// The draft for `history`: the tokens after the latest earlier match of its last n tokens, for
/// the longest n from `lookup.ngram` down to `lookup.min_ngram` that matches, at most `max` of
/// them. Empty when nothing matches.
///
/// One pass from the end: at each earlier position, the length of the common suffix with the
/// whole history (capped at `ngram`); the first position reaching the longest length is the latest
/// occurrence of the longest match. A chat answer rarely matches, and then a pass per n would read
/// the whole history `ngram - min_ngram + 1` times per token.
pub(crate) fn draft_from(history: &[u32], lookup: PromptLookup, max: usize) -> &[u32] {
    let len = history.len();
    let (mut best, mut from) = (0, 0);
    // `end` is the last token of a candidate match; a token must follow it, so end < len - 1.
    for end in (0..len.saturating_sub(1)).rev() {
        let n = (0..lookup.ngram.min(end + 1)).take_while(|&i| history[end - i] == history[len - 1 - i]).count();
        if n > best {
            (best, from) = (n, end + 1);
            if n == lookup.ngram {
                break;
            }
        }
    }
    if best == 0 || best < lookup.min_ngram {
        return &[];
    }
    &history[from..(from + max).min(len)]
}

/// A draft model with its own cache, kept in step with the session's tokens.
pub(crate) struct DraftModel<'m> {
    model: &'m Llama,
    cache: KvCache,
    scratch: Scratch,
    /// The tokens whose keys and values the draft cache holds.
    tokens: Vec<u32>,
    /// The sampler the draft draws with: the target's settings without penalties (any q is
    /// valid for speculative sampling; this one needs no history) and its own random stream.
    sampler: Option<Sampler>,
    rng_seed: u64,
    /// (k, V) the distributions of the last proposal.
    pub(crate) q: Vec<f32>,
}

impl<'m> DraftModel<'m> {
    pub(crate) fn new(model: &'m Llama, target: &Llama, n_ctx: usize, batch: usize) -> Result<DraftModel<'m>, GenerateError> {
        if model.config.n_vocab != target.config.n_vocab {
            return Err(GenerateError::InvalidArgument(format!(
                "the draft model has {} tokens in its vocabulary and the model {}: a draft model must share the model's vocabulary",
                model.config.n_vocab, target.config.n_vocab
            )));
        }
        Ok(DraftModel {
            model,
            cache: model.new_cache(n_ctx)?,
            scratch: model.new_scratch(batch, n_ctx)?,
            tokens: Vec::new(),
            sampler: None,
            rng_seed: 0,
            q: Vec::new(),
        })
    }

    /// Whether the last proposal was drawn from distributions (left in `q`), not greedy.
    pub(crate) fn sampled(&self) -> bool {
        self.sampler.as_ref().is_some_and(|s| !s.is_plain_greedy())
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.cache.clear();
        self.tokens.clear();
    }

    /// Prepares for a generation with `config`.
    pub(crate) fn start(&mut self, config: &SamplerConfig) -> Result<(), GenerateError> {
        let draft_config = SamplerConfig { repeat_penalty: 1.0, frequency_penalty: 0.0, presence_penalty: 0.0, logprobs: 0, ..config.clone() };
        // A stream of its own, derived from the seed, so that drafts never shift the target's.
        self.rng_seed = Rng::new(config.seed ^ 0x5eed_d4af_7000_0001).next_u64();
        let mut sampler = Sampler::new(SamplerConfig { seed: self.rng_seed, ..draft_config })?;
        sampler.reset_history();
        self.sampler = Some(sampler);
        Ok(())
    }

    /// Proposes up to `k` tokens to follow `history` (the session's tokens and the token just
    /// decided); the distributions they were drawn from are left in `self.q` (k, V) when
    /// sampling. Greedy drafts are the draft model's argmax.
    pub(crate) fn propose(&mut self, history: &[u32], k: usize, out: &mut Vec<u32>) -> Result<(), GenerateError> {
        out.clear();
        let Some(sampler) = self.sampler.as_mut() else { return Ok(()) };
        // Reuse what the draft cache holds of the history; evaluate the rest.
        let common = self.tokens.iter().zip(history).take_while(|(a, b)| a == b).count().min(history.len() - 1);
        self.cache.truncate(common);
        self.tokens.truncate(common);
        let room = self.cache.capacity().saturating_sub(history.len());
        let k = k.min(room);
        if k == 0 {
            return Ok(());
        }
        let v = self.model.config.n_vocab;
        let greedy = sampler.is_plain_greedy();
        if !greedy {
            self.q.resize(k * v, 0.0);
        }
        let q = &mut self.q;
        let mut choose = |i: usize, logits: &[f32]| {
            if greedy {
                crate::sampler::argmax(logits)
            } else {
                let q = &mut q[i * v..(i + 1) * v];
                sampler.distribution(logits, q);
                sampler.draw_from(q)
            }
        };
        let logits = self.model.forward(&history[common..], &mut self.cache, &mut self.scratch, Logits::Last)?;
        self.tokens.extend_from_slice(&history[common..]);
        let mut token = choose(0, logits);
        out.push(token);
        for i in 1..k {
            let logits = self.model.forward(&[token], &mut self.cache, &mut self.scratch, Logits::Last)?;
            self.tokens.push(token);
            token = choose(i, logits);
            out.push(token);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_is_what_followed_the_latest_earlier_match() {
        let l = PromptLookup { ngram: 2, min_ngram: 1, draft_len: 3 };
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

    #[test]
    fn matches_shorter_than_the_minimum_draft_nothing() {
        // The last token 3 occurred before (followed by 9), the bigram 4 3 never did.
        let h = [1, 2, 3, 9, 4, 3];
        let l = PromptLookup { ngram: 3, min_ngram: 2, draft_len: 4 };
        assert!(draft_from(&h, l, 4).is_empty(), "a 1-token match is below the minimum");
        // The trigram 7 8 9 matches; with a longer maximum the latest 4-gram match wins over a
        // later trigram match: 6 7 8 9 was followed by 1, the later 7 8 9 alone by 2.
        let h = [6, 7, 8, 9, 1, 5, 7, 8, 9, 2, 6, 7, 8, 9];
        assert_eq!(draft_from(&h, PromptLookup { ngram: 3, ..l }, 2), &[2, 6]);
        assert_eq!(draft_from(&h, PromptLookup { ngram: 4, ..l }, 2), &[1, 5]);
        // The default: matches of MIN_NGRAM = 4 tokens draft, shorter ones do not.
        let d = PromptLookup::default();
        assert_eq!(d.min_ngram, MIN_NGRAM);
        assert_eq!(draft_from(&[3, 4, 5, 6, 7, 3, 4, 5, 6], d, 4), &[7, 3, 4, 5]);
        assert!(draft_from(&[4, 5, 6, 7, 4, 5, 6], d, 4).is_empty());
        // A minimum above the maximum drafts nothing.
        assert!(draft_from(&[4, 5, 6, 7, 4, 5, 6], PromptLookup { ngram: 2, min_ngram: 3, draft_len: 4 }, 4).is_empty());
    }

    /// The draft as the definition says it: for n from the longest down, the latest earlier
    /// occurrence of the last n tokens with a token after it (a pass over the history per n).
    fn draft_by_definition(history: &[u32], lookup: PromptLookup, max: usize) -> &[u32] {
        let len = history.len();
        for n in (lookup.min_ngram.max(1)..=lookup.ngram.min(len.saturating_sub(1))).rev() {
            let tail = &history[len - n..];
            if let Some(start) = (0..len - n).rev().find(|&j| &history[j..j + n] == tail) {
                return &history[start + n..(start + n + max).min(len)];
            }
        }
        &[]
    }

    #[test]
    fn the_one_pass_search_finds_the_draft_of_the_definition() {
        // Histories over 2 to 4 symbols, so that matches of every length occur.
        let mut rng = Rng::new(11);
        for case in 0..3000 {
            let symbols = 2 + case % 3;
            let len = (rng.next_u64() % 40) as usize;
            let history: Vec<u32> = (0..len).map(|_| (rng.next_u64() % symbols as u64) as u32).collect();
            let ngram = 1 + (rng.next_u64() % 6) as usize;
            let min_ngram = 1 + (rng.next_u64() % ngram as u64) as usize;
            let lookup = PromptLookup { ngram, min_ngram, draft_len: 4 };
            let max = 1 + (rng.next_u64() % 5) as usize;
            assert_eq!(draft_from(&history, lookup, max), draft_by_definition(&history, lookup, max), "{history:?} {lookup:?} max {max}");
        }
    }
}
