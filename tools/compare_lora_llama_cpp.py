#!/usr/bin/env python3
"""Greedy answers with a LoRA adapter in llama.cpp (llama-cpp-python, `lora_path`) and in ferrolm
(`generate --lora`, llama.cpp's summation order), on the same prompt texts: does llama.cpp load our
GGUF adapter, and do the two engines give the same text?

  cargo build --release
  /work/peers/venv/bin/python tools/compare_lora_llama_cpp.py MODEL.gguf ADAPTER.gguf examples/numbers/eval.jsonl [N]

Each chat record's messages but the last become a ChatML prompt with SmolLM2's default system
prompt when the record has none (what its chat template renders); the last message is the expected
answer. Prints how many answers each engine gets right and how many texts are identical.
"""
import json
import subprocess
import sys
import tempfile

import numpy as np
from llama_cpp import Llama

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
model, adapter, data = sys.argv[1], sys.argv[2], sys.argv[3]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 40
prompts, expected = [], []
for line in open(data):
    if len(prompts) == n:
        break
    msgs = json.loads(line)["messages"]
    text = "" if msgs[0]["role"] == "system" else SYSTEM
    for m in msgs[:-1]:
        text += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    prompts.append(text + "<|im_start|>assistant\n")
    expected.append(msgs[-1]["content"])

llm = Llama(model_path=model, lora_path=adapter, n_ctx=512, n_threads=2, verbose=False, logits_all=True)
theirs = []
for p in prompts:
    llm.reset()
    llm.eval(llm.tokenize(p.encode(), add_bos=False, special=True))
    out = []
    for _ in range(16):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if nxt == llm.token_eos():
            break
        out.append(nxt)
        llm.eval([nxt])
    theirs.append(llm.detokenize(out).decode("utf-8", "replace").strip())

with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as f:
    for p in prompts:
        f.write(json.dumps({"prompt": p, "max_tokens": 16}) + "\n")
    f.flush()
    run = subprocess.run(["target/release/ferrolm", "generate", "--model", model, "--lora", adapter, "--sum-order", "llama-cpp",
                          "--temperature", "0", "--batch-file", f.name, "--json", "-t", "2"], capture_output=True, text=True, check=True)
ours = [json.loads(l)["text"].strip() for l in run.stdout.splitlines()]
same = sum(a == b for a, b in zip(ours, theirs))
print(f"{len(prompts)} prompts: ferrolm right {sum(a == e for a, e in zip(ours, expected))}, llama.cpp right "
      f"{sum(a == e for a, e in zip(theirs, expected))}, identical texts {same}")
for i, (a, b) in enumerate(zip(ours, theirs)):
    if a != b:
        print(f"  {i}: ferrolm {a!r}, llama.cpp {b!r}, expected {expected[i]!r}")
