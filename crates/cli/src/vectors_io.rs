//! The user's files for the embedding commands: JSON lines of texts (`{"text", "id"?}`) or of
//! vectors (`{"embedding": [...], "id"?}`), NumPy .npy matrices, and output files written whole or
//! not at all.
//!
//! Blank lines are skipped; other fields of a line are ignored; an `id` is a string or a number
//! (kept as its JSON text). Every error names the file and the line (or the .npy's problem).

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use retrieve::npy::{write_npy_header, write_npy_row, NpyReader};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Inputs with more items than this get a progress bar (on a terminal).
pub(crate) const PROGRESS_AFTER: u64 = 256;

/// One JSON line as read: any of the fields may be absent.
#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    embedding: Option<Vec<f32>>,
}

/// A line's id as text: a string as it is, a number as its JSON text.
fn id_of(value: Option<serde_json::Value>, at: &dyn Fn() -> String) -> Result<Option<String>> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => bail!("{}: \"id\" must be a string or a number, got {other}", at()),
    }
}

/// Whether `path` names a .npy file.
pub(crate) fn is_npy(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// The non-blank lines of a JSON-lines file, parsed, with their 1-based line numbers; `progress`
/// gets the bytes read so far.
fn json_lines(path: &Path, mut each: impl FnMut(usize, Line) -> Result<()>, progress: &ProgressBar) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("{}:{}: cannot read the line (is the file UTF-8 text?)", path.display(), number + 1))?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        progress.inc(n as u64);
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line =
            serde_json::from_str(&line).with_context(|| format!("{}:{number}: not a JSON object of the expected fields", path.display()))?;
        each(number, parsed)?;
    }
}

/// A file of texts: JSON lines `{"text": ..., "id"?: ...}`. Returns the ids (None where a line has
/// none) and the texts.
pub(crate) fn read_texts(path: &Path) -> Result<(Vec<Option<String>>, Vec<String>)> {
    if is_npy(path) {
        bail!("{} is a .npy file of vectors, but texts are wanted here: JSON lines {{\"text\": ..., \"id\"?: ...}}", path.display());
    }
    let (mut ids, mut texts) = (Vec::new(), Vec::new());
    json_lines(
        path,
        |number, line| {
            let at = || format!("{}:{number}", path.display());
            let text = line.text.with_context(|| format!("{}: expected an object with a string field \"text\"", at()))?;
            ids.push(id_of(line.id, &at)?);
            texts.push(text);
            Ok(())
        },
        &ProgressBar::hidden(),
    )?;
    Ok((ids, texts))
}

/// Vectors read whole: ids (None where absent), D, and the values (N, D).
pub(crate) struct Vectors {
    pub ids: Vec<Option<String>>,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Vectors {
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Checks that a vector is usable: non-empty, of the file's dimension, finite.
fn check_vector(values: &[f32], dim: Option<usize>, at: &dyn Fn() -> String) -> Result<()> {
    if values.is_empty() {
        bail!("{}: the embedding is empty", at());
    }
    if let Some(dim) = dim.filter(|&d| d != values.len()) {
        bail!("{}: the embedding has {} values, but the first one has {dim}: all vectors must have the same dimension", at(), values.len());
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!("{}: value {i} of the embedding is {} (out of f32 range): vectors must be finite", at(), values[i]);
    }
    Ok(())
}

/// Reads every vector of `path` (.npy, or JSON lines with "embedding"), checked: a common
/// dimension, finite values, at least one vector unless `allow_empty`. `progress` counts rows of
/// a .npy, bytes of JSON lines.
pub(crate) fn read_vectors(path: &Path, mut each: impl FnMut(Option<String>, &[f32]) -> Result<()>, progress: &ProgressBar) -> Result<usize> {
    let mut dim = None;
    if is_npy(path) {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata().with_context(|| format!("cannot read {}", path.display()))?.len();
        let mut reader = NpyReader::new(BufReader::with_capacity(1 << 20, file), Some(len))
            .with_context(|| format!("{}: not a usable .npy file", path.display()))?;
        if reader.cols() == 0 {
            bail!("{}: the .npy vectors have dimension 0", path.display());
        }
        progress.set_length(reader.rows() as u64);
        let mut row = vec![0f32; reader.cols()];
        let mut index = 0;
        while reader.next_row(&mut row).with_context(|| format!("{}: not a usable .npy file", path.display()))? {
            check_vector(&row, None, &|| format!("{}: row {index}", path.display()))?;
            each(None, &row)?;
            index += 1;
            progress.inc(1);
        }
        dim = Some(reader.cols());
    } else {
        if let Ok(meta) = std::fs::metadata(path) {
            progress.set_length(meta.len());
        }
        json_lines(
            path,
            |number, line| {
                let at = || format!("{}:{number}", path.display());
                let values = line.embedding.with_context(|| format!("{}: expected an object with \"embedding\": [numbers]", at()))?;
                check_vector(&values, dim, &at)?;
                dim = Some(values.len());
                each(id_of(line.id, &at)?, &values)
            },
            progress,
        )?;
    }
    dim.with_context(|| format!("{} holds no vectors", path.display()))
}

/// Every vector of `path`, in memory.
pub(crate) fn read_all_vectors(path: &Path) -> Result<Vectors> {
    let (mut ids, mut data) = (Vec::new(), Vec::new());
    let dim = read_vectors(
        path,
        |id, v| {
            ids.push(id);
            data.extend_from_slice(v);
            Ok(())
        },
        &ProgressBar::hidden(),
    )?;
    Ok(Vectors { ids, dim, data })
}

/// What a file given to `similarity` holds, judged by its first line: texts or vectors.
pub(crate) enum Items {
    Texts { ids: Vec<Option<String>>, texts: Vec<String> },
    Vectors(Vectors),
}

/// Reads a file of texts or of embeddings (a .npy is vectors; JSON lines are vectors when the first
/// line has "embedding", texts otherwise).
pub(crate) fn read_items(path: &Path) -> Result<Items> {
    if is_npy(path) {
        return Ok(Items::Vectors(read_all_vectors(path)?));
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut first = None;
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("cannot read {} (is it UTF-8 text?)", path.display()))?;
        if !line.trim().is_empty() {
            first = Some(line);
            break;
        }
    }
    let Some(first) = first else { bail!("{} is empty: expected JSON lines of \"text\" or \"embedding\"", path.display()) };
    let has_embedding = serde_json::from_str::<serde_json::Value>(&first).ok().is_some_and(|v| v.get("embedding").is_some());
    if has_embedding {
        Ok(Items::Vectors(read_all_vectors(path)?))
    } else {
        let (ids, texts) = read_texts(path)?;
        Ok(Items::Texts { ids, texts })
    }
}

/// One output line of `embed`.
#[derive(Serialize)]
struct EmbeddingLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    embedding: &'a [f32],
}

