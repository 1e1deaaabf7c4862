"""Make tests/fixtures/trained_bpe/: byte-level BPE tokenizers trained with Hugging Face `tokenizers`
under the GPT-2, Llama-3 and Qwen2 pre-tokenizer settings, and what HF does with them.

Command that made the committed files (from the repository root):

    /work/peers/venv/bin/python tools/make_trained_bpe_fixtures.py \
        --golden tests/fixtures/tokenizer_golden.jsonl --out tests/fixtures/trained_bpe

and, for the whole held-out corpus uncut (not committed; the test reads it when the environment
variable FERROLM_HELDOUT_IDS names it):

    /work/peers/venv/bin/python tools/make_trained_bpe_fixtures.py \
        --golden tests/fixtures/tokenizer_golden.jsonl --out /tmp/trained_bpe \
        --max-text-bytes 0 --heldout-out /tmp/heldout_ids_full.jsonl

Needs only `tokenizers` (pip). Nothing is downloaded, and the run is deterministic: the training
corpus is CPython's own `pydoc_data.topics` (the help texts of the interpreter: English prose and
Python code), each tokenizer is trained twice and the two must agree, and the held-out texts are
the unique texts of tests/fixtures/tokenizer_golden.jsonl (many scripts, code, emoji, whitespace
runs, controls) plus the traps listed in EXTRA_TEXTS below. Note that `pydoc_data` changes with
the Python version (3.11.7 made the committed files).

Writes:
  gpt2.json, llama3.json, qwen2.json  tokenizer.json files, BPE model (vocabulary VOCAB_SIZE, all
                                      256 byte tokens), ByteLevel decoder, no added tokens. The
                                      pre-tokenizer is ByteLevel(use_regex=True) for gpt2, and
                                      Sequence[Split(pattern, "isolated"), ByteLevel(use_regex=
                                      False)] with the model's own Split regex for llama3 and qwen2,
                                      as in Meta's and Alibaba's published tokenizer.json files.
  heldout_ids.jsonl                   {"text", "gpt2", "llama3", "qwen2"}: HF's ids of each text
                                      (`encode(text, add_special_tokens=False).ids`), each text
                                      cut to --max-text-bytes.
  onig_classes.json                   {"L", "N", "s"}: the code points HF's regex engine (Oniguruma)
                                      puts in \\p{L}, \\p{N} and \\s, as inclusive [first, last]
                                      ranges, found by running Split on every code point.
  split_cases.jsonl                   {"pattern", "behavior", "invert", "text", "pieces"}: what HF's
                                      Split pre-tokenizer makes of short traps, for every behaviour,
                                      both values of invert, and a few patterns ("pattern" is
                                      written as in tokenizer.json: {"Regex": r} or {"String": s}).
"""

import argparse
import json
import os
import sys

import pydoc_data.topics
import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB_SIZE = 3000

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
         r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Texts that hit the places where the three patterns differ from one another and from llama.cpp's
# rewrites of them: case-insensitive contractions (and U+017F LONG S, which Unicode case folding
# makes an 's'), digit runs, line breaks inside whitespace runs, a non-letter glued to a word,
# Unicode whitespace, combining marks, and long runs of one class.
EXTRA_TEXTS = [
    "'\u017f and 'S and '\u017fs, it'\u017f",
    "IT'S WE'LL THEY'RE I'VE I'M HE'D DON'T we'Ll you'rE",
    "x'LL y'Re 'x 'sup ''s '''",
    "1234567890 12 123 1234 12345 v1.2.3 3.14159",
    "\u0663\u0664\u0665\u0666\u0667 \u00bd\u00be \u216b\u216b 7\u00b2",
    "\r\n\r\n  x\n \n y\r\r\n\n",
    "a\t\tb\u00a0c\u3000d \u00a0e\u2009f",
    ".hello (world) ...dots $x #y @z",
    "end.\n\n\nnext line.\r\n",
    "  \n",
    "x  ",
    "word   \t\n\t  word \t word",
    "e\u0301te\u0301 cafe\u0301 \u0915\u093f\u0924\u093e\u092c",
    "\U0001F468\u200d\U0001F469\u200d\U0001F467 \U0001F1FA\U0001F1F8! \U0001F44D\U0001F3FD",
    "\u0085\u2028\u2029x\u200by\ufeffz",
    "\x1c\x1d\x1e\x1fz \x04\x00\x7f",
    "a" * 2000,
    " " * 500 + "x",
    "1" * 1000,
    "'" * 300 + "s",
    "\n" * 200 + "  " * 100,
    "\u4e2d\u6587" * 300,
]


def training_corpus():
    topics = pydoc_data.topics.topics
    return [topics[key] for key in sorted(topics)]


def pre_tokenizer(kind):
    if kind == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pattern = {"llama3": LLAMA3, "qwen2": QWEN2}[kind]
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def train(kind, corpus):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer(kind)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer, length=len(corpus))
    return tok


def truncate(text, max_bytes):
    """The longest prefix of `text` of at most `max_bytes` UTF-8 bytes (all of it for 0)."""
    raw = text.encode("utf-8")
    if max_bytes == 0 or len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")


