//! Opening model files: the GGUF, its tokenizer, and the model ready to run.

use crate::args::{ModelArgs, RunArgs};
use crate::fetch;
use anyhow::{bail, Context, Result};
use gguf::GgufFile;
use kernels::SumOrder;
use model::tokenizer_gguf::tokenizer_from_gguf;
use model::Llama;
use std::path::PathBuf;
use tokenizer::Tokenizer;

pub(crate) fn open_file(args: &ModelArgs) -> Result<(PathBuf, GgufFile)> {
    let path = fetch::resolve_model(args.model.as_deref())?;
    if model::hf::is_checkpoint_dir(&path) {
        // A Hugging Face checkpoint, converted to a GGUF in memory.
        let file = model::hf::gguf_from_checkpoint(&path).with_context(|| format!("cannot load the checkpoint in {}", path.display()))?;
        return Ok((path, file));
    }
    // The error names the path already.
    let file = GgufFile::open(&path)?;
    Ok((path, file))
}

pub(crate) fn open_tokenizer(args: &ModelArgs) -> Result<(GgufFile, Tokenizer)> {
    let (path, file) = open_file(args)?;
    let tok = tokenizer_from_gguf(&file).with_context(|| format!("cannot build the tokenizer of {}", path.display()))?;
    Ok((file, tok))
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Loads model and tokenizer; returns them with the context size to use.
pub(crate) fn open_model(run: &RunArgs) -> Result<(Llama, Tokenizer, usize)> {
    // A misspelt kernel setting is an error, not a silent default.
    kernels::matmul::check_env().map_err(anyhow::Error::msg)?;
    let (path, file) = open_file(&run.model)?;
    let tok = tokenizer_from_gguf(&file).with_context(|| format!("cannot build the tokenizer of {}", path.display()))?;
    let threads = run.threads.unwrap_or_else(default_threads);
    if threads == 0 || threads > 1024 {
        bail!("--threads must be between 1 and 1024, got {threads}");
    }
    let mut model = Llama::from_file(file, threads).with_context(|| format!("cannot load the model in {}", path.display()))?;
    match run.compute.sum_order.as_deref() {
        Some("llama-cpp") => model.set_sum_order(SumOrder::LlamaCpp),
        Some(_) => model.set_sum_order(SumOrder::Blocks),
        None => {}
    }
    if let Some(kv_type) = &run.compute.kv_type {
        let kv_type = kv_type.parse::<model::KvType>().map_err(anyhow::Error::msg)?;
        model.set_kv_type(kv_type).with_context(|| format!("cannot use --kv-type {}", kv_type.name()))?;
    }
    if let Some(lora) = &run.lora.lora {
        let dims = train::adapter::ModelDims::from_config(&model.config);
        let adapter = train::adapter::load(lora, &dims).with_context(|| format!("cannot use the LoRA adapter {}", lora.display()))?;
        let scale = run.lora.lora_scale.unwrap_or(1.0);
        if !scale.is_finite() {
            bail!("--lora-scale must be a finite number, got {scale}");
        }
        let c = &adapter.config;
        eprintln!(
            "LoRA adapter {}: rank {}, alpha {}, targets {}, scale {scale}",
            lora.display(),
            c.rank,
            c.alpha,
            c.targets.iter().map(|t| t.short_name()).collect::<Vec<_>>().join(",")
        );
        model.set_lora(Some(adapter.to_lora_set(scale))).with_context(|| format!("cannot use the LoRA adapter {}", lora.display()))?;
    }
    let n_ctx = run.ctx.unwrap_or(model.config.n_ctx_usable().min(4096));
    if n_ctx == 0 || n_ctx > model.config.n_ctx_usable() {
        bail!("--ctx must be between 1 and {}, got {n_ctx}", model.config.context_bound());
    }
    Ok((model, tok, n_ctx))
}
