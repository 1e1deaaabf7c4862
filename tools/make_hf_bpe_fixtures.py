"""Make tests/fixtures/hf/bpe/: BPE tokenizer.json files and what Hugging Face `tokenizers` makes of
held-out text with them, for crates/tokenizer/tests/hf_bpe.rs.

Command that made the committed files (from the repository root):

    /work/peers/venv/bin/python tools/make_hf_bpe_fixtures.py \
        --golden tests/fixtures/tokenizer_golden.jsonl \
        --trained tests/fixtures/trained_bpe --out tests/fixtures/hf/bpe

Needs only `tokenizers` (pip). Nothing is downloaded and the run is deterministic: the training
corpus is CPython's `pydoc_data.topics` (as for tools/make_trained_bpe_fixtures.py), each tokenizer
is trained twice and the two must agree. Held-out texts: the unique texts of
tokenizer_golden.jsonl, then EXTRA_TEXTS below.

Writes:
  llama2.json    SentencePiece-style BPE as Llama-2 and Mistral ship it in tokenizer.json: normalizer
                 Sequence[Prepend("▁"), Replace(" ", "▁")], no pre-tokenizer, model BPE with
                 byte_fallback and fuse_unk (tokens <unk> <s> </s>, then <0x00>..<0xFF>, then the
                 learned ones: VOCAB_SIZE in all), decoder Sequence[Replace("▁", " "), ByteFallback,
                 Fuse, Strip(" ", 1, 0)], post-processor "<s> $A". Trained with a Metaspace
                 pre-tokenizer so that no merge crosses a word, as SentencePiece's never do.
  smollm2.json   byte-level BPE as SmolLM2 ships it: pre-tokenizer Sequence[Digits(individual),
                 ByteLevel(use_regex)], ByteLevel decoder and post-processor, added special
                 tokens <|endoftext|> <|im_start|> <|im_end|>. The vocabulary lacks the tokens of
                 MISSING_BYTES (SmolLM2's lacks 21 bytes too), which Hugging Face drops.
  meta.json      {"head_bytes", "extra_texts": [...], "tokenizers": {name: {"file", "patch",
                 "special_prefix", "special_suffix"}}}. A tokenizer is its file (relative to
                 tests/fixtures) with the top-level keys of "patch" replaced ("model" keys are
                 merged into the model instead). Encoding with special tokens gives
                 special_prefix + ids + special_suffix (offsets (0, 0)) on every held-out text.
  golden.jsonl   one line per tokenizer and held-out text: {"tok", "doc", "n", "ids_fnv",
                 "offsets_fnv"[, "decoded"|"decoded_fnv"][, "decoded_skip"|"decoded_skip_fnv"],
                 "head_ids", "head_spans"}. `doc` numbers the held-out texts (the unique texts of
                 tokenizer_golden.jsonl first, then extra_texts). Of Hugging Face's encoding
                 without special tokens, "n" is the number of ids, "ids_fnv" the FNV-1a 64 hash
                 (hex) of the ids as little-endian u32, "offsets_fnv" that of the offsets
                 (start, end, start, end, ...) as u32. The offsets are what the Python binding
                 reports: character offsets, converted from the library's byte offsets by its
                 BytesToCharOffsetConverter (a byte offset inside a character becomes that
                 character's index; an offset it cannot convert stays a byte offset).
                 "decoded" is decode(ids, skip_special_tokens=False) and "decoded_skip" the same
                 with True; each is left out when it equals the text, and given as a hash of its
                 UTF-8 when longer than 256 bytes. "head_ids" and "head_spans" are the encoding
                 of the text cut to head_bytes bytes (at a character boundary), verbatim: the
                 spans are its offsets, delta coded ([start0, end0 - start0, start1 - end0, ...]).
"""

import argparse
import copy
import json
import os
import sys

import pydoc_data.topics
import tokenizers
from tokenizers import (Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        processors, trainers)

VOCAB_SIZE = 2000
SPACE = "\u2581"
# Each text's encoding is kept as hashes; the encoding of its first HEAD_BYTES bytes verbatim.
HEAD_BYTES = 64
# Control bytes without a token in smollm2.json (as SmolLM2's vocabulary lacks 21 bytes).
MISSING_BYTES = list(range(0x00, 0x09)) + list(range(0x0E, 0x1A))
SMOLLM2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

