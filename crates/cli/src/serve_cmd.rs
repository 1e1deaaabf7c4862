//! `ferrolm serve`: the OpenAI-compatible HTTP server over the engine.

use crate::args::RunArgs;
use crate::embed_cmd::{EmbedModelArgs, Embedder, PrecisionArg};
use crate::load::open_model;
use anyhow::{bail, Context, Result};
use clap::Args;
use engine::{Engine, EngineConfig};
use generate::chat::ChatTemplate;
use server::{AppState, EmbeddingModel, ServeOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Clone)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Address to listen on (loopback by default: give 0.0.0.0 to accept other machines)
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one; the URL is printed when ready)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on the API endpoints (also from FERROLM_API_KEY)
    #[arg(long, env = "FERROLM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The most sequences decoded together (n > 1 completions count each)
    #[arg(long, default_value_t = 64)]
    pub max_seqs: usize,
    /// The most tokens in one forward step: running decodes first, then chunks of prompts
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Memory for the KV cache shared by all requests, e.g. 512MiB, 2GiB or bytes
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub kv_memory: u64,
    /// The most requests waiting to start; more get 429 with retry-after
    #[arg(long, default_value_t = 256)]
    pub queue: usize,
    /// Serve POST /v1/embeddings with this sentence-transformers folder, or `default` for
    /// all-MiniLM-L6-v2 (fetched on first use); without it that route answers 404
    #[arg(long, value_name = "DIR|default")]
    pub embedding_model: Option<PathBuf>,
}

/// "1GiB", "512MiB", "2G", "1000000": a size in bytes.
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("{s:?} is not a size: write e.g. 512MiB, 2GiB or a number of bytes"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit {other:?}: use B, KiB, MiB, GiB (or KB, MB, GB)")),
    };
    let bytes = value * scale;
    if !(1.0..1e15).contains(&bytes) {
        return Err(format!("{s:?} is not a usable size"));
    }
    Ok(bytes as u64)
}

pub(crate) fn cmd_serve(args: &ServeArgs) -> Result<()> {
    if args.max_seqs == 0 || args.max_batch_tokens == 0 || args.queue == 0 {
        bail!("--max-seqs, --max-batch-tokens and --queue must be at least 1");
    }
    // The encoder first: a wrong folder is reported before the LLM loads. It gets its own kernel
    // threads, as many as the LLM's (--threads).
    let embedder = match &args.embedding_model {
        None => None,
        Some(dir) => {
            let model = (dir.as_os_str() != "default").then(|| dir.clone());
            let e =
                Embedder::open(&EmbedModelArgs { model, threads: args.run.threads, precision: PrecisionArg::Auto }).context("--embedding-model")?;
            eprintln!(
                "ferrolm serve: embeddings with {} | {} dimensions, up to {} tokens per text, {} products, {} threads",
                e.name,
                e.dim(),
                e.model.max_seq_length(),
                e.model.bert().precision().name(),
                e.pool.n_threads()
            );
            Some(e)
        }
    };
    let (model, tok, n_ctx) = open_model(&args.run)?;
    let model_id = crate::fetch::resolve_model(args.run.model.model.as_deref())?
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let source = model.file().get("tokenizer.chat_template").and_then(|v| v.as_str());
    let (template, note) = ChatTemplate::for_model(source, &model.config.architecture).context("the model's chat template does not compile")?;
    if let Some(note) = note {
        eprintln!("ferrolm serve: {note}");
    }
    let config = EngineConfig {
        n_ctx,
        max_seqs: args.max_seqs,
        max_batch_tokens: args.max_batch_tokens,
        kv_memory: args.kv_memory,
        queue: args.queue,
        prefault_kv: true,
    };
    let n_vocab = model.config.n_vocab;
    let (level, threads, kv_type) = (model.level(), model.n_threads(), model.kv_type().name());
    let tok = Arc::new(tok);
    let engine = Engine::start(model, tok.clone(), config.clone()).context("cannot start the engine")?;
    eprintln!(
        "ferrolm serve: {model_id} | kernels {level:?}, {threads} threads | context {n_ctx} | KV cache {} blocks of {} positions in {kv_type} ({:.0} MiB) | up to {} sequences, {} tokens per step, {} waiting",
        engine.n_blocks(),
        model::KV_BLOCK,
        args.kv_memory as f64 / (1 << 20) as f64,
        config.max_seqs,
        config.max_batch_tokens,
        config.queue
    );
    let mut state = AppState::new(engine, tok, template, model_id, args.api_key.clone(), n_vocab);
    if let Some(e) = embedder {
        state = state.with_embeddings(EmbeddingModel::new(e.model, e.name, e.pool, args.queue));
    }
    let options = ServeOptions { host: args.host.clone(), port: args.port };
    server::serve(options, state, |addr| {
        // The one line on stdout: scripts wait for it.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ferrolm serve: listening on http://{addr}");
        let _ = out.flush();
    })
    .map_err(anyhow::Error::msg)?;
    eprintln!("ferrolm serve: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("1 PB").is_err());
        assert!(parse_bytes("0").is_err());
    }
}