/// Writes `{"id"?, "embedding": [...]}` lines (floats in their shortest round-trip form).
pub(crate) fn write_jsonl(out: &mut dyn Write, ids: &[Option<String>], vectors: &[Vec<f32>]) -> Result<()> {
    for (id, v) in ids.iter().zip(vectors) {
        serde_json::to_writer(&mut *out, &EmbeddingLine { id: id.as_deref(), embedding: v })?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes an (N, D) f32 .npy matrix.
pub(crate) fn write_npy(out: &mut dyn Write, vectors: &[Vec<f32>], dim: usize) -> Result<()> {
    let mut out = out;
    write_npy_header(&mut out, vectors.len(), dim)?;
    for v in vectors {
        write_npy_row(&mut out, v)?;
    }
    Ok(())
}

/// An output file that appears whole or not at all: written under a temporary name beside it and
/// renamed over it by [`AtomicFile::commit`]; dropped uncommitted, the temporary file is removed.
pub(crate) struct AtomicFile {
    path: PathBuf,
    temp: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// The file to be, and the buffered writer of its temporary.
    pub(crate) fn create(path: &Path) -> Result<(AtomicFile, BufWriter<File>)> {
        let name = path.file_name().with_context(|| format!("{} is not a file name", path.display()))?;
        let temp = path.with_file_name(format!(".{}.partial-{}", name.to_string_lossy(), std::process::id()));
        let file = File::create(&temp).with_context(|| format!("cannot create {} (for {})", temp.display(), path.display()))?;
        Ok((AtomicFile { path: path.to_owned(), temp, committed: false }, BufWriter::with_capacity(1 << 20, file)))
    }

    /// Flushes `writer` (the one [`AtomicFile::create`] gave) and moves the file into place.
    pub(crate) fn commit(mut self, mut writer: BufWriter<File>) -> Result<()> {
        writer.flush().with_context(|| format!("cannot write {}", self.path.display()))?;
        drop(writer);
        std::fs::rename(&self.temp, &self.path)
            .with_context(|| format!("cannot move {} into place at {}", self.temp.display(), self.path.display()))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A progress bar on stderr for `len` items (hidden for short inputs and when stderr is not a
/// terminal).
pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    if len <= PROGRESS_AFTER {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = format!("{what} {{bar:30}} {{pos}}/{{len}}  eta {{eta}}");
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

/// A progress bar for a file being read whose length the reader sets: in rows, or in bytes.
pub(crate) fn counting_progress(what: &str, bytes: bool) -> ProgressBar {
    let bar = ProgressBar::new(0);
    let counts = if bytes { "{bytes}/{total_bytes}" } else { "{pos}/{len}" };
    let template = format!("{what} {{bar:30}} {counts}  eta {{eta}}");
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}
