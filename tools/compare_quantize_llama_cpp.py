#!/usr/bin/env python3
"""`ferrolm quantize` against llama-quantize on the same source model, type by type: the tensor
types each chose, how many tensors are byte-identical, and the perplexity of both outputs with
llama-perplexity (the same program for both, so the files are compared, not the engines).

The source is an F32 GGUF; `ferrolm quantize --in DIR --out SRC.gguf --type f32` makes one from a
Hugging Face folder (tools/gguf_to_hf.py makes that folder from the default model).

  cargo build --release
  /work/peers/peft-venv/bin/python tools/compare_quantize_llama_cpp.py SRC.gguf [--types q8_0 q4_0 q4_1 q4_k_m q6_k] [--ppl-text tests/fixtures/perplexity.txt]

llama-quantize and llama-perplexity come from the llama.cpp build of benches/build_llama_server.sh
(LLAMA_BIN, default /work/peers/llama-server/build/bin).
"""
import argparse
import os
import re
import subprocess
import tempfile

import numpy as np
from gguf import GGUFReader

HERE = os.path.dirname(os.path.abspath(__file__))


def tensors(path):
    return {t.name: (t.tensor_type.name, np.asarray(t.data).tobytes()) for t in GGUFReader(path).tensors}


def ppl(binary, model, text):
    out = subprocess.run([binary, "-m", model, "-f", text, "-c", "512", "-b", "512", "-t", "2"], capture_output=True, text=True)
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", out.stdout + out.stderr)
    return float(m.group(1)) if m else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("--types", nargs="+", default=["q8_0", "q4_0", "q4_1", "q4_k_m", "q6_k"])
    ap.add_argument("--ppl-text", default=os.path.join(HERE, "..", "tests", "fixtures", "perplexity.txt"))
    ap.add_argument("--binary", default=os.path.join(HERE, "..", "target", "release", "ferrolm"))
    a = ap.parse_args()
    bin_dir = os.environ.get("LLAMA_BIN", "/work/peers/llama-server/build/bin")
    work = tempfile.mkdtemp(prefix="ferrolm-quantize-")
    for t in a.types:
        ours, theirs = os.path.join(work, f"ours-{t}.gguf"), os.path.join(work, f"llama-{t}.gguf")
        subprocess.run([a.binary, "quantize", "--in", a.src, "--out", ours, "--type", t], check=True, capture_output=True)
        subprocess.run([os.path.join(bin_dir, "llama-quantize"), a.src, theirs, t.upper(), "2"], check=True, capture_output=True)
        x, y = tensors(ours), tensors(theirs)
        same_type = sum(x[n][0] == y[n][0] for n in y if n in x)
        same_bytes = sum(x[n] == y[n] for n in y if n in x)
        types = sorted({v[0] for v in x.values()})
        p_ours, p_theirs = ppl(os.path.join(bin_dir, "llama-perplexity"), ours, a.ppl_text), ppl(os.path.join(bin_dir, "llama-perplexity"), theirs, a.ppl_text)
        print(f"{t:7} types {'/'.join(types):24} same type {same_type}/{len(y)}, byte-identical {same_bytes}/{len(y)}; "
              f"llama-perplexity: ours {p_ours:.4f}, llama-quantize's {p_theirs:.4f} ({100 * (p_ours / p_theirs - 1):+.3f}%)")
        os.unlink(ours)
        os.unlink(theirs)


if __name__ == "__main__":
    main()
