#!/usr/bin/env python3
"""Make tests/fixtures/logits.{json,bin}: llama.cpp's logits on the default model, for the test
that compares them bit for bit (crates/cli/tests/golden_logits.rs, llama.cpp's summation order).

  /work/peers/venv/bin/python tools/make_logits_fixture.py ~/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf

The sequence is a chat-formatted prompt (special tokens parsed) followed by N_GREEDY tokens that
llama.cpp chooses greedily, one eval call per token. Stored, to keep the fixture small, at every
STRIDE-th vocabulary id (plus each row's argmax):
- "prefill" rows: the whole sequence evaluated in one batch (ferrolm's prompt path), at a few
  positions;
- "decode" rows: the rows of the one-token eval calls that chose the greedy tokens (ferrolm's
  decode path).
logits.bin holds the f32 values (little-endian), prefill rows first, each row at the "ids".

ferrolm's `llama-cpp` summation order reproduces llama.cpp built with AVX-512, whose attention sums
its f16 dot products 16 lanes at a time; an AVX2-only build sums 8 lanes at a time, so its logits
differ past the first position. The fixture records the build ("avx512": true/false) and the test
compares bit for bit only against an AVX-512 build; make it on an AVX-512 machine.
"""
import json
import os
import struct
import sys

import numpy as np
from llama_cpp import Llama, __version__

STRIDE = 16
N_GREEDY = 6
PROMPT = "<|im_start|>user\nWhat is the tallest mountain in Europe?<|im_end|>\n<|im_start|>assistant\n"

model = sys.argv[1]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
llm = Llama(model_path=model, n_ctx=512, n_threads=2, n_batch=512, logits_all=True, verbose=False)
tokens = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
n_prompt = len(tokens)
llm.eval(tokens)
decode_rows = {}
for _ in range(N_GREEDY):
    row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    nxt = int(np.argmax(row))
    if llm.n_tokens > n_prompt:
        decode_rows[llm.n_tokens - 1] = row  # made by a one-token eval call
    tokens.append(nxt)
    llm.eval([nxt])
decode_rows[llm.n_tokens - 1] = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
llm.reset()
llm.eval(tokens)  # the whole sequence in one batch
prefill = np.array(llm.scores[: len(tokens)], dtype=np.float32)
n_vocab = prefill.shape[1]
prefill_positions = [0, n_prompt // 2, n_prompt - 1, len(tokens) - 1]
decode_positions = sorted(decode_rows)
rows = [prefill[p] for p in prefill_positions] + [decode_rows[p] for p in decode_positions]
ids = sorted(set(range(0, n_vocab, STRIDE)) | {int(np.argmax(r)) for r in rows})
with open(os.path.join(out, "logits.bin"), "wb") as f:
    for r in rows:
        f.write(np.ascontiguousarray(r[ids], dtype="<f4").tobytes())
system = llama_cpp_info = __import__("llama_cpp").llama_print_system_info().decode()
meta = {
    "llama_cpp_system_info": system.strip(),
    "avx512": "AVX512 = 1" in system,
    "about": "llama.cpp's logits (llama-cpp-python %s) on SmolLM2-135M-Instruct Q4_1, at every %dth vocabulary id and each row's argmax; see tools/make_logits_fixture.py" % (__version__, STRIDE),
    "command": "/work/peers/venv/bin/python tools/make_logits_fixture.py ~/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf",
    "tokens": tokens,
    "n_prompt": n_prompt,
    "n_vocab": n_vocab,
    "ids": ids,
    "prefill_positions": prefill_positions,
    "decode_positions": decode_positions,
}
with open(os.path.join(out, "logits.json"), "w") as f:
    json.dump(meta, f)
    f.write("\n")
print("%d tokens, %d prefill + %d decode rows of %d ids" % (len(tokens), len(prefill_positions), len(decode_positions), len(ids)))
