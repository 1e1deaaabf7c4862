#!/usr/bin/env python3
"""Greedy continuations of 10 prompts (6 raw, 4 chat) from Hugging Face transformers and from
`ferrolm --model DIR` on the same checkpoint folder, compared token for token.

The folder is a Hugging Face checkpoint (config.json, model.safetensors, tokenizer.json), e.g.
the default model converted by tools/gguf_to_hf.py. transformers runs it in float32 on the CPU
(eager attention), encoding the prompts with its tokenizer; ferrolm gets the same prompt texts.
Where the two differ, the step and transformers' margin between its top two logits there are
printed.

  /work/peers/peft-venv/bin/python tools/gguf_to_hf.py ~/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2-hf
  cargo build --release
  /work/peers/peft-venv/bin/python tools/compare_hf_greedy.py /tmp/smollm2-hf [--n 32]
"""
import argparse
import json
import os
import subprocess
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from greedy_prompts import CHAT_PROMPTS, RAW_PROMPTS  # tools/greedy_prompts.py: a script's folder is on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--binary", default=os.path.join(HERE, "..", "target", "release", "ferrolm"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(a.dir)
    model = AutoModelForCausalLM.from_pretrained(a.dir, dtype=torch.float32, attn_implementation="eager").eval()
    prompts = list(RAW_PROMPTS) + [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in CHAT_PROMPTS]
    theirs = []
    for p in prompts:
        ids = tok(p, return_tensors="pt", add_special_tokens=True).input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=a.n, do_sample=False, output_scores=True, return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
        gen = out.sequences[0, ids.shape[1]:].tolist()
        margins = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
        # Both stop after emitting an end-of-sequence token and list it.
        theirs.append((ids[0].tolist(), gen, margins))

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p, "max_tokens": a.n}) + "\n")
        batch = f.name
    res = subprocess.run([a.binary, "generate", "--model", a.dir, "--batch-file", batch, "--json", "--temperature", "0", "-n", str(a.n), "--threads", "2"],
                         capture_output=True, text=True)
    os.unlink(batch)
    if res.returncode != 0:
        raise SystemExit(f"ferrolm failed: {res.stderr}")
    ours = [json.loads(line)["tokens"] for line in res.stdout.splitlines() if line.strip()]
    same = 0
    for i, ((ids, gen, margins), mine) in enumerate(zip(theirs, ours)):
        if gen == mine:
            same += 1
            print(f"prompt {i}: identical ({len(gen)} tokens)")
        else:
            k = next((j for j, (x, y) in enumerate(zip(gen, mine)) if x != y), min(len(gen), len(mine)))
            print(f"prompt {i}: first difference at token {k} (transformers' top-2 margin there {margins[k] if k < len(margins) else float('nan'):.4f})")
    print(f"identical: {same} of {len(ours)} ({a.n} tokens each, transformers float32 vs ferrolm on {os.path.basename(a.dir.rstrip('/'))})")


if __name__ == "__main__":
    main()