def heldout_texts(golden, max_bytes):
    texts, seen = [], set()
    with open(golden, encoding="utf-8") as lines:
        originals = [json.loads(line)["text"] for line in lines]
    for text in originals + EXTRA_TEXTS:
        text = truncate(text, max_bytes)
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def all_chars():
    return [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def class_ranges(pattern, chars):
    """Inclusive code point ranges of the characters that HF's regex `pattern` matches."""
    split = pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
    # Characters joined by a separator that is in none of the classes asked about: every match
    # is then one character, and every gap holds at least one separator and something else
    # (or is the separator alone), so the one-character pieces other than it are the members.
    sep = "\x01"
    text = sep.join(chars)
    members = sorted(ord(piece) for piece, _ in split.pre_tokenize_str(text)
                     if len(piece) == 1 and piece != sep)
    ranges = []
    for c in members:
        if ranges and ranges[-1][1] + 1 == c:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return ranges


SPLIT_PATTERNS = [
    {"Regex": GPT2},
    {"Regex": LLAMA3},
    {"Regex": QWEN2},
    {"Regex": r"\s+"},
    {"Regex": r"\p{P}"},
    {"Regex": r"x*"},
    {"Regex": r"(?<=a)b"},
    {"Regex": r"\d{2}"},
    {"Regex": r"[\r\n]"},
    {"String": " "},
    {"String": "a.b"},
]
SPLIT_BEHAVIORS = ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]
SPLIT_TEXTS = [
    "",
    " ",
    "Hello, world!  It's 2024.\n\n\tdef f(x):\r\n",
    "  aa bb  ",
    "xxaxbxx a.b a.ba a\u00a0b",
    "ab ab aab 1234567",
    "'\u017fs 'S IT'S .x \u4e2d\u6587 \U0001F600",
]
SNAKE = {"Removed": "removed", "Isolated": "isolated", "MergedWithPrevious": "merged_with_previous",
         "MergedWithNext": "merged_with_next", "Contiguous": "contiguous"}


def split_cases():
    for pattern in SPLIT_PATTERNS:
        hf_pattern = Regex(pattern["Regex"]) if "Regex" in pattern else pattern["String"]
        for behavior in SPLIT_BEHAVIORS:
            for invert in (False, True):
                split = pre_tokenizers.Split(hf_pattern, behavior=SNAKE[behavior], invert=invert)
                for text in SPLIT_TEXTS:
                    pieces = [piece for piece, _ in split.pre_tokenize_str(text)]
                    yield {"pattern": pattern, "behavior": behavior, "invert": invert,
                           "text": text, "pieces": pieces}


def write_json(path, value):
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        json.dump(value, out, ensure_ascii=False, separators=(",", ":"))
        out.write("\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--golden", required=True, help="tokenizer_golden.jsonl (held-out texts)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--max-text-bytes", type=int, default=600,
                        help="cut each held-out text to this many bytes, 0 for no cut (default 600: "
                             "the ids of all 288 KB take 2.4 MB)")
    parser.add_argument("--heldout-out", help="write the held-out ids here instead of the folder "
                        "(for a bigger uncommitted corpus: see FERROLM_HELDOUT_IDS in the test)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print(f"tokenizers {tokenizers.__version__}, Python {sys.version.split()[0]}")

    corpus = training_corpus()
    kinds = ["gpt2", "llama3", "qwen2"]
    trained = {}
    for kind in kinds:
        first, second = train(kind, corpus), train(kind, corpus)
        if first.to_str() != second.to_str():
            print(f"{kind}: two trainings on the same corpus differ", file=sys.stderr)
            return 1
        trained[kind] = first
        first.save(os.path.join(args.out, f"{kind}.json"), pretty=False)
        model = json.loads(first.to_str())["model"]
        print(f"{kind}: {len(model['vocab'])} tokens, {len(model['merges'])} merges")

    texts = heldout_texts(args.golden, args.max_text_bytes)
    counts = {kind: 0 for kind in kinds}
    heldout_path = args.heldout_out or os.path.join(args.out, "heldout_ids.jsonl")
    with open(heldout_path, "w", encoding="utf-8", newline="\n") as out:
        for text in texts:
            record = {"text": text}
            for kind in kinds:
                record[kind] = trained[kind].encode(text, add_special_tokens=False).ids
                counts[kind] += len(record[kind])
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    total = sum(len(t.encode("utf-8")) for t in texts)
    print(f"{len(texts)} held-out texts, {total} bytes; ids: {counts}")

    chars = all_chars()
    classes = {name: class_ranges(pattern, chars)
               for name, pattern in [("L", r"\p{L}"), ("N", r"\p{N}"), ("s", r"\s")]}
    write_json(os.path.join(args.out, "onig_classes.json"), classes)
    print("classes: " + ", ".join(
        f"{name} {sum(b - a + 1 for a, b in ranges)} code points in {len(ranges)} ranges"
        for name, ranges in classes.items()))

    cases = list(split_cases())
    with open(os.path.join(args.out, "split_cases.jsonl"), "w", encoding="utf-8", newline="\n") as out:
        for case in cases:
            out.write(json.dumps(case, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"{len(cases)} split cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
