//! `ferrolm index build` and `ferrolm index query`: an exact cosine top-K index over embeddings,
//! in one memory-mapped file (the `retrieve` crate).

use crate::embed_cmd::{level, thread_pool, EmbedModelArgs, Embedder, PrecisionArg};
use crate::vectors_io::{counting_progress, is_npy, progress, read_all_vectors, read_texts, read_vectors, AtomicFile, Vectors};
use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args, Subcommand};
use retrieve::{IndexWriter, VectorIndex, QUERY_BATCH};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

/// The model name recorded for vectors that came from elsewhere.
pub(crate) const EXTERNAL: &str = "external";

#[derive(Subcommand)]
pub(crate) enum IndexCommand {
    /// Build an index from texts (embedded with the model) or from vectors made by any model
    Build(BuildArgs),
    /// The K most similar entries of an index for each query (texts or vectors)
    Query(QueryArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["input", "vectors"])))]
pub(crate) struct BuildArgs {
    /// Texts to embed and index: JSON lines {"text": ..., "id"?: ...} (an entry without an id
    /// gets its 0-based row number)
    #[arg(long, short = 'i', value_name = "FILE")]
    input: Option<PathBuf>,
    /// Vectors to index as they are: JSON lines {"id", "embedding": [...]} or a .npy matrix (ids:
    /// the row numbers)
    #[arg(long, value_name = "FILE")]
    vectors: Option<PathBuf>,
    /// With --vectors: the name of the model that made them (default: "external"); `index query
    /// --text` needs the index's model to be the embedder's
    #[arg(long, value_name = "NAME", conflicts_with = "input")]
    model_name: Option<String>,
    /// The index file to write
    #[arg(long, short = 'o', value_name = "FILE")]
    out: PathBuf,
    /// With --input: a sentence-transformers model folder (default: all-MiniLM-L6-v2)
    #[arg(long, short = 'm', value_name = "DIR", conflicts_with = "vectors")]
    model: Option<PathBuf>,
    /// Threads for the kernels (default: all cores)
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// With text: the encoder's linear layers, auto (bf16 where Intel AMX runs it), f32 or bf16
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    precision: PrecisionArg,
}

#[derive(Args)]
#[command(group(ArgGroup::new("queries").required(true).args(["text", "vectors", "input"])))]
pub(crate) struct QueryArgs {
    /// The index file
    #[arg(value_name = "INDEX")]
    index: PathBuf,
    /// A query text (repeatable), embedded with the index's model
    #[arg(long)]
    text: Vec<String>,
    /// Query texts: JSON lines {"text": ..., "id"?: ...}
    #[arg(long, short = 'i', value_name = "FILE")]
    input: Option<PathBuf>,
    /// Query vectors: JSON lines {"embedding": [...], "id"?: ...} or a .npy matrix
    #[arg(long, value_name = "FILE")]
    vectors: Option<PathBuf>,
    /// Hits per query
    #[arg(long, short = 'k', default_value_t = 10)]
    k: usize,
    /// Print one JSON line per query: {"query"?: id, "hits": [{"id", "score"}, ...]}, best first
    #[arg(long)]
    json: bool,
    /// With --text or --input: a sentence-transformers model folder (default: the index's model
    /// when it is all-MiniLM-L6-v2)
    #[arg(long, short = 'm', value_name = "DIR", conflicts_with = "vectors")]
    model: Option<PathBuf>,
    /// Threads for the kernels (default: all cores)
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// With text: the encoder's linear layers, auto (bf16 where Intel AMX runs it), f32 or bf16
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    precision: PrecisionArg,
}

pub(crate) fn cmd_index(command: &IndexCommand) -> Result<()> {
    match command {
        IndexCommand::Build(args) => cmd_build(args),
        IndexCommand::Query(args) => cmd_query(args),
    }
}

fn cmd_build(args: &BuildArgs) -> Result<()> {
    kernels::matmul::check_env().map_err(anyhow::Error::msg)?;
    let (file, writer) = AtomicFile::create(&args.out)?;
    let context = || format!("cannot write {}", args.out.display());
    let (count, dim, model) = if let Some(input) = &args.input {
        let (ids, texts) = read_texts(input)?;
        if texts.is_empty() {
            bail!("{} holds no texts to index", input.display());
        }
        let embedder = Embedder::open(&EmbedModelArgs { model: args.model.clone(), threads: args.threads, precision: args.precision })?;
        let mut index = IndexWriter::new(writer, embedder.dim(), &embedder.name).with_context(context)?;
        let mut row = 0;
        embedder.embed_chunks(&texts, "indexing", |vectors| {
            for v in vectors {
                let id = ids[row].clone().unwrap_or_else(|| row.to_string());
                index.push(&id, &v).with_context(|| format!("{}: text {row}", input.display()))?;
                row += 1;
            }
            Ok(())
        })?;
        let count = index.len();
        file.commit(index.finish().with_context(context)?)?;
        (count, embedder.dim(), embedder.name)
    } else if let Some(path) = &args.vectors {
        let model = args.model_name.clone().unwrap_or_else(|| EXTERNAL.into());
        // The dimension is the first vector's: the writer starts when it arrives.
        let mut index: Option<IndexWriter<_>> = None;
        let mut writer = Some(writer);
        let bar = counting_progress("indexing", !is_npy(path));
        let dim = read_vectors(
            path,
            |id, v| {
                if index.is_none() {
                    let out = writer.take().context("the index was started twice")?;
                    index = Some(IndexWriter::new(out, v.len(), &model).with_context(context)?);
                }
                let index = index.as_mut().context("the index was not started")?;
                let row = index.len();
                let id = id.unwrap_or_else(|| row.to_string());
                index.push(&id, v).with_context(context)
            },
            &bar,
        )?;
        bar.finish_and_clear();
        let index = index.with_context(|| format!("{} holds no vectors", path.display()))?;
        let count = index.len();
        file.commit(index.finish().with_context(context)?)?;
        (count, dim, model)
    } else {
        bail!("give --input FILE (texts) or --vectors FILE (embeddings)");
    };
    eprintln!("indexed {count} vectors of dimension {dim} (model {model}) into {}", args.out.display());
    Ok(())
}

