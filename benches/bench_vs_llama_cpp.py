#!/usr/bin/env python3
"""Side-by-side speed of ferrolm and llama.cpp on the same model, machine and settings, in one run.

llama.cpp is driven through the low-level API of the PyPI package llama-cpp-python, the way
llama-bench measures: pp = one llama_decode of a P-token batch from an empty cache; tg = N
single-token llama_decode calls from an empty cache; one warm-up, then R repetitions, median.
With `-d D...` both are measured at each depth D as well: the cache first holds D tokens (filled
once, untimed; each repetition rewinds to it), as llama-bench's `-d` and `ferrolm bench -d`.
ferrolm is measured by `ferrolm bench --json` with the same P, N, R and threads. The two run
alternately (llama.cpp, ferrolm, for each thread count) so that machine noise hits both.

  cargo build --release
  /work/peers/venv/bin/python benches/bench_vs_llama_cpp.py [--model M] [-p 512] [-n 128] [-r 5] [-t 2 1] [-d 0 2048 4096 8192] [--fa] [--kernels avx2]

`--fa` turns llama.cpp's flash attention on (its default in llama-server and llama-bench builds of
late 2025; llama-cpp-python leaves it off).

The output names the CPU, ferrolm's kernel level and llama.cpp's CPU features. To compare at the
AVX2 level on an AVX-512 machine, cap ferrolm with `--kernels avx2` (FERROLM_KERNELS) and point
llama-cpp-python at a llama.cpp built without AVX-512 (`bash benches/build_llama_cpp_avx2.sh`
prints the LLAMA_CPP_LIB_PATH to set).
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import time

import llama_cpp.llama_cpp as L


def bench_llama_cpp(model_path, n_prompt, n_gen, reps, threads, depth=0, flash=False):
    L.llama_backend_init()
    model = L.llama_model_load_from_file(model_path.encode(), L.llama_model_default_params())
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    cp = L.llama_context_default_params()
    cp.n_ctx = depth + max(n_prompt, n_gen) + 16
    cp.n_batch = max(n_prompt, 512 if depth else 1)
    cp.n_ubatch = min(cp.n_batch, 512)  # llama-bench's default micro-batch: one decode call, run 512 at a time
    cp.n_threads = cp.n_threads_batch = threads
    cp.flash_attn_type = 1 if flash else 0  # off: the library default of llama-cpp-python
    ctx = L.llama_init_from_model(model, cp)
    mem = L.llama_get_memory(ctx)
    s = 0x2545F4914F6CDD1D
    toks = []
    for _ in range(max(n_prompt, n_gen)):
        s ^= (s << 13) & (2**64 - 1); s ^= s >> 7; s ^= (s << 17) & (2**64 - 1)
        toks.append(s % n_vocab)
    # The depth: filled once, in batches; each test rewinds the cache to it.
    L.llama_memory_clear(mem, True)
    filler = [(toks[i % len(toks)] + 1) % n_vocab for i in range(depth)]
    for i in range(0, depth, cp.n_batch):
        part = filler[i:i + cp.n_batch]
        arr = (ctypes.c_int32 * len(part))(*part)
        L.llama_decode(ctx, L.llama_batch_get_one(arr, len(part)))
    L.llama_synchronize(ctx)

    def rewind():
        if depth:
            L.llama_memory_seq_rm(mem, 0, depth, -1)
        else:
            L.llama_memory_clear(mem, True)

    def pp():
        rewind()
        arr = (ctypes.c_int32 * n_prompt)(*toks[:n_prompt])
        t = time.perf_counter()
        L.llama_decode(ctx, L.llama_batch_get_one(arr, n_prompt))
        L.llama_synchronize(ctx)
        return n_prompt / (time.perf_counter() - t)

    def tg():
        rewind()
        one = (ctypes.c_int32 * 1)()
        t = time.perf_counter()
        for i in range(n_gen):
            one[0] = toks[i]
            L.llama_decode(ctx, L.llama_batch_get_one(one, 1))
        L.llama_synchronize(ctx)
        return n_gen / (time.perf_counter() - t)

    out = {}
    for name, fn, n in (("pp", pp, n_prompt), ("tg", tg, n_gen)):
        if n == 0:
            continue
        fn()
        out[name] = statistics.median(fn() for _ in range(reps))
    L.llama_free(ctx)
    L.llama_model_free(model)
    return out


def bench_ferrolm(binary, model_path, n_prompt, n_gen, reps, threads, kernels, depth=0):
    cmd = [binary, "bench", "--model", model_path, "-p", str(n_prompt), "-n", str(n_gen),
           "-r", str(reps), "-t", str(threads), "-d", str(depth), "--json"]
    env = dict(os.environ, FERROLM_KERNELS=kernels) if kernels else None
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "ferrolm"))
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-r", type=int, default=5)
    ap.add_argument("-t", type=int, nargs="+", default=[2, 1])
    ap.add_argument("-d", type=int, nargs="+", default=[0], help="depths: tokens already in the cache")
    ap.add_argument("--fa", action="store_true", help="llama.cpp with flash attention")
    ap.add_argument("--kernels", choices=["avx2", "avxvnni", "scalar"], help="cap ferrolm's kernel level (FERROLM_KERNELS)")
    a = ap.parse_args()
    features = L.llama_print_system_info().decode().strip()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores | llama.cpp: {features}", flush=True)
    rows = []
    for threads in a.t:
        for depth in a.d:
            lc = bench_llama_cpp(a.model, a.p, a.n, a.r, threads, depth, a.fa)
            fe = bench_ferrolm(a.binary, a.model, a.p, a.n, a.r, threads, a.kernels, depth)
            rows.append((threads, depth, lc, fe))
            at = f" @ d{depth}" if depth else ""
            parts = [f"{name}{n}{at} llama.cpp {lc[name]:7.1f}  ferrolm {fe[name]:7.1f}  ratio {fe[name] / lc[name]:.2f}x"
                     for name, n in (("pp", a.p), ("tg", a.n)) if n > 0]
            print(f"threads {threads}: " + " | ".join(parts) +
                  f" (ferrolm {fe['kernels']} kernels, {fe['sum_order']} order; llama.cpp flash attention {'on' if a.fa else 'off'})", flush=True)
    print(json.dumps([{"threads": t, "depth": d, "llama_cpp": lc, "ferrolm": {k: fe[k] for k in ("pp", "tg") if k in lc}} for t, d, lc, fe in rows]))


if __name__ == "__main__":
    main()