EXTRA_TEXTS = [
    "",
    " ",
    "   ",
    "  leading and trailing  ",
    "Hello",
    "<s>Hello</s> <unk> and <0x41> written out",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "a\x04b \x04\x04 !\x04! \x00x\x1f \x7f",
    "\u2581already\u2581\u2581metaspace \u2581",
    "1234567890 12 \u00b2\u00b3 \u0663\u0664\u0665 \u216b 3.14",
    "\u4e2d\u6587 byte fallback \U0001F600 \U0001F468\u200d\U0001F469\u200d\U0001F467",
    "e\u0301te\u0301 \u00e9t\u00e9 \u0915\u093f\u0924\u093e\u092c",
    "tabs\tand\nnewlines\r\n\r\n \n",
    "x" * 300,
    " " * 64 + "x",
    "\u2581" * 40,
    "it's IT'S we'll",
]


def training_corpus():
    topics = pydoc_data.topics.topics
    return [topics[key] for key in sorted(topics)]


def train_llama2(corpus):
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always",
                                                 split=True)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, show_progress=False,
                                  special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens)
    tok.train_from_iterator(corpus, trainer, length=len(corpus))
    spec = json.loads(tok.to_str())
    # The byte tokens belong to the vocabulary, not to the added tokens: "<0x41>" written in a
    # text is plain text, as in Llama-2's file.
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in byte_tokens]
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE),
                                           normalizers.Replace(" ", SPACE)])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def train_smollm2(corpus):
    missing = {byte_level_char(b) for b in MISSING_BYTES}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, show_progress=False,
                                  special_tokens=SMOLLM2_SPECIALS,
                                  initial_alphabet=[c for c in alphabet if c not in missing])
    tok.train_from_iterator(corpus, trainer, length=len(corpus))
    vocab = tok.get_vocab()
    absent = [c for c in missing if c in vocab]
    if absent:
        raise SystemExit(f"smollm2: the corpus brought in byte tokens meant to be missing: {absent}")
    return tok


