#!/usr/bin/env python3
"""Writes tests/fixtures/quantize.json: rows of real weights in f32 and the bytes llama-quantize
makes of them, for every block format `ferrolm quantize` writes (Q8_0, Q4_0, Q4_1, Q5_0 from
fallbacks, Q4_K, Q6_K), so that our quantizers are checked bit for bit against llama.cpp's.

The source is an F32 GGUF of the default model:
  /work/peers/peft-venv/bin/python tools/gguf_to_hf.py ~/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2-hf
  target/release/ferrolm quantize --in /tmp/smollm2-hf --out /tmp/smollm2-f32.gguf --type f32
  /work/peers/peft-venv/bin/python tools/make_quantize_fixture.py /tmp/smollm2-f32.gguf

llama-quantize comes from the llama.cpp build of benches/build_llama_server.sh (LLAMA_BIN).
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = 2
# (llama-quantize type, tensor, the format llama-quantize gives it there)
CASES = [
    ("Q8_0", "blk.0.attn_q.weight", "Q8_0"),
    ("Q4_0", "blk.0.attn_q.weight", "Q4_0"),
    ("Q4_1", "blk.0.attn_q.weight", "Q4_1"),
    ("Q4_K_M", "blk.0.attn_q.weight", "Q5_0"),
    ("Q4_K_M", "blk.3.ffn_down.weight", "Q4_K"),
    ("Q4_K_M", "blk.0.ffn_down.weight", "Q6_K"),
]


def tensor(path, name):
    for t in GGUFReader(path).tensors:
        if t.name == name:
            return t
    raise SystemExit(f"{name} not in {path}")


def main():
    src = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "..", "tests", "fixtures", "quantize.json")
    quantize = os.path.join(os.environ.get("LLAMA_BIN", "/work/peers/llama-server/build/bin"), "llama-quantize")
    work = tempfile.mkdtemp()
    made = {}
    entries = []
    for qtype, name, fmt in CASES:
        if qtype not in made:
            made[qtype] = os.path.join(work, f"{qtype}.gguf")
            subprocess.run([quantize, src, made[qtype], qtype, "2"], check=True, capture_output=True)
        t = tensor(made[qtype], name)
        assert t.tensor_type.name == fmt, (name, t.tensor_type.name, fmt)
        s = tensor(src, name)
        cols = int(s.shape[0])
        f32 = np.asarray(s.data, dtype=np.float32).reshape(-1, cols)[:ROWS]
        q = np.asarray(t.data, dtype=np.uint8)
        q = q.reshape(-1, q.shape[-1])[:ROWS]
        entries.append({"format": fmt, "tensor": name, "cols": cols, "source_f32le_hex": f32.astype("<f4").tobytes().hex(),
                        "bytes_hex": q.tobytes().hex()})
        print(f"{fmt}: {name}, {ROWS} rows of {cols}")
    with open(out, "w") as f:
        json.dump({"made_by": "tools/make_quantize_fixture.py (llama-quantize of llama-cpp-python 0.3.36's llama.cpp)", "cases": entries}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
