//! Top-K search speed on an index file, for `benches/topk_vs_faiss.py` (which runs FAISS on the
//! same vectors and checks the hits).
//!
//! ```text
//! cargo run --release -p retrieve --example topk_bench -- INDEX QUERIES.npy Q K THREADS REPS HITS_OUT
//! ```
//!
//! Searches the first Q rows of QUERIES.npy as they are (the script writes unit vectors, so the
//! inner product is the cosine and FAISS IndexFlatIP gets the same numbers), after a warm-up
//! search of a few queries that reads the whole index once (page faults of the map, caches).
//! Prints one JSON object: the seconds of each of REPS timed searches, queries/s of the median,
//! the kernel level. Writes the hits of the last search to HITS_OUT, one line per query:
//! `index:score index:score ...`, best first.

use std::io::Write;
use std::time::Instant;

use kernels::{Level, ThreadPool};
use retrieve::npy::NpyReader;
use retrieve::{top_k, VectorIndex};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [index, queries, q, k, threads, reps, hits_out] = &args[..] else {
        return Err("usage: topk_bench INDEX QUERIES.npy Q K THREADS REPS HITS_OUT".into());
    };
    let (q, k, threads, reps): (usize, usize, usize, usize) = (q.parse()?, k.parse()?, threads.parse()?, reps.parse()?);
    let index = VectorIndex::open(index)?;
    let file = std::fs::File::open(queries)?;
    let len = file.metadata()?.len();
    let mut reader = NpyReader::new(std::io::BufReader::new(file), Some(len))?;
    if reader.cols() != index.dim() || reader.rows() < q {
        return Err(format!("{queries} is ({}, {}); wanted at least {q} queries of dimension {}", reader.rows(), reader.cols(), index.dim()).into());
    }
    let mut data = reader.read_all()?;
    data.truncate(q * index.dim());
    let (pool, level, d) = (ThreadPool::new(threads), Level::current(), index.dim());

    let warm = Instant::now();
    top_k(&pool, level, index.vectors(), d, &data[..d * q.min(8)], k)?;
    let warm_s = warm.elapsed().as_secs_f64();

    let mut seconds = Vec::with_capacity(reps);
    let mut hits = Vec::new();
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        hits = top_k(&pool, level, index.vectors(), d, &data, k)?;
        seconds.push(start.elapsed().as_secs_f64());
    }
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];

    let mut out = std::io::BufWriter::new(std::fs::File::create(hits_out)?);
    for query in &hits {
        let line: Vec<String> = query.iter().map(|h| format!("{}:{:e}", h.index, h.score)).collect();
        writeln!(out, "{}", line.join(" "))?;
    }
    out.flush()?;
    println!(
        "{{\"engine\": \"ferrolm\", \"n\": {}, \"dim\": {d}, \"queries\": {q}, \"k\": {k}, \"threads\": {}, \"level\": \"{level:?}\", \"warmup_s\": {warm_s:.3}, \"seconds\": {seconds:?}, \"median_s\": {median:.4}, \"qps\": {:.1}}}",
        index.len(),
        pool.n_threads(),
        q as f64 / median
    );
    Ok(())
}