def byte_level_char(byte):
    """GPT-2's spelling of a byte (as crates/tokenizer/src/byte_level.rs)."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    if byte in printable:
        return chr(byte)
    return chr(0x100 + [b for b in range(256) if b not in printable].index(byte))


def trained_twice(train, corpus, name):
    first, second = train(corpus), train(corpus)
    if first.to_str() != second.to_str():
        raise SystemExit(f"{name}: two trainings on the same corpus differ")
    return first


def patched(spec, patch):
    spec = copy.deepcopy(spec)
    for key, value in patch.items():
        if key == "model":
            spec["model"].update(value)
        else:
            spec[key] = value
    return spec


def variants():
    """name -> (file relative to tests/fixtures, patch)."""
    metaspace_decoder = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "always",
                         "split": True}
    return {
        "llama2": ("hf/bpe/llama2.json", {}),
        "smollm2": ("hf/bpe/smollm2.json", {}),
        # transformers' newer conversion of Llama/Mistral (legacy=False): Metaspace, "first".
        "llama2_metaspace_first": ("hf/bpe/llama2.json", {
            "normalizer": None,
            "pre_tokenizer": {"type": "Metaspace", "replacement": SPACE,
                              "prepend_scheme": "first", "split": False},
        }),
        # tokenizers' own SentencePieceBPETokenizer: Metaspace split on every space, its decoder,
        # no byte fallback: unknown characters become <unk>, fused.
        "llama2_metaspace_unk": ("hf/bpe/llama2.json", {
            "normalizer": None,
            "pre_tokenizer": {"type": "Metaspace", "replacement": SPACE,
                              "prepend_scheme": "always", "split": True},
            "decoder": metaspace_decoder,
            "post_processor": None,
            "model": {"byte_fallback": False, "fuse_unk": True},
        }),
        "llama2_unk_unfused": ("hf/bpe/llama2.json", {
            "model": {"byte_fallback": False, "fuse_unk": False},
        }),
        "llama3_ignore_merges": ("trained_bpe/llama3.json", {
            "model": {"ignore_merges": True},
        }),
        # RoBERTa-style: a space before the first word, offsets trimmed of spaces.
        "gpt2_prefix_space_trimmed": ("trained_bpe/gpt2.json", {
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True,
                              "trim_offsets": True, "use_regex": True},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True,
                               "trim_offsets": True, "use_regex": True},
        }),
        # A pre-tokenizer after ByteLevel sees byte-level text (digits split inside "²" too).
        "gpt2_byte_level_then_digits": ("trained_bpe/gpt2.json", {
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                 "use_regex": True},
                {"type": "Digits", "individual_digits": False}]},
        }),
        # A Split regex without a hand-written scanner, then ByteLevel without its regex.
        "qwen2_split_whitespace": ("trained_bpe/qwen2.json", {
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": r"\s+"}, "behavior": "MergedWithNext",
                 "invert": False},
                {"type": "Split", "pattern": {"String": "."}, "behavior": "Isolated",
                 "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                 "use_regex": False}]},
        }),
    }


def truncate(text, max_bytes):
    raw = text.encode("utf-8")
    if max_bytes == 0 or len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")


def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def fnv_u32(values):
    return fnv1a(b"".join(v.to_bytes(4, "little") for v in values))


def delta_spans(offsets):
    flat, previous, out = [], 0, []
    for start, end in offsets:
        flat += [start, end]
    for value in flat:
        out.append(value - previous)
        previous = value
    return out


def put_decoded(record, key, decoded, text):
    if decoded == text:
        return
    if len(decoded.encode("utf-8")) > 256:
        record[key + "_fnv"] = fnv1a(decoded.encode("utf-8"))
    else:
        record[key] = decoded


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--golden", required=True, help="tokenizer_golden.jsonl (held-out texts)")
    parser.add_argument("--trained", required=True, help="the trained_bpe fixture folder")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print(f"tokenizers {tokenizers.__version__}, Python {sys.version.split()[0]}")

    corpus = training_corpus()
    made = {
        "llama2": trained_twice(train_llama2, corpus, "llama2"),
        "smollm2": trained_twice(train_smollm2, corpus, "smollm2"),
    }
    for name, tok in made.items():
        tok.save(os.path.join(args.out, f"{name}.json"), pretty=False)
        model = json.loads(tok.to_str())["model"]
        print(f"{name}: {len(model['vocab'])} tokens, {len(model['merges'])} merges")

    def base_spec(path):
        if path.startswith("hf/bpe/"):
            return json.loads(made[path[len("hf/bpe/"):-len(".json")]].to_str())
        with open(os.path.join(args.trained, os.path.basename(path)), encoding="utf-8") as f:
            return json.load(f)

    with open(args.golden, encoding="utf-8") as lines:
        originals = [json.loads(line)["text"] for line in lines]
    texts = list(dict.fromkeys(originals)) + EXTRA_TEXTS

    meta = {"head_bytes": HEAD_BYTES, "extra_texts": EXTRA_TEXTS, "tokenizers": {}}
    golden_path = os.path.join(args.out, "golden.jsonl")
    with open(golden_path, "w", encoding="utf-8", newline="\n") as out:
        for name, (path, patch) in variants().items():
            tok = Tokenizer.from_str(json.dumps(patched(base_spec(path), patch)))
            probe_plain = tok.encode("Hello", add_special_tokens=False).ids
            probe = tok.encode("Hello", add_special_tokens=True).ids
            at = next(i for i in range(len(probe)) if probe[i:i + len(probe_plain)] == probe_plain)
            prefix, suffix = probe[:at], probe[at + len(probe_plain):]
            counts = [0, 0]
            for doc, text in enumerate(texts):
                plain = tok.encode(text, add_special_tokens=False)
                special = tok.encode(text, add_special_tokens=True)
                ids = plain.ids
                # Special tokens wrap the plain encoding, with offsets (0, 0).
                if special.ids != prefix + ids + suffix:
                    raise SystemExit(f"{name} doc {doc}: special tokens wrap differently")
                zero = [(0, 0)]
                if special.offsets != zero * len(prefix) + plain.offsets + zero * len(suffix):
                    raise SystemExit(f"{name} doc {doc}: offsets differ with special tokens")
                record = {"tok": name, "doc": doc, "n": len(ids), "ids_fnv": fnv_u32(ids),
                          "offsets_fnv": fnv_u32(v for pair in plain.offsets for v in pair)}
                put_decoded(record, "decoded", tok.decode(ids, skip_special_tokens=False), text)
                put_decoded(record, "decoded_skip", tok.decode(ids, skip_special_tokens=True), text)
                head = truncate(text, HEAD_BYTES)
                head_encoding = tok.encode(head, add_special_tokens=False)
                record["head_ids"] = head_encoding.ids
                record["head_spans"] = delta_spans(head_encoding.offsets)
                out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
                counts[0] += 1
                counts[1] += len(ids)
            meta["tokenizers"][name] = {"file": path, "patch": patch,
                                        "special_prefix": prefix, "special_suffix": suffix}
            print(f"{name}: {counts[0]} documents, {counts[1]} tokens")
    with open(os.path.join(args.out, "meta.json"), "w", encoding="utf-8", newline="\n") as out:
        json.dump(meta, out, ensure_ascii=False, indent=1)
        out.write("\n")
    sizes = {f: os.path.getsize(os.path.join(args.out, f)) for f in sorted(os.listdir(args.out))}
    print(f"sizes: {sizes}, total {sum(sizes.values())} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
