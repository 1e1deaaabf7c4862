//! llama.cpp's tokenizer test vectors (`models/ggml-vocab-NAME.gguf` with `.inp` and `.out`),
//! read and checked as its `tests/test-tokenizer-0.cpp` does: texts split on
//! `"\n__ggml_vocab_test__\n"`, one output line of space-separated ids per text, each text
//! tokenized without BOS/EOS and without parsing special tokens written in it.

use std::path::{Path, PathBuf};

use gguf::GgufFile;

use super::{tokenizer_from_gguf_compat, Compat};

/// The separator between texts in a `.inp` file.
pub const SEPARATOR: &str = "\n__ggml_vocab_test__\n";

/// The llama.cpp `models/` folder: `$FERROLM_LLAMA_CPP_MODELS`, else the copy in the
/// llama-cpp-python sdist under /work/peers.
pub fn default_models_dir() -> PathBuf {
    match std::env::var_os("FERROLM_LLAMA_CPP_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from("/work/peers/llama-server/llama_cpp_python-0.3.36/vendor/llama.cpp/models"),
    }
}

/// Every `ggml-vocab-*.gguf` in `dir` that has both `.inp` and `.out`, sorted by name.
pub fn vocab_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with("ggml-vocab-") && name.ends_with(".gguf") && with_suffix(p, ".inp").is_file() && with_suffix(p, ".out").is_file()
        })
        .collect();
    files.sort();
    files
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The (text, expected ids) pairs of a `.inp`/`.out` pair, or why they cannot be read.
pub fn read_vectors(inp: &[u8], out: &str) -> Result<Vec<(String, Vec<u32>)>, String> {
    let raw = String::from_utf8(inp.to_vec()).map_err(|e| format!("the .inp file is not UTF-8: {e}"))?;
    let mut texts = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        match raw[pos..].find(SEPARATOR) {
            Some(at) => {
                texts.push(raw[pos..pos + at].to_string());
                pos += at + SEPARATOR.len();
            }
            None => {
                texts.push(raw[pos..].to_string());
                break;
            }
        }
    }
    let lines: Vec<&str> = out.lines().collect();
    if lines.len() != texts.len() {
        return Err(format!("{} texts but {} output lines", texts.len(), lines.len()));
    }
    texts
        .into_iter()
        .zip(lines)
        .map(|(text, line)| {
            let ids = line
                .split_whitespace()
                .map(|id| id.parse::<u32>().map_err(|_| format!("bad id {id:?} in the .out file")))
                .collect::<Result<Vec<u32>, String>>()?;
            Ok((text, ids))
        })
        .collect()
}

/// One text whose ids differ.
#[derive(Clone, Debug)]
pub struct Mismatch {
    pub text: String,
    pub expected: Vec<u32>,
    pub got: Vec<u32>,
    /// Where the ids first differ, and the tokens from a little before it, decoded one by one
    /// (expected, got).
    pub at: usize,
    pub context: (Vec<String>, Vec<String>),
}

/// The result of checking one vocabulary.
#[derive(Clone, Debug, Default)]
pub struct VocabReport {
    /// Why the tokenizer (or its vectors) could not be read, if so.
    pub error: Option<String>,
    pub matched: usize,
    pub total: usize,
    pub first_mismatch: Option<Mismatch>,
}

impl VocabReport {
    /// Loaded, and every text matched.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.matched == self.total
    }

    /// `matched/total`, or the error.
    pub fn summary(&self) -> String {
        match &self.error {
            Some(error) => format!("does not load: {error}"),
            None => format!("{}/{}", self.matched, self.total),
        }
    }
}

/// Load `gguf` as `ferrolm tokenize --tokenizer` does and compare every test text of its
/// `.inp`/`.out` pair.
pub fn check_vocab(gguf: &Path) -> VocabReport {
    let fail = |error: String| VocabReport { error: Some(error), ..VocabReport::default() };
    let vectors = match (std::fs::read(with_suffix(gguf, ".inp")), std::fs::read_to_string(with_suffix(gguf, ".out"))) {
        (Ok(inp), Ok(out)) => match read_vectors(&inp, &out) {
            Ok(v) => v,
            Err(e) => return fail(e),
        },
        (Err(e), _) | (_, Err(e)) => return fail(format!("cannot read the test vectors: {e}")),
    };
    let bytes = match std::fs::read(gguf) {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot read {}: {e}", gguf.display())),
    };
    let file = match GgufFile::from_bytes(bytes) {
        Ok(f) => f,
        Err(e) => return fail(e.to_string()),
    };
    let tok = match tokenizer_from_gguf_compat(&file, Compat::LlamaCpp) {
        Ok(t) => t,
        Err(e) => return fail(e.to_string()),
    };
    let mut report = VocabReport { total: vectors.len(), ..VocabReport::default() };
    for (text, expected) in vectors {
        let (got, _) = tok.encode_with_offsets(&text, false);
        if got == expected {
            report.matched += 1;
        } else if report.first_mismatch.is_none() {
            let at = expected.iter().zip(&got).take_while(|(a, b)| a == b).count();
            let show = |ids: &[u32]| ids.iter().skip(at.saturating_sub(2)).take(8).map(|&id| tok.decode(&[id], true)).collect::<Vec<String>>();
            let context = (show(&expected), show(&got));
            report.first_mismatch = Some(Mismatch { text, expected, got, at, context });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_split_as_test_tokenizer_0_does() {
        let inp = b"a\n__ggml_vocab_test__\n\n__ggml_vocab_test__\n b \n\n__ggml_vocab_test__\n";
        let out = " 1 2\n\n 3\n";
        let v = read_vectors(inp, out).unwrap();
        assert_eq!(v, vec![("a".to_string(), vec![1, 2]), (String::new(), vec![]), (" b \n".to_string(), vec![3])]);
        assert!(read_vectors(inp, "1\n").is_err());
    }
}
