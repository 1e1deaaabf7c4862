//! `ferrolm merge`: a copy of the model with a LoRA adapter merged into its weights.

use crate::args::ModelArgs;
use crate::load::open_file;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use train::merge::{merge_gguf, MergedType};

#[derive(Args)]
pub(crate) struct MergeArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// The adapter: a PEFT folder or llama.cpp's LoRA GGUF
    #[arg(long, value_name = "PATH")]
    pub(crate) lora: PathBuf,
    /// Multiplies the adapter's scaling (alpha / r)
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    pub(crate) lora_scale: f32,
    /// The merged GGUF to write
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// How the merged matrices are stored: f16 (default), f32 or q8_0 (a 4-bit format would
    /// round most of the adapter away); the others keep their type
    #[arg(long, default_value = "f16", value_parser = ["f16", "f32", "q8_0"])]
    pub(crate) out_type: String,
}

pub(crate) fn cmd_merge(args: &MergeArgs) -> Result<()> {
    if !args.lora_scale.is_finite() {
        bail!("--lora-scale must be a finite number, got {}", args.lora_scale);
    }
    let (path, file) = open_file(&args.model)?;
    let config = model::LlamaConfig::from_gguf(&file).with_context(|| format!("cannot read the model's sizes from {}", path.display()))?;
    let dims = train::adapter::ModelDims::from_config(&config);
    let adapter = train::adapter::load(&args.lora, &dims).with_context(|| format!("cannot use the LoRA adapter {}", args.lora.display()))?;
    let as_type = match args.out_type.as_str() {
        "f32" => MergedType::F32,
        "q8_0" => MergedType::Q8_0,
        _ => MergedType::F16,
    };
    if args.out == path {
        bail!("--out {} is the model itself; write the merged model to another file", args.out.display());
    }
    let n = merge_gguf(&file, &adapter, args.lora_scale, as_type, &args.out).map_err(anyhow::Error::msg)?;
    println!(
        "merged {} into {n} matrices of {}: wrote {} ({} for the merged matrices)",
        args.lora.display(),
        path.display(),
        args.out.display(),
        args.out_type
    );
    Ok(())
}
