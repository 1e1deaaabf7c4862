//! `ferrolm embed`: sentence embeddings of a file of texts, and the embedding model that
//! `similarity` and `index` share.

use crate::vectors_io::{progress, read_texts, write_jsonl, write_npy, AtomicFile};
use anyhow::{bail, Context, Result};
use clap::Args;
use embed::{Precision, SentenceEmbedder};
use kernels::{Level, ThreadPool};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Texts per call of the encoder: the progress bar moves once per chunk (the encoder itself
/// batches the chunk's tokens).
const CHUNK: usize = 256;

/// The embedding model and threads, shared by the embedding commands.
#[derive(Args, Clone)]
pub(crate) struct EmbedModelArgs {
    /// A sentence-transformers model folder (default: all-MiniLM-L6-v2, fetched on first use)
    #[arg(long, short = 'm', value_name = "DIR")]
    pub(crate) model: Option<PathBuf>,
    /// Threads for the kernels (default: all cores)
    #[arg(long, short = 't')]
    pub(crate) threads: Option<usize>,
    /// The encoder's linear layers: auto (bf16 where Intel AMX runs it, f32 elsewhere), f32 (the
    /// same bits on every machine), bf16 (AMX only: several times faster, cosine >= 0.9999 to f32)
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub(crate) precision: PrecisionArg,
}

/// `--precision` of the embedding commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PrecisionArg {
    Auto,
    F32,
    Bf16,
}

impl PrecisionArg {
    pub(crate) fn resolve(self) -> Precision {
        match self {
            PrecisionArg::Auto => Precision::auto(),
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

#[derive(Args)]
pub(crate) struct EmbedArgs {
    #[command(flatten)]
    pub(crate) model: EmbedModelArgs,
    /// JSON lines {"text": ..., "id"?: ...}
    #[arg(long, short = 'i', value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// Output file: a .npy matrix (N, D) of float32 when the name ends in .npy, JSON lines
    /// {"id"?, "embedding": [...]} otherwise (default: JSON lines on stdout)
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
}

/// A thread pool of `threads` (default: all cores), or a clear error.
pub(crate) fn thread_pool(threads: Option<usize>) -> Result<ThreadPool> {
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    if threads == 0 || threads > 1024 {
        bail!("--threads must be between 1 and 1024, got {threads}");
    }
    ThreadPool::try_new(threads).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A loaded embedding model, its name (what an index records), and its threads.
pub(crate) struct Embedder {
    pub(crate) model: SentenceEmbedder,
    pub(crate) name: String,
    pub(crate) pool: ThreadPool,
}

/// The name recorded for the model in folder `dir`: the folder's own name (the default model's is
/// all-MiniLM-L6-v2).
pub(crate) fn model_name(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string())
}

impl Embedder {
    /// Loads `--model DIR`, or the default model (fetched on first use).
    pub(crate) fn open(args: &EmbedModelArgs) -> Result<Embedder> {
        kernels::matmul::check_env().map_err(anyhow::Error::msg)?;
        let pool = thread_pool(args.threads)?;
        let dir = match &args.model {
            Some(dir) => {
                if !dir.join("modules.json").is_file() && !dir.join("config.json").is_file() {
                    bail!(
                        "{} is not a sentence-transformers model folder (no modules.json or config.json): pass such a folder with --model DIR",
                        dir.display()
                    );
                }
                dir.clone()
            }
            None => embed::fetch::ensure_default_model()?,
        };
        let model = SentenceEmbedder::load_with(&dir, args.precision.resolve())
            .with_context(|| format!("cannot load the embedding model in {}", dir.display()))?;
        Ok(Embedder { model, name: model_name(&dir), pool })
    }

    /// D, the length of an embedding.
    pub(crate) fn dim(&self) -> usize {
        self.model.dim()
    }

    /// Embeddings of `texts` in order, in chunks, each chunk handed to `each`; a progress bar
    /// labelled `what` for long inputs.
    pub(crate) fn embed_chunks(&self, texts: &[String], what: &str, mut each: impl FnMut(Vec<Vec<f32>>) -> Result<()>) -> Result<()> {
        let bar = progress(texts.len() as u64, what);
        for chunk in texts.chunks(CHUNK) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let vectors = self.model.embed(&self.pool, &refs)?;
            each(vectors)?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// Embeddings of all of `texts`, in order.
    pub(crate) fn embed_all(&self, texts: &[String], what: &str) -> Result<Vec<Vec<f32>>> {
        let mut all = Vec::with_capacity(texts.len());
        self.embed_chunks(texts, what, |v| {
            all.extend(v);
            Ok(())
        })?;
        Ok(all)
    }
}

/// The level the search and product kernels run at (FERROLM_KERNELS caps it).
pub(crate) fn level() -> Level {
    Level::current()
}

pub(crate) fn cmd_embed(args: &EmbedArgs) -> Result<()> {
    let (ids, texts) = read_texts(&args.input)?;
    let embedder = Embedder::open(&args.model)?;
    let vectors = embedder.embed_all(&texts, "embedding")?;
    match &args.out {
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            write_jsonl(&mut out, &ids, &vectors)?;
            out.flush()?;
        }
        Some(path) => {
            let (file, mut writer) = AtomicFile::create(path)?;
            if crate::vectors_io::is_npy(path) { write_npy(&mut writer, &vectors, embedder.dim()) } else { write_jsonl(&mut writer, &ids, &vectors) }
                .with_context(|| format!("cannot write {}", path.display()))?;
            file.commit(writer)?;
            eprintln!(
                "wrote {} embeddings of dimension {} ({}, {} products) to {}",
                vectors.len(),
                embedder.dim(),
                embedder.name,
                embedder.model.bert().precision().name(),
                path.display()
            );
        }
    }
    Ok(())
}
