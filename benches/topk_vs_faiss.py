#!/usr/bin/env python3
"""Exact top-K retrieval: ferrolm against FAISS IndexFlatIP, same vectors, same threads, hits checked.

What runs:
  1. N random unit vectors of dimension D (numpy, seeded; standard normal rows divided by their
     norms, float32) are written to WORKDIR/db.npy, and Q_MAX query vectors the same way to
     WORKDIR/queries.npy. Nothing is committed; rerunning reuses them.
  2. `ferrolm index build --vectors db.npy --out db.idx` makes the index (it normalizes again, so
     the vectors both engines search are the index's own: FAISS reads them from db.idx).
  3. For each query count Q: the example `topk_bench` (crates/retrieve/examples) searches the
     first Q queries, and a FAISS process (this script with --faiss-worker) does the same with
     IndexFlatIP over the index's vectors, each after a warm-up search, REPS timed searches,
     median reported. Each runs under /usr/bin/time -v, which gives its peak resident memory.
     Threads: ferrolm's pool of T threads; FAISS with omp_set_num_threads(T) and
     OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = T.
  4. Hits are compared query by query. Both engines compute each score in f32 but sum in different
     orders (ferrolm one fused multiply-add chain per score, FAISS's BLAS sgemm in its own blocks),
     so scores differ by ~1e-8 and hits whose scores are that close may swap. Every difference is
     reported, with the scores recomputed in f64 to show which order is the exact one.

  cargo build --release -p ferrolm && cargo build --release -p retrieve --example topk_bench
  nice -n 19 /work/peers/faiss-venv/bin/python benches/topk_vs_faiss.py [--n 1000000] [--dim 384]
      [--queries 100 1000] [--k 10] [--threads 2] [--reps 3] [--workdir /tmp/ferrolm-topk-bench]

Needs numpy and faiss-cpu (pip install faiss-cpu numpy), and /usr/bin/time (GNU time).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FERROLM = os.path.join(ROOT, "target", "release", "ferrolm")
TOPK_BENCH = os.path.join(ROOT, "target", "release", "examples", "topk_bench")


def cpu_description():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.+)", out)
    flags = re.search(r"Flags:\s*(.+)", out)
    flags = flags.group(1).split() if flags else []
    return {
        "model": model.group(1).strip() if model else "unknown",
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "cores": os.cpu_count(),
    }


def unit_rows(rng, n, dim):
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(workdir, n, dim, q_max, seed):
    db, queries = os.path.join(workdir, "db.npy"), os.path.join(workdir, "queries.npy")
    meta = os.path.join(workdir, "meta.json")
    want = {"n": n, "dim": dim, "q_max": q_max, "seed": seed}
    if os.path.exists(meta) and json.load(open(meta)) == want:
        return db, queries
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(db, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, 65536):
        end = min(n, start + 65536)
        out[start:end] = unit_rows(rng, end - start, dim)
    out.flush()
    del out
    np.save(queries, unit_rows(rng, q_max, dim))
    json.dump(want, open(meta, "w"))
    for stale in ("db.idx",):
        if os.path.exists(os.path.join(workdir, stale)):
            os.remove(os.path.join(workdir, stale))
    return db, queries


def index_vectors_offset(path):
    """(N, D, byte offset of the vectors) of a ferrolm index file (see crates/retrieve/src/index_file.rs)."""
    with open(path, "rb") as f:
        header = f.read(64)
    assert header[:8] == b"FERROVEC", "not a ferrolm index"
    dim = int.from_bytes(header[12:16], "little")
    n = int.from_bytes(header[16:24], "little")
    name_len = int.from_bytes(header[24:28], "little")
    return n, dim, (64 + name_len + 63) // 64 * 64


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time -v: (stdout, peak RSS in bytes)."""
    proc = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return proc.stdout, int(rss.group(1)) * 1024 if rss else None


