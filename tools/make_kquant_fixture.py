#!/usr/bin/env python3
"""Writes tests/fixtures/kquants.json: random blocks of every 5-bit and K-quant GGUF format and
their values as gguf-py (the llama.cpp project's Python package) dequantizes them, so that our
dequantizers are checked bit for bit against the peer's.

Each format gets 3 rows of 512 values (2 super-blocks, or 16 blocks of 32). The bytes are random
except the f16 scale fields, which are set to finite values of either sign (and an occasional 0)
so every value is a number.

  /work/peers/peft-venv/bin/python tools/make_kquant_fixture.py [tests/fixtures/kquants.json]
"""
import json
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

# name, type, bytes per block, values per block, offsets of f16 fields in a block
FORMATS = [
    ("Q5_0", T.Q5_0, 22, 32, [0]),
    ("Q5_1", T.Q5_1, 24, 32, [0, 2]),
    ("Q2_K", T.Q2_K, 84, 256, [80, 82]),
    ("Q3_K", T.Q3_K, 110, 256, [108]),
    ("Q4_K", T.Q4_K, 144, 256, [0, 2]),
    ("Q5_K", T.Q5_K, 176, 256, [0, 2]),
    ("Q6_K", T.Q6_K, 210, 256, [208]),
]
ROWS, K = 3, 512


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/kquants.json"
    rng = np.random.default_rng(20261207)
    entries = []
    for name, qtype, nbytes, per_block, f16_fields in FORMATS:
        blocks = ROWS * K // per_block
        data = rng.integers(0, 256, size=(blocks, nbytes), dtype=np.uint8)
        for b in range(blocks):
            for at in f16_fields:
                v = 0.0 if rng.random() < 0.05 else float(rng.uniform(1e-3, 0.1) * rng.choice([-1, 1]))
                data[b, at:at + 2] = np.frombuffer(np.float16(v).tobytes(), dtype=np.uint8)
        rows = data.reshape(ROWS, -1)
        values = quants.dequantize(rows, qtype).astype(np.float32)
        assert values.shape == (ROWS, K) and np.isfinite(values).all()
        entries.append({
            "format": name,
            "rows": ROWS,
            "cols": K,
            "bytes_hex": rows.tobytes().hex(),
            "values_f32le_hex": values.astype("<f4").tobytes().hex(),
        })
    from importlib.metadata import version
    doc = {"made_by": f"tools/make_kquant_fixture.py with gguf-py {version('gguf')} (gguf.quants.dequantize)",
           "formats": entries}
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {out_path}: {len(entries)} formats")


if __name__ == "__main__":
    main()
