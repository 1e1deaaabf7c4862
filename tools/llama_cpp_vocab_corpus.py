#!/usr/bin/env python3
"""llama.cpp's ids for a corpus of our own, on each of its test vocabularies.

For every models/ggml-vocab-NAME.gguf of the llama.cpp tree, writes OUT/ggml-vocab-NAME.gguf (a
symlink), OUT/ggml-vocab-NAME.gguf.inp (the corpus texts, separated as llama.cpp's .inp files are)
and OUT/ggml-vocab-NAME.gguf.out (llama.cpp's ids for each, tokenized as test-tokenizer-0 does:
no BOS/EOS, no special parsing), so that

    cargo run -p model --example vocab_vectors -- OUT

compares ferrolm with llama.cpp on them. The corpus is the text of tests/fixtures/
tokenizer_golden.jsonl (prose, code, many scripts, emoji, whitespace runs) plus extra lines below.
Needs llama-cpp-python (the /work/peers/venv one).

usage: llama_cpp_vocab_corpus.py MODELS_DIR OUT_DIR
"""
import json
import os
import sys
from pathlib import Path

import llama_cpp

SEP = "\n__ggml_vocab_test__\n"

EXTRA = [
    "می‌خواهم به خانه بروم",  # Persian with a zero-width non-joiner
    "«Привет», — сказал он. «Как дела?»",
    "Cửa Việt, Hà Nội, Đà Nẵng; façade, naïve, Ærøskøbing, ß, İstanbul",
    "Kelvin: 5 K (U+212A), ſtraße, ﬁne ligature",
    "1234567890 12 345 6789 ½ ¾ ٣٤٥ ০১২",
    "   leading and trailing   \n\n\t\tindent\r\n",
    "it's IT'S we'LL they're 'd 'x",
    "中文字符和日本語のテキスト、한국어 텍스트。",
    "$+<=>^`|~ !\"#%&'()*,-./:;?@[\\]_{}",
    "😀👍🏽 e\u0301 a\u0308 \u200d\u200c\ufeff",
]


def main() -> None:
    models, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parent.parent
    texts = []
    seen = set()
    for line in open(root / "tests/fixtures/tokenizer_golden.jsonl", encoding="utf-8"):
        t = json.loads(line)["text"]
        if t not in seen and SEP not in t and t:
            seen.add(t)
            texts.append(t)
    texts += EXTRA
    for gguf in sorted(models.glob("ggml-vocab-*.gguf")):
        try:
            llm = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
        except Exception as e:  # noqa: BLE001
            print(f"{gguf.name}: llama.cpp cannot load it: {e}")
            continue
        lines = []
        for t in texts:
            ids = llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)
            lines.append(" ".join(str(i) for i in ids))
        link = out / gguf.name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(gguf.resolve(), link)
        (out / (gguf.name + ".inp")).write_text(SEP.join(texts), encoding="utf-8")
        (out / (gguf.name + ".out")).write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{gguf.name}: {len(texts)} texts")


if __name__ == "__main__":
    main()