/// The queries of `index query`: ids (None where absent) or texts to show, and vectors (Q, D).
struct Queries {
    labels: Vec<Option<String>>,
    vectors: Vectors,
}

fn cmd_query(args: &QueryArgs) -> Result<()> {
    kernels::matmul::check_env().map_err(anyhow::Error::msg)?;
    if args.k == 0 {
        bail!("--k must be at least 1");
    }
    let index = VectorIndex::open(&args.index)?;
    let (queries, pool) = if let Some(path) = &args.vectors {
        let vectors = read_all_vectors(path)?;
        if vectors.dim != index.dim() {
            bail!(
                "{} holds vectors of dimension {}, but {} has dimension {} (model {}): query with vectors made by the index's model",
                path.display(),
                vectors.dim,
                args.index.display(),
                index.dim(),
                index.model()
            );
        }
        (Queries { labels: vectors.ids.clone(), vectors }, thread_pool(args.threads)?)
    } else {
        let (labels, texts) = match &args.input {
            Some(path) => read_texts(path)?,
            None => (args.text.iter().map(|t| Some(t.clone())).collect(), args.text.clone()),
        };
        let embedder = query_embedder(args, &index)?;
        let data = embedder.embed_all(&texts, "embedding")?.concat();
        (Queries { labels, vectors: Vectors { ids: Vec::new(), dim: embedder.dim(), data } }, embedder.pool)
    };
    let d = index.dim();
    let n_queries = queries.vectors.data.len() / d;
    let bar = progress(n_queries as u64, "searching");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut query = 0;
    for chunk in queries.vectors.data.chunks(QUERY_BATCH * d) {
        let hits = index.search(&pool, level(), chunk, args.k)?;
        for hits in hits {
            print_hits(&mut out, &index, queries.labels.get(query).cloned().flatten(), &hits, args.json)?;
            query += 1;
        }
        bar.inc((chunk.len() / d) as u64);
    }
    bar.finish_and_clear();
    out.flush()?;
    Ok(())
}

/// The embedder for text queries: the index's model, checked by name.
fn query_embedder(args: &QueryArgs, index: &VectorIndex) -> Result<Embedder> {
    let idx = args.index.display();
    let model = index.model();
    if model == EXTERNAL {
        bail!(
            "{idx} holds external vectors (built with --vectors and no --model-name), so text cannot be embedded to match them: query with --vectors"
        );
    }
    if args.model.is_none() && model != embed::fetch::DEFAULT_MODEL_DIR {
        bail!("{idx} was built with the model {model:?}: pass its folder with --model DIR to query with text, or query with --vectors made by it");
    }
    let embedder = Embedder::open(&EmbedModelArgs { model: args.model.clone(), threads: args.threads, precision: args.precision })?;
    if embedder.name != model {
        bail!(
            "{idx} was built with the model {model:?}, but the text would be embedded with {:?}: their vectors are not comparable; pass the index's model with --model DIR, or query with --vectors",
            embedder.name
        );
    }
    if embedder.dim() != index.dim() {
        bail!("{idx} has dimension {}, but the model {:?} makes vectors of dimension {}", index.dim(), embedder.name, embedder.dim());
    }
    Ok(embedder)
}

/// One hit as printed: the id and the f32 score (in its shortest round-trip form).
#[derive(Serialize)]
struct HitLine<'a> {
    id: &'a str,
    score: f32,
}

/// One query's line of `--json`.
#[derive(Serialize)]
struct QueryLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<String>,
    hits: Vec<HitLine<'a>>,
}

fn print_hits(out: &mut dyn Write, index: &VectorIndex, label: Option<String>, hits: &[retrieve::Hit], json: bool) -> Result<()> {
    if json {
        let hits = hits.iter().map(|h| HitLine { id: index.id(h.index), score: h.score }).collect();
        serde_json::to_writer(&mut *out, &QueryLine { query: label, hits })?;
        writeln!(out)?;
    } else {
        if let Some(label) = label {
            writeln!(out, "query: {label}")?;
        }
        for (rank, h) in hits.iter().enumerate() {
            writeln!(out, "{:>4}  {:.4}  {}", rank + 1, h.score, index.id(h.index))?;
        }
        writeln!(out)?;
    }
    Ok(())
}
