#!/usr/bin/env python3
"""Sentence embeddings per second: `ferrolm embed` against sentence-transformers (PyTorch), the same
texts, model folder and thread count, one after the other in one run.

The texts are sentences of Python's documentation topics (pydoc_data, shipped with CPython):
varied lengths, the same on any machine with the same Python. sentence-transformers encodes them
in batches of 32 (its default) with torch on T threads, after a warm-up batch, model already
loaded; ferrolm is timed as the whole `ferrolm embed` command (loading the model, reading the
JSON lines and writing the .npy included), so the ratio is if anything in the peer's favour.
Both sides' embeddings are compared (cosine of each pair) so that the speed is of the same work.

  cargo build --release
  /work/peers/st-venv/bin/python benches/embed_vs_sentence_transformers.py [-n 2000] [-t 2] [--reps 3]
"""
import argparse
import json
import os
import re
import subprocess
import tempfile
import time

import numpy as np


def sentences(n):
    from pydoc_data.topics import topics
    out = []
    for key in sorted(topics):
        for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", topics[key]):
            s = " ".join(s.split())
            if len(s.split()) >= 3:
                out.append(s)
            if len(out) == n:
                return out
    return out


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000, help="sentences")
    ap.add_argument("-t", type=int, default=2, help="threads, both sides")
    ap.add_argument("--reps", type=int, default=3, help="runs of each side, alternating; the best counts")
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/ferrolm/all-MiniLM-L6-v2"))
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "ferrolm"))
    a = ap.parse_args()
    texts = sentences(a.n)
    words = sum(len(t.split()) for t in texts)
    flags = sorted({f for f in open("/proc/cpuinfo").read().split() if f in ("avx2", "avx512f", "avx512_vnni")})
    print(f"CPU: {cpu_model()} ({' '.join(flags)}), {a.t} threads; {len(texts)} sentences, {words / len(texts):.1f} words on average")

    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(a.t)
    st = SentenceTransformer(a.model, device="cpu")
    st.encode(texts[:32], batch_size=32)

    with tempfile.TemporaryDirectory() as d:
        inp, out = os.path.join(d, "texts.jsonl"), os.path.join(d, "vecs.npy")
        with open(inp, "w") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")
        st_best, fe_best = float("inf"), float("inf")
        for _ in range(a.reps):
            t0 = time.perf_counter()
            st_vecs = st.encode(texts, batch_size=32)
            st_best = min(st_best, time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run([a.binary, "embed", "--model", a.model, "--input", inp, "--out", out, "-t", str(a.t)], check=True)
            fe_best = min(fe_best, time.perf_counter() - t0)
        fe_vecs = np.load(out)
    cos = np.sum(st_vecs * fe_vecs, axis=1) / (np.linalg.norm(st_vecs, axis=1) * np.linalg.norm(fe_vecs, axis=1))
    st_rate, fe_rate = len(texts) / st_best, len(texts) / fe_best
    print(f"sentence-transformers {st_rate:7.1f} sentences/s | ferrolm {fe_rate:7.1f} sentences/s (whole command) | ratio {fe_rate / st_rate:.2f}x "
          f"| cosine min {cos.min():.7f}")
    print(json.dumps({"sentences": len(texts), "threads": a.t, "st": st_rate, "ferrolm": fe_rate, "ratio": fe_rate / st_rate, "cosine_min": float(cos.min())}))


if __name__ == "__main__":
    main()
