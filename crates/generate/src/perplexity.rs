//! Perplexity by llama.cpp's method: split the tokens into non-overlapping chunks of `n_ctx`,
//! evaluate each chunk from an empty cache, and average the negative log-likelihood of the
//! second half of every chunk only (so each scored token has at least n_ctx/2 tokens of context).
//! PPL = exp(mean NLL). A text shorter than two chunks is refused, as llama-perplexity refuses it;
//! tokens after the last whole chunk are not scored, as there.

use crate::GenerateError;
use kernels::loss::cross_entropy_row;
use model::{Llama, Logits};

/// The outcome of a perplexity run.
#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood).
    pub ppl: f64,
    /// Tokens in the text.
    pub tokens: usize,
    /// Chunks evaluated (tokens / n_ctx, rounded down).
    pub chunks: usize,
    /// Predictions scored.
    pub scored: usize,
}

/// Computes perplexity over `tokens` with chunks of `n_ctx`; `on_chunk(done, total, ppl_so_far)`
/// reports progress after each chunk. With `bos` (models that add BOS), the first token of every
/// chunk is replaced by it, as llama.cpp does.
pub fn perplexity(
    model: &Llama,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
    on_chunk: &mut dyn FnMut(usize, usize, f64),
) -> Result<Perplexity, GenerateError> {
    if n_ctx < 4 {
        return Err(GenerateError::InvalidArgument(format!("the context size must be at least 4, got {n_ctx}")));
    }
    let chunks = tokens.len() / n_ctx;
    // llama-perplexity refuses a text shorter than two chunks; so do we, so that the two report
    // perplexities over the same predictions or not at all.
    if chunks < 2 {
        return Err(GenerateError::InvalidArgument(format!(
            "the text has {} tokens, fewer than two chunks of {n_ctx} ({} tokens), the least llama-perplexity accepts: use a longer text or --ctx {} or less",
            tokens.len(),
            2 * n_ctx,
            (tokens.len() / 2).max(4)
        )));
    }
    // Only the first chunks when asked (llama-perplexity's --chunks), after the length check
    // above, as llama-perplexity orders them.
    let chunks = match max_chunks {
        Some(0) => return Err(GenerateError::InvalidArgument("--chunks must be at least 1".into())),
        Some(m) => chunks.min(m),
        None => chunks,
    };
    let v = model.config.n_vocab;
    let mut cache = model.new_cache(n_ctx)?;
    // The first half of a chunk only gives context: its logits are never scored (llama-perplexity
    // asks for none either), so it runs without the output head, and the scratch holds the half
    // whose rows are scored. (Every token gets the same bits in either batch.)
    let half = n_ctx / 2;
    let mut scratch = model.new_scratch(n_ctx - half, n_ctx)?;
    let (mut nll, mut scored) = (0.0f64, 0usize);
    let mut chunk = vec![0u32; n_ctx];
    for c in 0..chunks {
        chunk.copy_from_slice(&tokens[c * n_ctx..(c + 1) * n_ctx]);
        if let Some(bos) = bos {
            chunk[0] = bos;
        }
        cache.clear();
        model.forward(&chunk[..half], &mut cache, &mut scratch, Logits::Skip)?;
        let logits = model.forward(&chunk[half..], &mut cache, &mut scratch, Logits::All)?; // (n_ctx - half, V)
        for j in half..n_ctx - 1 {
            // The training loss's own code: next-token cross-entropy, row j against token j + 1.
            let row = j - half;
            nll += cross_entropy_row(&logits[row * v..(row + 1) * v], chunk[j + 1], 0.0, None);
            scored += 1;
        }
        on_chunk(c + 1, chunks, (nll / scored as f64).exp());
    }
    Ok(Perplexity { ppl: (nll / scored as f64).exp(), tokens: tokens.len(), chunks, scored })
}