def faiss_worker(args):
    import faiss

    faiss.omp_set_num_threads(args.threads)
    n, dim, offset = index_vectors_offset(args.index)
    index = faiss.IndexFlatIP(dim)
    # Added in chunks read from the file, so the process holds one copy of the vectors (FAISS's own).
    chunk = 65536
    with open(args.index, "rb") as f:
        for start in range(0, n, chunk):
            rows = min(chunk, n - start)
            f.seek(offset + start * dim * 4)
            index.add(np.fromfile(f, dtype=np.float32, count=rows * dim).reshape(rows, dim))
    queries = np.load(args.queries_file)[: args.q]
    t = time.perf_counter()
    index.search(queries[: min(8, args.q)], args.k)
    warm = time.perf_counter() - t
    seconds = []
    for _ in range(max(1, args.reps)):
        t = time.perf_counter()
        scores, ids = index.search(queries, args.k)
        seconds.append(time.perf_counter() - t)
    with open(args.hits_out, "w") as out:
        for row_ids, row_scores in zip(ids, scores):
            out.write(" ".join(f"{i}:{s:e}" for i, s in zip(row_ids, row_scores)) + "\n")
    median = sorted(seconds)[len(seconds) // 2]
    print(json.dumps({"engine": "faiss", "version": faiss.__version__, "n": n, "dim": dim, "queries": args.q, "k": args.k, "threads": args.threads,
                      "warmup_s": round(warm, 3), "seconds": seconds, "median_s": median, "qps": args.q / median}))


def read_hits(path):
    rows = []
    for line in open(path):
        pairs = [p.split(":") for p in line.split()]
        rows.append([(int(i), float(s)) for i, s in pairs])
    return rows


def compare(ours, theirs, vectors, queries):
    """Queries whose hits differ, each with the f64 scores of the hits involved."""
    diffs = []
    for qi, (a, b) in enumerate(zip(ours, theirs)):
        if [i for i, _ in a] == [i for i, _ in b]:
            continue
        involved = sorted(set(i for i, _ in a) | set(i for i, _ in b))
        exact = {i: float(np.dot(queries[qi].astype(np.float64), vectors[i].astype(np.float64))) for i in involved}
        exact_order = sorted(involved, key=lambda i: (-exact[i], i))[: len(a)]
        diffs.append({"query": qi, "ferrolm": [i for i, _ in a], "faiss": [i for i, _ in b],
                      "f64_order": exact_order, "ferrolm_matches_f64": [i for i, _ in a] == exact_order,
                      "same_set": set(i for i, _ in a) == set(i for i, _ in b)})
    return diffs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--workdir", default="/tmp/ferrolm-topk-bench")
    p.add_argument("--faiss-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--index", help=argparse.SUPPRESS)
    p.add_argument("--queries-file", help=argparse.SUPPRESS)
    p.add_argument("--q", type=int, help=argparse.SUPPRESS)
    p.add_argument("--hits-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.faiss_worker:
        return faiss_worker(args)

    for binary in (FERROLM, TOPK_BENCH):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: cargo build --release -p ferrolm && cargo build --release -p retrieve --example topk_bench")
    os.makedirs(args.workdir, exist_ok=True)
    cpu = cpu_description()
    print(f"cpu: {cpu['model']}, {cpu['cores']} cores, AVX2 {'yes' if cpu['avx2'] else 'no'}, AVX-512 {'yes' if cpu['avx512f'] else 'no'}")
    t = time.perf_counter()
    db, queries_path = make_data(args.workdir, args.n, args.dim, max(args.queries), args.seed)
    print(f"data: {args.n} x {args.dim} unit vectors ({args.n * args.dim * 4 / 1e9:.3f} GB f32), ready in {time.perf_counter() - t:.1f} s")
    idx = os.path.join(args.workdir, "db.idx")
    if not os.path.exists(idx):
        t = time.perf_counter()
        subprocess.run([FERROLM, "index", "build", "--vectors", db, "--out", idx], check=True)
        print(f"ferrolm index build: {time.perf_counter() - t:.1f} s")
    n, dim, offset = index_vectors_offset(idx)
    vectors = np.memmap(idx, dtype=np.float32, mode="r", offset=offset, shape=(n, dim))
    vector_bytes = n * dim * 4
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    results = []
    for q in args.queries:
        ours_hits, theirs_hits = os.path.join(args.workdir, f"hits-ferrolm-{q}.txt"), os.path.join(args.workdir, f"hits-faiss-{q}.txt")
        out, ours_rss = timed([TOPK_BENCH, idx, queries_path, str(q), str(args.k), str(args.threads), str(args.reps), ours_hits], env)
        ours = json.loads(out)
        out, theirs_rss = timed([sys.executable, os.path.abspath(__file__), "--faiss-worker", "--index", idx, "--queries-file", queries_path,
                                 "--q", str(q), "--k", str(args.k), "--threads", str(args.threads), "--reps", str(args.reps), "--hits-out", theirs_hits], env)
        theirs = json.loads(out)
        queries = np.load(queries_path)[:q]
        diffs = compare(read_hits(ours_hits), read_hits(theirs_hits), vectors, queries)
        results.append({"queries": q, "ferrolm": ours, "faiss": theirs, "ferrolm_peak_rss": ours_rss, "faiss_peak_rss": theirs_rss, "differences": diffs})
        print(f"\nQ = {q}, k = {args.k}, {args.threads} threads (ferrolm level {ours['level']}, faiss {theirs['version']}):")
        print(f"  ferrolm {ours['qps']:9.1f} queries/s  (median of {ours['seconds']} s; warm-up {ours['warmup_s']} s)  peak RSS {ours_rss / 1e9:.3f} GB")
        print(f"  faiss   {theirs['qps']:9.1f} queries/s  (median of {[round(s, 4) for s in theirs['seconds']]} s; warm-up {theirs['warmup_s']} s)  peak RSS {theirs_rss / 1e9:.3f} GB")
        print(f"  ratio   {ours['qps'] / theirs['qps']:.2f}x;  vectors {vector_bytes / 1e9:.3f} GB: peak RSS / vectors = ferrolm {ours_rss / vector_bytes:.3f}, faiss {theirs_rss / vector_bytes:.3f}")
        if not diffs:
            print(f"  hits: identical for all {q} queries (ids and order)")
        else:
            same_sets = sum(d["same_set"] for d in diffs)
            right = sum(d["ferrolm_matches_f64"] for d in diffs)
            print(f"  hits: {q - len(diffs)} of {q} queries identical; {len(diffs)} differ ({same_sets} only in order); ferrolm's order is the f64 order in {right} of them")
            for d in diffs[:10]:
                print(f"    query {d['query']}: ferrolm {d['ferrolm']} faiss {d['faiss']} f64 {d['f64_order']}")
    json.dump({"cpu": cpu, "results": results}, open(os.path.join(args.workdir, "results.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
