#!/usr/bin/env python3
"""Single-thread encode throughput of ferrolm, Hugging Face `tokenizers` and tiktoken, side by side.

All three encode the same documents with the SmolLM2 vocabulary, one document per call, special-token
spellings as plain text, on one thread:
  * Hugging Face `tokenizers`: the BPE built from the GGUF's tokens and merges exactly as
    tools/make_tokenizer_fixtures.py builds it (Digits(individual_digits=True) then ByteLevel),
    `encode(doc, add_special_tokens=False)` with `encode_special_tokens = True`;
    TOKENIZERS_PARALLELISM=false and RAYON_NUM_THREADS=1 keep it on one thread. The row
    `hf batch` is `encode_batch` over the whole corpus under the same settings (no per-call Python
    overhead).
  * tiktoken: an Encoding whose mergeable ranks are the GGUF tokens' bytes with rank = token id
    (SmolLM2's ids follow merge order: merge i makes token 252 + i, checked below), and a pattern
    equivalent to SmolLM2's pre-tokenizer (every \\p{N} its own piece, then GPT-2's pattern, with
    whitespace before a digit kept whole because a digit ends the span there); `encode_ordinary`.
    The 21 bytes the vocabulary lacks get ranks past the vocabulary so tiktoken does not fail on
    them; those ids are dropped before comparing (ferrolm and llama.cpp drop such bytes too).
  * ferrolm: `ferrolm tokenizer-bench --json --file CORPUS` (its own warm-up and passes), ids from
    `ferrolm tokenize --no-special --jsonl CORPUS`.

The engines run in turn, round after round (order rotated), so machine noise hits all of them;
each reports the median of its passes. Ids are compared document by document first.

The default corpus (written to --corpus-out) is the distinct texts of the generator in
tools/make_tokenizer_fixtures.py (prose, many scripts, code, emoji, whitespace runs, digits,
control characters, chat markup with special tokens) for its seed and the next seeds until it
holds 1 MiB; no document repeats, so no engine gains from a cache of whole documents.

  cargo build --release
  /work/peers/venv/bin/python benches/tokenizer_vs_peers.py [--model M] [--corpus FILE.jsonl]
      [--rounds 3] [--reps 5]

Needs `tokenizers`, `tiktoken` and `gguf` (pip).
"""
import os

# Before `tokenizers` is imported: its thread pool reads these once.
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from make_tokenizer_fixtures import SEED, Corpus, bytes_to_unicode, hf_tokenizer  # noqa: E402

DEFAULT_MODEL = Path.home() / ".cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf"
CORPUS_BYTES = 1 << 20
CONTROL = 3  # GGUF token type of the special tokens

