//! Where the default model lives on disk.
//!
//! The cache folder is `$FERROLM_CACHE_DIR`, else `$XDG_CACHE_HOME/ferrolm`, else
//! `$HOME/.cache/ferrolm`. The CLI fetches the default model into it; tests look there too.

use std::path::PathBuf;

/// File name of the default model (SmolLM2-135M-Instruct, GGUF Q4_1).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The folder ferrolm caches downloaded models in.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERROLM_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ferrolm");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("ferrolm")
}

/// Path of the default model inside the cache (it may not exist yet).
pub fn default_model_path() -> PathBuf {
    cache_dir().join(DEFAULT_MODEL_FILE)
}

/// The real model for tests that need one: `$FERROLM_MODEL`, else the cached default model.
///
/// Returns `None` when it is absent, so a developer without the model can still run the other
/// tests; under CI (`CI` set) or with `FERROLM_REQUIRE_MODEL` set, an absent model is a failure
/// instead of a skip, so the golden tests can never silently pass by not running.
pub fn model_for_tests() -> Option<PathBuf> {
    let path = std::env::var_os("FERROLM_MODEL").filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or_else(default_model_path);
    if path.exists() {
        return Some(path);
    }
    let required = std::env::var_os("CI").is_some() || std::env::var_os("FERROLM_REQUIRE_MODEL").is_some();
    assert!(!required, "the golden tests need the model at {} (run `ferrolm info` once to fetch it)", path.display());
    eprintln!("skipping: no model at {} (run `ferrolm info` to fetch it)", path.display());
    None
}
