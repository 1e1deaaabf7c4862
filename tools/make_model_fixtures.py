#!/usr/bin/env python3
"""Golden fixtures for the model from llama.cpp (through the PyPI package llama-cpp-python).

Writes
  tests/fixtures/greedy.jsonl     greedy 48-token continuations of 10 varied prompts (raw text and
                                  chat-formatted), with llama.cpp's prompt ids, generated ids, text,
                                  and the margin between the top two logits at each step (to tell
                                  a near-tie from a real disagreement);
  tests/fixtures/perplexity.txt   a text of a few thousand tokens (from CPython's pydoc topics);
  tests/fixtures/perplexity.json  llama.cpp's perplexity on it with its method: non-overlapping
                                  chunks of n_ctx tokens, each from an empty cache, NLL averaged
                                  over the second half of every chunk.

Made with (llama-cpp-python 0.3.36, 2 threads):
  python3 -m venv /work/peers/venv && /work/peers/venv/bin/pip install llama-cpp-python numpy jinja2
  /work/peers/venv/bin/python tools/make_model_fixtures.py ~/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import math
import os
import sys

import jinja2
import numpy as np
from llama_cpp import Llama

from greedy_prompts import CHAT_PROMPTS, RAW_PROMPTS  # tools/greedy_prompts.py: a script's folder is on sys.path

N_GEN = 48
PPL_CTX = 512
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")



def logits_of_last(llm):
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()


def greedy(llm, prompt_ids):
    llm.reset()
    llm.eval(prompt_ids)
    out, margins = [], []
    for _ in range(N_GEN):
        logits = logits_of_last(llm)
        top2 = np.argsort(-logits, kind="stable")[:2]
        tok = int(top2[0])
        margins.append(float(logits[top2[0]] - logits[top2[1]]))
        out.append(tok)
        if tok == llm.token_eos():
            break
        llm.eval([tok])
    return out, margins


def perplexity(path, text):
    llm = Llama(model_path=path, n_ctx=PPL_CTX, n_batch=PPL_CTX, n_threads=2, logits_all=True, verbose=False)
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    n_chunks = len(tokens) // PPL_CTX
    nll, count = 0.0, 0
    for c in range(n_chunks):
        chunk = tokens[c * PPL_CTX:(c + 1) * PPL_CTX]
        llm.reset()
        llm.eval(chunk)
        scores = np.array(llm.scores[:PPL_CTX], dtype=np.float64)
        for j in range(PPL_CTX // 2, PPL_CTX - 1):
            row = scores[j]
            m = row.max()
            lse = m + math.log(np.exp(row - m).sum())
            nll += lse - row[chunk[j + 1]]
            count += 1
    return {"ppl": math.exp(nll / count), "tokens": len(tokens), "ctx": PPL_CTX, "chunks": n_chunks, "scored": count}


def main():
    path = os.path.expanduser(sys.argv[1])
    llm = Llama(model_path=path, n_ctx=2048, n_threads=2, verbose=False)
    template = jinja2.Environment().from_string(llm.metadata["tokenizer.chat_template"])
    cases = [(p, False) for p in RAW_PROMPTS]
    for messages in CHAT_PROMPTS:
        cases.append((template.render(messages=messages, add_generation_prompt=True), True))
    with open(os.path.join(FIXTURES, "greedy.jsonl"), "w") as f:
        for prompt, chat in cases:
            ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
            out, margins = greedy(llm, ids)
            text = llm.detokenize(out, special=False).decode("utf-8", errors="replace")
            f.write(json.dumps({"prompt": prompt, "chat": chat, "prompt_ids": ids, "ids": out,
                                "text": text, "top2_margins": margins}, ensure_ascii=False) + "\n")
            print(repr(prompt[-40:]), "->", repr(text[:60]))

    import pydoc_data.topics as topics
    text = "".join(topics.topics[k] for k in ["compound", "exceptions", "naming"])[:12000]
    with open(os.path.join(FIXTURES, "perplexity.txt"), "w") as f:
        f.write(text)
    result = perplexity(path, text)
    with open(os.path.join(FIXTURES, "perplexity.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(result)


if __name__ == "__main__":
    main()
