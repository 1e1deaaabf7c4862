//! `ferrolm perplexity`: perplexity of a text file, by llama.cpp's method.

use crate::args::RunArgs;
use crate::load::open_model;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

pub(crate) fn cmd_perplexity(run: &RunArgs, path: &PathBuf, ctx: usize, chunks: Option<usize>, json: bool) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
    let (model, tok, _) = open_model(run)?;
    if ctx < 4 || ctx > model.config.n_ctx_usable() {
        bail!("--ctx must be between 4 and {}, got {ctx}", model.config.context_bound());
    }
    // As llama-perplexity tokenizes: BOS first when the model adds one (its chunks are counted
    // from there), control tokens in the text left as text.
    let tokens = tok.encode_with_special(&text, false);
    let bos = if tok.add_bos() { tok.bos_id() } else { None };
    let bar = ProgressBar::new((tokens.len() / ctx).min(chunks.unwrap_or(usize::MAX)) as u64);
    bar.set_style(
        ProgressStyle::with_template("perplexity {bar:30} {pos}/{len} chunks  ppl {msg}  eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let result = generate::perplexity(&model, &tokens, ctx, bos, chunks, &mut |_, _, ppl| {
        bar.set_message(format!("{ppl:.4}"));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::json!({"ppl": result.ppl, "tokens": result.tokens, "ctx": ctx, "chunks": result.chunks, "scored": result.scored}));
    } else {
        println!("perplexity: {:.4} ({} tokens, {} chunks of {ctx}, {} predictions scored)", result.ppl, result.tokens, result.chunks, result.scored);
    }
    Ok(())
}
