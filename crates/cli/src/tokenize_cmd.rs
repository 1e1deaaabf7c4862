//! `ferrolm tokenize`: ids (and byte offsets) of text, with the model's tokenizer or a
//! tokenizer file (a Hugging Face tokenizer.json or a GGUF).

use crate::args::ModelArgs;
use crate::load::open_file;
use anyhow::{Context, Result};
use gguf::GgufFile;
use model::tokenizer_gguf::{tokenizer_from_gguf_compat, Compat};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use tokenizer::Tokenizer;

/// How `tokenize` encodes and prints.
#[derive(Clone, Copy)]
pub struct TokenizeHow {
    pub parse_special: bool,
    pub add_special: bool,
    pub offsets: bool,
    pub hf_compat: bool,
}

/// A tokenizer from a model (GGUF) or a Hugging Face tokenizer.json (made once per command).
#[allow(clippy::large_enum_variant)]
enum AnyTokenizer {
    Gguf(Tokenizer),
    Hf(Box<tokenizer::hf::HfTokenizer>),
}

impl AnyTokenizer {
    fn open(args: &ModelArgs, path: Option<&std::path::Path>, compat: Compat) -> Result<AnyTokenizer> {
        let gguf = |file: &GgufFile, path: &std::path::Path| {
            tokenizer_from_gguf_compat(file, compat).with_context(|| format!("cannot build the tokenizer of {}", path.display()))
        };
        let Some(path) = path else {
            let (path, file) = open_file(args)?;
            return Ok(AnyTokenizer::Gguf(gguf(&file, &path)?));
        };
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        if bytes.starts_with(b"GGUF") {
            let file = GgufFile::from_bytes(bytes).with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(AnyTokenizer::Gguf(gguf(&file, path)?));
        }
        let tok = tokenizer::hf::HfTokenizer::from_json(&bytes).with_context(|| format!("{}: not a usable tokenizer.json", path.display()))?;
        Ok(AnyTokenizer::Hf(Box::new(tok)))
    }

    /// Ids and byte spans (special tokens the tokenizer adds get (0, 0), as in Hugging Face).
    fn encode(&self, text: &str, how: TokenizeHow) -> (Vec<u32>, Vec<(usize, usize)>) {
        match self {
            AnyTokenizer::Hf(t) => {
                let e = t.encode_with_offsets(text, how.add_special);
                (e.ids, e.offsets)
            }
            AnyTokenizer::Gguf(t) => {
                let (mut ids, mut offsets) = t.encode_with_offsets(text, how.parse_special);
                if how.add_special {
                    if let Some(bos) = t.bos_id().filter(|_| t.add_bos()) {
                        ids.insert(0, bos);
                        offsets.insert(0, (0, 0));
                    }
                    if let Some(eos) = t.eos_id().filter(|_| t.add_eos()) {
                        ids.push(eos);
                        offsets.push((0, 0));
                    }
                }
                (ids, offsets)
            }
        }
    }
}

pub fn cmd_tokenize(args: &ModelArgs, path: Option<&std::path::Path>, how: TokenizeHow, text: Option<String>, jsonl: Option<PathBuf>) -> Result<()> {
    let compat = if how.hf_compat { Compat::HuggingFace } else { Compat::LlamaCpp };
    let tok = AnyTokenizer::open(args, path, compat)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let print = |text: &str, out: &mut dyn Write| -> Result<()> {
        let (ids, offsets) = tok.encode(text, how);
        if how.offsets {
            writeln!(out, "{}", serde_json::json!({"ids": ids, "offsets": offsets}))?;
        } else {
            writeln!(out, "{}", serde_json::to_string(&ids)?)?;
        }
        Ok(())
    };
    if let Some(text) = text {
        print(&text, &mut out)?;
    } else if let Some(path) = jsonl {
        let file = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("{}:{}: cannot read the line", path.display(), n + 1))?;
            let value: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("{}:{}: not valid JSON", path.display(), n + 1))?;
            let text = value
                .get("text")
                .and_then(|t| t.as_str())
                .with_context(|| format!("{}:{}: expected an object with a string field \"text\"", path.display(), n + 1))?;
            print(text, &mut out)?;
        }
    }
    out.flush()?;
    Ok(())
}
