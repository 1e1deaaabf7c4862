//! `ferrolm quantize`: a copy of a model with its weights in another format, as llama-quantize
//! chooses them tensor by tensor (`model::quantize`).

use crate::args::ModelArgs;
use crate::load::open_file;
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use model::quantize::{quantize_gguf, QuantTarget};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct QuantizeArgs {
    /// The model to quantize: a GGUF file or a Hugging Face checkpoint folder
    #[arg(long = "in", value_name = "PATH")]
    pub(crate) input: PathBuf,
    /// The GGUF to write
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// The target type: f32, f16, q8_0, q4_0, q4_1, q4_k_m (llama.cpp's mix) or q6_k
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) target: String,
}

pub(crate) fn cmd_quantize(args: &QuantizeArgs) -> Result<()> {
    let Some(target) = QuantTarget::parse(&args.target) else {
        bail!("--type must be one of f32, f16, q8_0, q4_0, q4_1, q4_k_m, q6_k, got {:?}", args.target);
    };
    if args.out == args.input {
        bail!("--out {} is the input itself; write the quantized model to another file", args.out.display());
    }
    let (path, file) = open_file(&ModelArgs { model: Some(args.input.clone()) })?;
    // Only architectures ferrolm runs: the tensor rules are theirs.
    model::LlamaConfig::from_gguf(&file).with_context(|| format!("cannot quantize {}", path.display()))?;
    let bar = ProgressBar::new(file.tensors.len() as u64);
    bar.set_style(ProgressStyle::with_template("quantize {bar:30} {pos}/{len} tensors  eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let bytes =
        quantize_gguf(&file, target, &mut |done, _| bar.set_position(done as u64)).with_context(|| format!("cannot quantize {}", path.display()))?;
    bar.finish_and_clear();
    // Written whole or not at all: a temporary file beside the output, renamed into place.
    let tmp = args.out.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("cannot move {} to {}", tmp.display(), args.out.display()))?;
    println!("wrote {} ({:.1} MB, {}) from {}", args.out.display(), bytes.len() as f64 / 1e6, args.target.to_lowercase(), path.display());
    Ok(())
}
