#!/usr/bin/env python3
"""Dump llama.cpp's logits for every position of a token sequence, to compare numerics with
ferrolm (`cargo run --release -p ferrolm --example compare_logits -- MODEL OUT.bin`).

  /work/peers/venv/bin/python tools/dump_llama_cpp_logits.py MODEL OUT.bin "prompt text" [N_GREEDY] [fa] [decode]

Writes OUT.bin: u32 n_tokens, u32 n_vocab, u32 tokens[n_tokens], f32 logits[n_tokens][n_vocab].
The sequence is the prompt (special tokens parsed, BOS first when the model adds one) followed by
N_GREEDY llama.cpp greedy tokens. With `fa` llama.cpp runs with flash attention on (else off);
the logits come from one batch of the whole sequence, or with `decode` from one call per token.
With LORA=ADAPTER.gguf in the environment llama.cpp applies that adapter (`lora_path`).
"""
import os
import struct
import sys

import numpy as np
from llama_cpp import Llama

model, out, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
n_greedy = int(sys.argv[4]) if len(sys.argv) > 4 else 32
flash = "fa" in sys.argv[5:]
llm = Llama(model_path=model, n_ctx=512, n_threads=2, logits_all=True, verbose=False, flash_attn=flash, lora_path=os.environ.get("LORA"))
tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
llm.eval(tokens)
for _ in range(n_greedy):
    nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    tokens.append(nxt)
    llm.eval([nxt])
llm.reset()
if "decode" in sys.argv[5:]:
    for t in tokens:  # one token per call, like ferrolm's decode steps
        llm.eval([t])
else:
    llm.eval(tokens)  # one batch, like ferrolm's prefill
scores = np.array(llm.scores[:len(tokens)], dtype=np.float32)
with open(out, "wb") as f:
    f.write(struct.pack("<II", len(tokens), scores.shape[1]))
    f.write(np.array(tokens, dtype=np.uint32).tobytes())
    f.write(scores.tobytes())
print(len(tokens), "tokens written to", out)
