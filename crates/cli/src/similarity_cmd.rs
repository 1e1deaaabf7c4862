//! `ferrolm similarity A B`: the cosine matrix of two files, each of texts (embedded with the
//! model) or of embeddings (used as they are), printed as one JSON object.

use crate::embed_cmd::{level, thread_pool, EmbedModelArgs, Embedder};
use crate::vectors_io::{read_items, Items, Vectors};
use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The largest matrix printed (N x M values); larger pairs of sets are a job for `index`.
const MAX_CELLS: usize = 25_000_000;

#[derive(Args)]
pub(crate) struct SimilarityArgs {
    #[command(flatten)]
    pub(crate) model: EmbedModelArgs,
    /// The rows: JSON lines of {"text", "id"?} or of {"embedding", "id"?}, or a .npy matrix
    #[arg(value_name = "A")]
    pub(crate) a: PathBuf,
    /// The columns, in the same forms as A
    #[arg(value_name = "B")]
    pub(crate) b: PathBuf,
}

pub(crate) fn cmd_similarity(args: &SimilarityArgs) -> Result<()> {
    let (a, b) = (read_items(&args.a)?, read_items(&args.b)?);
    let needs_model = matches!(a, Items::Texts { .. }) || matches!(b, Items::Texts { .. });
    let embedder = if needs_model { Some(Embedder::open(&args.model)?) } else { None };
    let (a, b) = (vectors_of(a, embedder.as_ref())?, vectors_of(b, embedder.as_ref())?);
    if a.dim != b.dim {
        bail!(
            "{} holds vectors of dimension {}, {} of dimension {}: cosine needs vectors of one model{}",
            args.a.display(),
            a.dim,
            args.b.display(),
            b.dim,
            if needs_model { " (texts are embedded with the model; embeddings must come from the same one)" } else { "" }
        );
    }
    check_size(&args.a, &args.b, a.len(), b.len())?;
    let pool = match embedder {
        Some(e) => e.pool,
        None => thread_pool(args.model.threads)?,
    };
    let cosine = retrieve::cosine_matrix(&pool, level(), &a.data, &b.data, a.dim)?;
    let rows: Vec<&[f32]> = if b.len() == 0 { vec![&[]; a.len()] } else { cosine.chunks_exact(b.len()).collect() };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    serde_json::to_writer(&mut out, &Matrix { ids_a: &a.ids, ids_b: &b.ids, cosine: rows })?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// What `similarity` prints: the ids of the rows and of the columns (null where a line has none)
/// and the matrix, row by row (f32 values in their shortest round-trip form).
#[derive(Serialize)]
struct Matrix<'a> {
    ids_a: &'a [Option<String>],
    ids_b: &'a [Option<String>],
    cosine: Vec<&'a [f32]>,
}

/// The file's vectors: embeddings as they are, texts embedded.
fn vectors_of(items: Items, embedder: Option<&Embedder>) -> Result<Vectors> {
    match (items, embedder) {
        (Items::Vectors(v), _) => Ok(v),
        (Items::Texts { ids, texts }, Some(e)) => {
            let data: Vec<f32> = e.embed_all(&texts, "embedding")?.concat();
            Ok(Vectors { ids, dim: e.dim(), data })
        }
        (Items::Texts { .. }, None) => bail!("texts need an embedding model"),
    }
}

fn check_size(a: &Path, b: &Path, n: usize, m: usize) -> Result<()> {
    if n.saturating_mul(m) > MAX_CELLS {
        bail!(
            "{} x {} is a matrix of {} values, over the limit of {MAX_CELLS}: for large sets build an index of {} (`ferrolm index build`) and query it with {} (`ferrolm index query --vectors`)",
            a.display(),
            b.display(),
            n.saturating_mul(m),
            b.display(),
            a.display()
        );
    }
    Ok(())
}
