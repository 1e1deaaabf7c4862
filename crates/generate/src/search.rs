//! Beam search over a model: the state machine of [`crate::beam`] driving forward calls.
//!
//! The prompt is evaluated once; the running beams are sequences of one pool of KV blocks and
//! are decoded together, one forward call per step. When a step keeps a beam's child, the child
//! is a fork of the parent's sequence: it shares the parent's blocks (the prompt's included) and
//! copies only the partly filled last block when it writes (copy on write), so nothing is ever
//! evaluated twice.

use crate::beam::{BeamConfig, BeamSearch, FinishReason};
use crate::GenerateError;
use model::{Llama, Logits, ModelError, SeqCache, SeqTokens};
use tokenizer::Tokenizer;

/// One returned hypothesis.
#[derive(Clone, Debug, PartialEq)]
pub struct BeamResult {
    /// Generated tokens (an ending EOS included).
    pub tokens: Vec<u32>,
    /// Their text, without the EOS and without a stop string and what follows it.
    pub text: String,
    /// The summed log-probability normalised by the length penalty (what hypotheses are ranked by).
    pub score: f32,
    /// The summed log-probability.
    pub sum_logprobs: f32,
    /// Why it ended.
    pub finish: FinishReason,
}

/// Beam search continuing `prompt`: the best `config.num_return_sequences` hypotheses, highest
/// score first. A hypothesis ends at an id of `config.eos`, when its text contains one of `stop`
/// (then the text is cut before it), or at `config.max_new_tokens` (capped by the context of
/// `n_ctx` positions). The prompt is evaluated `prefill_chunk` tokens per call.
pub fn beam_search(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    config: &BeamConfig,
    stop: &[String],
    n_ctx: usize,
    prefill_chunk: usize,
) -> Result<Vec<BeamResult>, GenerateError> {
    config.validate()?;
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if prompt.len() >= n_ctx {
        return Err(ModelError::ContextFull { capacity: n_ctx, needed: prompt.len() + 1 }.into());
    }
    // The last token of a hypothesis is never evaluated, so a hypothesis may reach n_ctx + 1 -
    // prompt positions; keep it simple and within the context.
    let mut config = config.clone();
    config.max_new_tokens = config.max_new_tokens.min(n_ctx - prompt.len());
    let num_beams = config.num_beams;
    let v = model.config.n_vocab;
    let mut search = BeamSearch::new(config)?;

    // Blocks for every beam to own a whole sequence, plus the prompt's while beams fork from it.
    let mut pool = model.new_pool(num_beams + 1, n_ctx)?;
    let chunk = prefill_chunk.min(n_ctx).max(1);
    let mut scratch = model.new_scratch(chunk.max(num_beams), n_ctx)?;
    let mut beams: Vec<SeqCache> = vec![pool.sequence()];
    let n_chunks = prompt.len().div_ceil(chunk);
    for (i, part) in prompt.chunks(chunk).enumerate() {
        let logits = if i + 1 == n_chunks { Logits::Last } else { Logits::Skip };
        model.forward_seqs(&mut [SeqTokens { seq: &mut beams[0], tokens: part, logits }], &mut pool, &mut scratch)?;
    }
    let mut rows: Vec<f32> = scratch.logits(v).to_vec(); // (running beams, V)
                                                         // Tokens of each running beam, for the stop strings.
    let mut generated: Vec<Vec<u32>> = vec![Vec::new()];
    let mut candidate = Vec::new();
    let mut next_beams: Vec<SeqCache> = Vec::with_capacity(num_beams);
    let mut tokens: Vec<u32> = Vec::with_capacity(num_beams);
    loop {
        let mut is_final = |beam: usize, token: u32| {
            if stop.is_empty() {
                return false;
            }
            candidate.clear();
            candidate.extend_from_slice(&generated[beam]);
            candidate.push(token);
            let text = tokenizer.decode(&candidate, false);
            stop.iter().any(|s| text.contains(s.as_str()))
        };
        let forks = search.step(&rows, v, &mut is_final)?.to_vec();
        if forks.is_empty() {
            break;
        }
        // Each new beam forks its parent's sequence; then the old beams are let go.
        next_beams.clear();
        tokens.clear();
        let mut next_generated = Vec::with_capacity(forks.len());
        for &(parent, token) in &forks {
            next_beams.push(pool.fork(&beams[parent]));
            tokens.push(token);
            if !stop.is_empty() {
                let mut g = generated[parent].clone();
                g.push(token);
                next_generated.push(g);
            }
        }
        for b in &mut beams {
            pool.release(b);
        }
        std::mem::swap(&mut beams, &mut next_beams);
        generated = next_generated;
        let mut batch: Vec<SeqTokens> =
            beams.iter_mut().zip(&tokens).map(|(seq, t)| SeqTokens { seq, tokens: std::slice::from_ref(t), logits: Logits::Last }).collect();
        let logits = model.forward_seqs(&mut batch, &mut pool, &mut scratch)?;
        rows.clear();
        rows.extend_from_slice(logits);
    }
    for b in &mut beams {
        pool.release(b);
    }
    Ok(search.finish().into_iter().map(|h| BeamResult::from_hypothesis(tokenizer, stop, h)).collect())
}

impl BeamResult {
    /// A finished hypothesis as returned: its text without the EOS, cut before the earliest
    /// stop string.
    pub fn from_hypothesis(tokenizer: &Tokenizer, stop: &[String], h: crate::beam::Hypothesis) -> BeamResult {
        let body = match h.finish {
            FinishReason::Eos => &h.tokens[..h.tokens.len().saturating_sub(1)],
            _ => &h.tokens[..],
        };
        let mut text = tokenizer.decode(body, false);
        // Cut at the earliest stop string.
        if let Some(cut) = stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(cut);
        }
        BeamResult { tokens: h.tokens, text, score: h.score, sum_logprobs: h.sum_logprobs, finish: h.finish }
    }
}