# SmolLM2's pre-tokenizer as one regex. HF runs Digits(individual_digits=True) first, so every
# \p{N} is a piece and also ends the span the GPT-2 pattern sees; at a span's end `\s+(?!\S)`
# takes the whole whitespace run, hence `\s+(?=\p{N})` before it. ` ?\p{N}+` of GPT-2 is gone
# (no digit is left inside a span).
SMOLLM_PATTERN = r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"""


def build_corpus(min_bytes):
    docs, seen, total, seed = [], set(), 0, SEED
    while total < min_bytes:
        for text, _ in Corpus(seed).documents():
            if text and text not in seen:
                seen.add(text)
                docs.append(text)
                total += len(text.encode("utf-8"))
        seed += 1
    return docs


def read_corpus(path):
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f if line.strip()]
    return [path.read_text(encoding="utf-8")]


def load_vocab(model):
    import gguf

    reader = gguf.GGUFReader(str(model))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    return tokens, types, merges


def tiktoken_encoding(tokens, types, merges):
    """tiktoken merges the adjacent pair whose concatenation has the lowest rank; that is BPE's
    merge order only if each merge's product has a rank that grows with the merge's position."""
    import tiktoken

    vocab = {t: i for i, t in enumerate(tokens)}
    products = [vocab["".join(m.split(" ", 1))] for m in merges]
    if any(b <= a for a, b in zip(products, products[1:])):
        raise SystemExit("token ids do not follow merge order: rank = id would not reproduce the merges")
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    ranks, specials = {}, {}
    for i, (tok, kind) in enumerate(zip(tokens, types)):
        if kind == CONTROL:
            specials[tok] = i
        else:
            ranks[bytes(byte_of[c] for c in tok)] = i
    if len(ranks) + len(specials) != len(tokens):
        raise SystemExit("two tokens spell the same bytes: ranks would not be one per token")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    for k, b in enumerate(missing):
        ranks[bytes([b])] = len(tokens) + k
    enc = tiktoken.Encoding("smollm2", pat_str=SMOLLM_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    return enc, len(tokens), missing


def ferrolm_ids(binary, model, corpus_path, compat="llama-cpp"):
    out = subprocess.run([binary, "tokenize", "--model", str(model), "--no-special", "--jsonl", str(corpus_path),
                          "--compat", compat],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def ferrolm_bench(binary, model, corpus_path, reps):
    out = subprocess.run([binary, "tokenizer-bench", "--model", str(model), "--file", str(corpus_path),
                          "--reps", str(reps), "--json"], check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    return result["seconds"], result["tokens"]


def timed_passes(encode_all, reps):
    """Wall seconds of each pass, and CPU seconds over wall seconds for all of them (1.0 = one
    busy thread; more would mean the engine used other threads)."""
    walls, cpu0 = [], time.process_time()
    for _ in range(reps):
        start = time.perf_counter()
        encode_all()
        walls.append(time.perf_counter() - start)
    return walls, (time.process_time() - cpu0) / sum(walls)


def first_difference(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare(name_a, ids_a, name_b, ids_b, docs, missing_bytes):
    bad = [i for i, (a, b) in enumerate(zip(ids_a, ids_b)) if a != b]
    explained = [i for i in bad if any(b in missing_bytes for b in docs[i].encode("utf-8"))]
    print(f"  {name_a} vs {name_b}: {len(docs) - len(bad)}/{len(docs)} documents identical; "
          f"{len(explained)} of the {len(bad)} that differ contain a byte the vocabulary lacks")
    for i in [i for i in bad if i not in explained][:5]:
        at = first_difference(ids_a[i], ids_b[i])
        print(f"    doc {i} token {at}: {name_a} {ids_a[i][at:at + 6]} vs {name_b} {ids_b[i][at:at + 6]} "
              f"in {docs[i][:60]!r}")
    return len(bad) - len(explained)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--corpus", type=Path, help="JSON lines {\"text\": ...} (or a text file: one document)")
    parser.add_argument("--corpus-out", type=Path, default=Path("/tmp/ferrolm_tokenizer_corpus.jsonl"),
                        help="where the default corpus is written (ferrolm reads it from there)")
    parser.add_argument("--bin", default=os.environ.get("FERROLM_BIN", str(ROOT / "target/release/ferrolm")))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5, help="timed passes per engine per round")
    args = parser.parse_args()

    if args.corpus:
        corpus_path, docs = args.corpus, read_corpus(args.corpus)
    else:
        docs = build_corpus(CORPUS_BYTES)
        corpus_path = args.corpus_out
        with open(corpus_path, "w", encoding="utf-8", newline="\n") as f:
            for text in docs:
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    print(f"corpus: {corpus_path}: {len(docs)} documents, {n_bytes} bytes")

    import tiktoken
    import tokenizers

    tokens, types, merges = load_vocab(args.model)
    hf = hf_tokenizer(tokens, types, merges)
    hf.encode_special_tokens = True
    tt, n_vocab, missing = tiktoken_encoding(tokens, types, merges)
    missing_bytes = set(missing)
    print(f"tokenizers {tokenizers.__version__}, tiktoken {tiktoken.__version__ if hasattr(tiktoken, '__version__') else '?'}, "
          f"ferrolm {args.bin}; vocabulary lacks bytes {missing}")

    print("ids:")
    hf_ids = [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)]
    tt_ids = [[i for i in tt.encode_ordinary(d) if i < n_vocab] for d in docs]
    fl_ids = ferrolm_ids(args.bin, args.model, corpus_path)
    if len(fl_ids) != len(docs):
        raise SystemExit(f"ferrolm tokenize gave {len(fl_ids)} lines for {len(docs)} documents")
    unexplained = compare("ferrolm", fl_ids, "hf", hf_ids, docs, missing_bytes)
    unexplained += compare("ferrolm", fl_ids, "tiktoken", tt_ids, docs, missing_bytes)
    compare("hf", hf_ids, "tiktoken", tt_ids, docs, missing_bytes)
    # ferrolm reproducing Hugging Face where the peers differ (bytes without a token).
    fl_hf_ids = ferrolm_ids(args.bin, args.model, corpus_path, "hf")
    unexplained += compare("ferrolm --compat hf", fl_hf_ids, "hf", hf_ids, docs, missing_bytes)

    def hf_single():
        encode = hf.encode
        for d in docs:
            encode(d, add_special_tokens=False)

    def hf_batch():
        hf.encode_batch(docs, add_special_tokens=False)

    def tt_single():
        encode = tt.encode_ordinary
        for d in docs:
            encode(d)

    python_engines = {"hf": hf_single, "hf batch": hf_batch, "tiktoken": tt_single}
    for run in python_engines.values():
        run()  # warm-up: caches, allocator, first-call costs
    names = ["ferrolm", *python_engines]
    seconds = {n: [] for n in names}
    cpu_ratio = {n: [] for n in python_engines}
    round_medians = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if name == "ferrolm":
                walls, _ = ferrolm_bench(args.bin, args.model, corpus_path, args.reps)
            else:
                walls, ratio = timed_passes(python_engines[name], args.reps)
                cpu_ratio[name].append(ratio)
            seconds[name] += walls
            round_medians[name].append(statistics.median(walls))
        print(f"round {r + 1}: " + ", ".join(f"{n} {n_bytes / round_medians[n][-1] / 1e6:.1f}" for n in names) + " MB/s")

    mbps = {n: n_bytes / statistics.median(seconds[n]) / 1e6 for n in names}
    tokens_per_doc = {"ferrolm": sum(map(len, fl_ids)), "hf": sum(map(len, hf_ids)), "hf batch": sum(map(len, hf_ids)),
                      "tiktoken": sum(map(len, tt_ids))}
    print(f"\n{'engine':<10} {'MB/s':>8} {'M tok/s':>8} {'runs MB/s (min..max)':>22} {'cpu/wall':>9} {'ferrolm / this':>15}")
    for n in names:
        runs = [n_bytes / s / 1e6 for s in seconds[n]]
        ratios = [round_medians[n][i] / round_medians["ferrolm"][i] for i in range(args.rounds)]
        cpu = f"{statistics.mean(cpu_ratio[n]):.2f}" if n in cpu_ratio else "1 thread"
        ratio = "" if n == "ferrolm" else f"{mbps['ferrolm'] / mbps[n]:.2f}x ({min(ratios):.2f}..{max(ratios):.2f})"
        print(f"{n:<10} {mbps[n]:>8.1f} {mbps[n] * tokens_per_doc[n] / n_bytes:>8.2f} "
              f"{min(runs):>10.1f}..{max(runs):<10.1f} {cpu:>9} {ratio:>15}")
    print(f"\n{args.rounds} rounds x {args.reps} passes per engine; MB = 10^6 bytes; ratio = median over all passes, "
          "in brackets the range of per-round ratios")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
