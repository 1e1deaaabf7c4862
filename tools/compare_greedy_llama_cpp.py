#!/usr/bin/env python3
"""Greedy continuations of 10 prompts (6 raw, 4 chat) from llama.cpp and from ferrolm on the same
GGUF, compared token for token; and optionally perplexity side by side.

For each prompt it prints whether the two agree; where they do not, the step of the first
difference and llama.cpp's margin between its top two logits there (a margin of a few tenths is
a near-tie that summation order alone can flip; llama.cpp's own flash-attention and plain paths
disagree by that much on small models). llama.cpp runs twice, with flash attention off and on,
and ferrolm is compared with both.

Chat prompts use the model's template from the GGUF, or Gemma's turn format when the file has
none (`<start_of_turn>user ... <end_of_turn>`, system text merged into the first user turn, as
llama.cpp's built-in gemma template does).

  cargo build --release
  /work/peers/venv/bin/python tools/compare_greedy_llama_cpp.py MODEL.gguf [--n 32] [--sum-order llama-cpp] [--ppl]

--ppl also runs `llama-perplexity` (built from the same llama.cpp source: benches/build_llama_server.sh
builds it beside llama-server) and `ferrolm perplexity` on tests/fixtures/perplexity.txt at ctx 512.
"""
import argparse
import json
import os
import re
import subprocess
import tempfile

import llama_cpp
import numpy as np
from llama_cpp import Llama

from greedy_prompts import CHAT_PROMPTS, RAW_PROMPTS  # tools/greedy_prompts.py: a script's folder is on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")



def gemma_chat(messages):
    """Gemma's turn format (the model's role is `model`; a system message joins the first user turn)."""
    out, system = "", ""
    for m in messages:
        if m["role"] == "system":
            system = m["content"] + "\n\n"
            continue
        role = "model" if m["role"] == "assistant" else m["role"]
        out += f"<start_of_turn>{role}\n{system}{m['content']}<end_of_turn>\n"
        system = ""
    return out + "<start_of_turn>model\n"


def render_chat(llm, messages):
    template = llm.metadata.get("tokenizer.chat_template")
    if template:
        import jinja2
        return jinja2.Environment().from_string(template).render(messages=messages, add_generation_prompt=True)
    return gemma_chat(messages)


def greedy(llm, ids, n):
    llm.reset()
    llm.eval(ids)
    out, margins = [], []
    for _ in range(n):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()
        top2 = np.argsort(-logits, kind="stable")[:2]
        tok = int(top2[0])
        margins.append(float(logits[top2[0]] - logits[top2[1]]))
        out.append(tok)
        if llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm._model.model), tok):
            break
        llm.eval([tok])
    return out, margins


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=32, help="tokens per continuation")
    ap.add_argument("--sum-order", default="llama-cpp", help="ferrolm's --sum-order")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "ferrolm"))
    ap.add_argument("--ppl", action="store_true")
    a = ap.parse_args()
    model = os.path.expanduser(a.model)

    runs = {}
    for fa in (False, True):
        llm = Llama(model_path=model, n_ctx=512, n_threads=2, flash_attn=fa, verbose=False)
        prompts = list(RAW_PROMPTS) + [render_chat(llm, m) for m in CHAT_PROMPTS]
        runs[fa] = []
        for p in prompts:
            ids = llm.tokenize(p.encode(), add_bos=True, special=True)
            runs[fa].append((ids,) + greedy(llm, ids, a.n))
        del llm

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p, "max_tokens": a.n}) + "\n")
        batch = f.name
    res = subprocess.run([a.binary, "generate", "--model", model, "--batch-file", batch, "--json", "--temperature", "0", "-n", str(a.n),
                          "--sum-order", a.sum_order, "--ctx", "512", "--threads", "2"], capture_output=True, text=True)
    os.unlink(batch)
    if res.returncode != 0:
        raise SystemExit(f"ferrolm failed: {res.stderr}")
    ours = [json.loads(line)["tokens"] for line in res.stdout.splitlines() if line.strip()]

    print(f"model: {os.path.basename(model)}; {a.n} tokens per prompt; ferrolm --sum-order {a.sum_order}")
    for fa in (False, True):
        same = 0
        print(f"llama.cpp flash attention {'on' if fa else 'off'}:")
        for i, ((ids, theirs, margins), mine) in enumerate(zip(runs[fa], ours)):
            if theirs == mine:
                same += 1
                print(f"  prompt {i}: identical ({len(mine)} tokens)")
            else:
                k = next((j for j, (x, y) in enumerate(zip(theirs, mine)) if x != y), min(len(theirs), len(mine)))
                m = margins[k] if k < len(margins) else float("nan")
                print(f"  prompt {i}: first difference at token {k}, llama.cpp's top-2 margin there {m:.3f}")
        print(f"  identical: {same} of {len(ours)}")
    same_peer = sum(x[1] == y[1] for x, y in zip(runs[False], runs[True]))
    print(f"llama.cpp with flash attention off vs on: {same_peer} of {len(ours)} identical")

    if a.ppl:
        text = os.path.join(ROOT, "tests", "fixtures", "perplexity.txt")
        perp = os.environ.get("LLAMA_PERPLEXITY", "/work/peers/llama-server/build/bin/llama-perplexity")
        peer = subprocess.run([perp, "-m", model, "-f", text, "-c", "512", "-b", "512", "-t", "2"], capture_output=True, text=True)
        m = re.search(r"Final estimate: PPL = ([0-9.]+)", peer.stdout + peer.stderr)
        mine = subprocess.run([a.binary, "perplexity", "--model", model, "--file", text, "--ctx", "512", "--threads", "2", "--sum-order", a.sum_order],
                              capture_output=True, text=True)
        m2 = re.search(r"perplexity[^0-9]*([0-9.]+)", mine.stdout + mine.stderr)
        print(f"perplexity (ctx 512, tests/fixtures/perplexity.txt): llama.cpp {m.group(1) if m else '?'}, ferrolm {m2.group(1) if m2 else '?'}")
        if m and m2:
            print(f"  difference {100 * (float(m2.group(1)) / float(m.group(1)) - 1):+.3f}%")


if __name__ == "__main__":
    main()
