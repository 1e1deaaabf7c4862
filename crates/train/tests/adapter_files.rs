//! The adapter files: PEFT and llama.cpp GGUF written and read back, the Q/K row order between
//! them, every refusal with its message, and hostile bytes (never a panic).

mod adapter_files {
    pub mod fuzz;
    pub mod gguf;
    pub mod peft;
}

use std::path::{Path, PathBuf};

use train::adapter::{AdapterError, ModelDims};
use train::{Adapter, LoraConfig, LoraPair, Target};

/// A small Llama: L 3, D 8, H 2, Hkv 1, Dh 4, F 12.
pub fn tiny_dims() -> ModelDims {
    ModelDims { architecture: "llama".into(), n_layer: 3, d: 8, n_head: 2, n_head_kv: 1, head_dim: 4, f: 12 }
}

/// SmolLM2-135M: L 30, D 576, H 9, Hkv 3, Dh 64, F 1536.
pub fn smollm2_dims() -> ModelDims {
    ModelDims { architecture: "llama".into(), n_layer: 30, d: 576, n_head: 9, n_head_kv: 3, head_dim: 64, f: 1536 }
}

pub fn config(rank: usize, alpha: f32, rslora: bool, targets: &[Target]) -> LoraConfig {
    LoraConfig { rank, alpha, rslora, dropout: 0.0, targets: targets.to_vec() }
}

/// An adapter with a pair for every target of `config` in every layer, values in [-1, 1) from a
/// small generator seeded by `seed` (all distinct enough that a misplaced row shows).
pub fn random_adapter(dims: &ModelDims, config: LoraConfig, seed: u64) -> Adapter {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let rank = config.rank;
    let layers = (0..dims.n_layer)
        .map(|_| {
            std::array::from_fn(|i| {
                let target = Target::ALL[i];
                config.targets.contains(&target).then(|| {
                    let (n_out, n_in) = dims.shape(target);
                    LoraPair { a: (0..rank * n_in).map(|_| next()).collect(), b: (0..n_out * rank).map(|_| next()).collect(), n_in, n_out }
                })
            })
        })
        .collect();
    Adapter { config, layers }
}

/// A fresh directory under the system's temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("ferrolm-train-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The message of an error, after checking that it is one line.
pub fn message(error: AdapterError) -> String {
    let text = error.to_string();
    assert!(!text.contains('\n'), "an error message spans lines: {text}");
    text
}

/// Asserts that `text` holds every one of `parts`.
#[track_caller]
pub fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "message lacks {part:?}: {text}");
    }
}

#[test]
fn load_picks_the_format_from_the_path() {
    let dims = tiny_dims();
    let adapter = random_adapter(&dims, config(2, 4.0, false, &Target::ALL), 1);
    let dir = TempDir::new("load-dispatch");
    let peft_dir = dir.join("peft");
    train::adapter::save_peft(&adapter, &dims, &peft_dir, "tiny").unwrap();
    assert_eq!(train::adapter::load(&peft_dir, &dims).unwrap(), adapter, "a directory is PEFT");
    assert_eq!(train::adapter::load(peft_dir.join("adapter_model.safetensors"), &dims).unwrap(), adapter, "so is its .safetensors");

    let gguf = dir.join("tiny.gguf");
    train::adapter::save_gguf(&adapter, &dims, &gguf).unwrap();
    assert_eq!(train::adapter::load(&gguf, &dims).unwrap(), adapter, "a .gguf file is GGUF");
    let renamed = dir.join("tiny.lora");
    std::fs::copy(&gguf, &renamed).unwrap();
    assert_eq!(train::adapter::load(&renamed, &dims).unwrap(), adapter, "so is a file that starts with the GGUF magic");

    let text = dir.join("notes.txt");
    std::fs::write(&text, "not an adapter").unwrap();
    let error = message(train::adapter::load(&text, &dims).unwrap_err());
    assert_mentions(&error, &["notes.txt: not an adapter: give a PEFT directory"]);
    let missing = message(train::adapter::load(dir.join("absent.bin"), &dims).unwrap_err());
    assert_mentions(&missing, &["absent.bin: no such file: give a PEFT directory"]);
}

#[test]
fn a_peft_adapter_converts_to_gguf_and_back_unchanged() {
    // HF -> GGUF -> HF: the PEFT file's B rows of q and k reach GGUF order in memory and the GGUF
    // file as they are, and come back to the same PEFT bytes.
    let dims = tiny_dims();
    let adapter = random_adapter(&dims, config(3, 6.0, false, &Target::ALL), 7);
    let dir = TempDir::new("peft-gguf-peft");
    train::adapter::save_peft(&adapter, &dims, dir.join("first"), "tiny").unwrap();
    let from_peft = train::adapter::load_peft(dir.join("first"), &dims).unwrap();
    train::adapter::save_gguf(&from_peft, &dims, dir.join("a.gguf")).unwrap();
    let from_gguf = train::adapter::load_gguf(dir.join("a.gguf"), &dims).unwrap();
    assert_eq!(from_gguf, adapter);
    train::adapter::save_peft(&from_gguf, &dims, dir.join("second"), "tiny").unwrap();
    let read = |d: &str| std::fs::read(dir.join(d).join("adapter_model.safetensors")).unwrap();
    assert_eq!(read("first"), read("second"));
}
