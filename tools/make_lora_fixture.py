#!/usr/bin/env python3
"""Make tests/fixtures/lora/{peft_adapter/, peft_logits.json}: a PEFT LoRA adapter with deterministic
nonzero weights for SmolLM2-135M-Instruct, and the logits PyTorch + PEFT compute with and without it
(for ferrolm's PEFT reader and its adapter forward); and, with --check-ours, the same logits for an
adapter folder that ferrolm wrote (the round trip "our adapter loaded by PEFT").

  /work/peers/peft-venv/bin/python tools/make_lora_fixture.py [--model ~/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf]
      [--llama-cpp-python /work/peers/venv/bin/python]          # also check the base model against llama.cpp
  /work/peers/peft-venv/bin/python tools/make_lora_fixture.py --check-ours DIR [--out FILE]

The base model is the GGUF itself, loaded by transformers (`from_pretrained(dir, gguf_file=name)`),
which dequantizes every tensor (Q4_1 blocks, the Q8_0 embedding) to float32 and runs in float32;
the embedding is tied (the file has no output.weight, and transformers then sets
tie_word_embeddings). ferrolm computes with the quantized weights and 8-bit activations, so its
logits differ from these by quantization noise (~0.1-1, see "sanity" in the JSON); compare
adapter-minus-base deltas, or loosely.

Q/K ROW ORDER: transformers' GGUF loader un-permutes the rows of Wq and Wk (llama.cpp's converter
permuted them for its adjacent-pairs RoPE) back to Hugging Face's rotate-half layout, so the model
PEFT adapts here is in HF row order, and so are the rows of lora_B of q_proj and k_proj in the saved
adapter (lora_A and all other targets are unaffected). Applying this adapter to the GGUF's own Wq/Wk
needs B's rows permuted as llama.cpp's convert_lora_to_gguf.py does.

The adapter: rank 4, alpha 8 (scaling 2), dropout 0, on q_proj, k_proj, v_proj, o_proj, gate_proj,
up_proj, down_proj of blocks 0 and 29 only (PEFT's `layers_to_transform`, saved in
adapter_config.json; the safetensors file holds only those blocks' tensors). Its weights are
drawn from a seeded torch.Generator, parameter by parameter in name order: lora_A uniform in
+-1/sqrt(in) (PEFT's kaiming-uniform bound), lora_B normal with std B_STD (nonzero, unlike a fresh
adapter, so that it changes the logits). save_pretrained's README.md model card is removed, and
base_model_name_or_path is set to the HF model id rather than a local path, and target_modules in
adapter_config.json is sorted (PEFT writes it in set order, which varies from run to run).

peft_logits.json: the token ids of SENTENCE (the GGUF's tokenizer as transformers builds it, no
BOS; checked against llama.cpp's ids when --llama-cpp-python is given), and for the last 4
positions the top-20 logits (ids, values) with the adapter and without it, the logits of both at
the union of those ids, and the max |adapter - base| over every position and vocabulary id.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LAYERS = [0, 29]
RANK, ALPHA = 4, 8
SEED = 20261207
B_STD = 0.25
TOP = 20
LAST = 4
SENTENCE = ("The old lighthouse keeper climbed the narrow stairs every evening to light the lamp "
            "and watch the ships return safely to the harbor.")
CHECK_PROMPT = "The capital of France is"
N_GREEDY = 8
HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "lora")
DEFAULT_MODEL = os.path.expanduser("~/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf")

LLAMA_CPP_SCRIPT = r"""
import json, sys
import numpy as np
from llama_cpp import Llama, __version__
model, prompt, sentence, n_greedy = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
llm = Llama(model_path=model, n_ctx=256, n_threads=2, n_batch=256, logits_all=True, verbose=False)
out = {"version": __version__}
ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
llm.eval(ids)
out["prompt_ids"] = ids
out["prompt_last_logits"] = np.asarray(llm.scores[len(ids) - 1], dtype=np.float32).tolist()
gen = []
for _ in range(n_greedy):
    nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    gen.append(nxt)
    llm.eval([nxt])
out["greedy"] = gen
out["greedy_text"] = llm.detokenize(gen).decode("utf-8", "replace")
llm.reset()
ids = llm.tokenize(sentence.encode(), add_bos=False, special=True)
llm.eval(ids)
out["sentence_ids"] = ids
out["sentence_last_logits"] = np.asarray(llm.scores[len(ids) - 1], dtype=np.float32).tolist()
print(json.dumps(out))
"""


def load_base(model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, name = os.path.split(os.path.abspath(model_path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    model.eval()
    return tok, model


@torch.no_grad()
def logits_of(model, ids):
    return model(input_ids=torch.tensor([ids])).logits[0].float()


def rows(with_a, without_a):
    """The last LAST positions: top-TOP of each, and both at the union of their ids."""
    n = with_a.shape[0]
    out = []
    for p in range(n - LAST, n):
        w, b = with_a[p], without_a[p]
        wv, wi = torch.topk(w, TOP)
        bv, bi = torch.topk(b, TOP)
        union = sorted(set(wi.tolist()) | set(bi.tolist()))
        out.append({
            "position": p,
            "with_adapter": {"ids": wi.tolist(), "values": [float(v) for v in wv]},
            "without_adapter": {"ids": bi.tolist(), "values": [float(v) for v in bv]},
            "union": {"ids": union, "with_adapter": [float(w[i]) for i in union],
                      "without_adapter": [float(b[i]) for i in union]},
        })
    return out


def fill_adapter(model):
    g = torch.Generator().manual_seed(SEED)
    n = 0
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if ".lora_A." in name:
                bound = 1.0 / np.sqrt(p.shape[1])
                p.copy_((torch.rand(p.shape, generator=g, dtype=torch.float32) * 2 - 1) * bound)
                n += 1
            elif ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * B_STD)
                n += 1
    return n


def versions():
    import peft
    import transformers
    import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    from importlib.metadata import version
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "gguf": version("gguf"), "safetensors": version("safetensors")}


def sanity(args, tok, base, sentence_ids, sentence_base_logits):
    """The dequantized float32 model against llama.cpp on the quantized file."""
    out = {}
    ids = tok.encode(CHECK_PROMPT, add_special_tokens=False)
    with torch.no_grad():
        gen = base.generate(torch.tensor([ids]), max_new_tokens=N_GREEDY, do_sample=False)[0, len(ids):].tolist()
    hf_last = logits_of(base, ids)[-1].numpy()
    out["prompt"] = CHECK_PROMPT
    out["hf_prompt_ids"] = ids
    out["hf_greedy"] = gen
    out["hf_greedy_text"] = tok.decode(gen)
    if not args.llama_cpp_python:
        return out
    p = subprocess.run([args.llama_cpp_python, "-c", LLAMA_CPP_SCRIPT, args.model, CHECK_PROMPT, SENTENCE, str(N_GREEDY)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        print("llama.cpp check failed:", p.stderr.strip()[-500:], file=sys.stderr)
        out["llama_cpp_error"] = p.stderr.strip()[-500:]
        return out
    ll = json.loads(p.stdout.strip().splitlines()[-1])
    lp = np.asarray(ll["prompt_last_logits"], dtype=np.float32)
    ls = np.asarray(ll["sentence_last_logits"], dtype=np.float32)
    sb = sentence_base_logits[-1].numpy()
    out.update({
        "llama_cpp_python": ll["version"],
        "llama_cpp_prompt_ids": ll["prompt_ids"],
        "llama_cpp_greedy": ll["greedy"],
        "llama_cpp_greedy_text": ll["greedy_text"],
        "same_prompt_ids": ll["prompt_ids"] == ids,
        "same_greedy": ll["greedy"] == gen,
        "prompt_last_max_abs_diff": float(np.max(np.abs(lp - hf_last))),
        "prompt_last_mean_abs_diff": float(np.mean(np.abs(lp - hf_last))),
        "same_sentence_ids": ll["sentence_ids"] == sentence_ids,
        "sentence_last_max_abs_diff": float(np.max(np.abs(ls - sb))) if ll["sentence_ids"] == sentence_ids else None,
        "sentence_last_mean_abs_diff": float(np.mean(np.abs(ls - sb))) if ll["sentence_ids"] == sentence_ids else None,
        "same_argmax_prompt": int(np.argmax(lp)) == int(np.argmax(hf_last)),
        "same_argmax_sentence": int(np.argmax(ls)) == int(np.argmax(sb)),
    })
    return out


def make(args):
    from peft import LoraConfig, get_peft_model
    tok, base = load_base(args.model)
    ids = tok.encode(SENTENCE, add_special_tokens=False)
    base_logits = logits_of(base, ids)
    check = sanity(args, tok, base, ids, base_logits)
    for k, v in check.items():
        if not k.endswith("_ids"):
            print(f"  sanity {k}: {v}")

    cfg = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS, layers_to_transform=LAYERS,
                     bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    n = fill_adapter(model)
    model.eval()
    with_a = logits_of(model, ids)
    with model.disable_adapter():
        without_a = logits_of(model, ids)
    off = float((without_a - base_logits).abs().max())
    assert off < 1e-4, f"disable_adapter() should give the base model's logits (max diff {off})"
    max_diff = float((with_a - without_a).abs().max())

    out_dir = os.path.join(FIXTURES, "peft_adapter")
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    model.peft_config["default"].base_model_name_or_path = HF_ID
    model.save_pretrained(out_dir, save_embedding_layers=False)  # no hub look-up for the base config
    readme = os.path.join(out_dir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    # PEFT keeps target_modules as a set and saves it in hash order, which changes from run to run
    # (PYTHONHASHSEED): sort it so that the fixture is the same file every time.
    cfg_path = os.path.join(out_dir, "adapter_config.json")
    with open(cfg_path) as f:
        saved_cfg = json.load(f)
    saved_cfg["target_modules"] = sorted(saved_cfg["target_modules"])
    with open(cfg_path, "w") as f:
        json.dump(saved_cfg, f, indent=2, sort_keys=True)
    # The file must hold exactly the two blocks' tensors, in PEFT's key layout.
    from safetensors.torch import load_file
    saved = load_file(os.path.join(out_dir, "adapter_model.safetensors"))
    assert len(saved) == n == 2 * len(TARGETS) * len(LAYERS), (len(saved), n)
    assert all(k.startswith("base_model.model.model.layers.") for k in saved)

    meta = {
        "about": "Logits of SmolLM2-135M-Instruct (the Q4_1 GGUF dequantized to float32 by transformers) with the "
                 "PEFT adapter in peft_adapter/ and without it; see tools/make_lora_fixture.py",
        "command": "/work/peers/peft-venv/bin/python tools/make_lora_fixture.py --llama-cpp-python /work/peers/venv/bin/python",
        "versions": versions(),
        "adapter": {"rank": RANK, "alpha": ALPHA, "scaling": ALPHA / RANK, "targets": TARGETS, "layers": LAYERS,
                    "seed": SEED, "lora_B_std": B_STD, "tensors": len(saved),
                    "qk_row_order": "hf (rotate-half; transformers un-permutes the GGUF's Q/K rows)"},
        "sentence": SENTENCE,
        "token_ids": ids,
        "top": TOP,
        "positions": rows(with_a, without_a),
        "max_abs_diff": max_diff,
        "argmax_with_adapter": with_a.argmax(-1).tolist(),
        "argmax_without_adapter": without_a.argmax(-1).tolist(),
        "sanity": check,
    }
    path = os.path.join(FIXTURES, "peft_logits.json")
    with open(path, "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"{len(ids)} tokens; adapter of {len(saved)} tensors in {out_dir}; max |adapter - base| = {max_diff:.4f}; "
          f"argmax changed at {sum(a != b for a, b in zip(meta['argmax_with_adapter'], meta['argmax_without_adapter']))} "
          f"of {len(ids)} positions")
    for f_ in sorted(os.listdir(out_dir)):
        print(f"  {f_}: {os.path.getsize(os.path.join(out_dir, f_)):,} bytes")
    print(f"  {path}: {os.path.getsize(path):,} bytes")


def check_ours(args):
    from peft import PeftModel
    from safetensors.torch import load_file
    ref_path = os.path.join(FIXTURES, "peft_logits.json")
    ref = json.load(open(ref_path)) if os.path.exists(ref_path) else None
    tok, base = load_base(args.model)
    ids = ref["token_ids"] if ref else tok.encode(SENTENCE, add_special_tokens=False)
    model = PeftModel.from_pretrained(base, args.check_ours)
    model.eval()
    cfg = model.peft_config["default"]
    print(f"{args.check_ours}: r={cfg.r} alpha={cfg.lora_alpha} rslora={cfg.use_rslora} targets={sorted(cfg.target_modules)} "
          f"layers_to_transform={cfg.layers_to_transform}")
    # PEFT warns (does not fail) on keys it does not use; count what it loaded.
    ours = load_file(os.path.join(args.check_ours, "adapter_model.safetensors"))
    expected = {n.replace(".default.", ".") for n, _ in model.named_parameters() if ".lora_" in n}
    missing, unused = sorted(expected - set(ours)), sorted(set(ours) - expected)
    print(f"  {len(ours)} tensors in the file, {len(expected)} LoRA parameters in the model; "
          f"{len(missing)} of them not in the file (left at PEFT's init){': ' + missing[0] if missing else ''}, "
          f"{len(unused)} tensors unused{': ' + unused[0] if unused else ''}")
    with_a = logits_of(model, ids)
    with model.disable_adapter():
        without_a = logits_of(model, ids)
    max_diff = float((with_a - without_a).abs().max())
    out = {"adapter_dir": os.path.abspath(args.check_ours), "versions": versions(), "token_ids": ids, "top": TOP,
           "missing_tensors": missing, "unused_tensors": unused,
           "positions": rows(with_a, without_a), "max_abs_diff": max_diff,
           "argmax_with_adapter": with_a.argmax(-1).tolist()}
    print(f"  max |adapter - base| = {max_diff:.4f}")
    for r in out["positions"]:
        print(f"  position {r['position']}: top ids {r['with_adapter']['ids'][:5]} values "
              f"{[round(v, 3) for v in r['with_adapter']['values'][:5]]}")
    if ref:
        # The committed fixture adapter against this one: equal tensors mean the round trip kept the weights,
        # and then the logits must match (same model, same code) to float rounding.
        theirs = load_file(os.path.join(FIXTURES, "peft_adapter", "adapter_model.safetensors"))
        if set(theirs) == set(ours):
            tdiff = max(float((theirs[k].float() - ours[k].float()).abs().max()) for k in ours)
            print(f"  same keys as tests/fixtures/lora/peft_adapter; max |tensor diff| = {tdiff:.3g}")
            out["fixture_tensor_max_abs_diff"] = tdiff
        else:
            print(f"  keys differ from tests/fixtures/lora/peft_adapter ({len(set(ours) - set(theirs))} only here, "
                  f"{len(set(theirs) - set(ours))} only there)")
        ld = 0.0
        for mine, refr in zip(out["positions"], ref["positions"]):
            u = refr["union"]["ids"]
            ld = max(ld, max(abs(with_a[mine["position"], i].item() - v) for i, v in zip(u, refr["union"]["with_adapter"])))
        print(f"  max |logit diff| against the fixture's adapter logits at its union ids: {ld:.4g}")
        out["fixture_logits_max_abs_diff"] = ld
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
        print(f"  wrote {args.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the GGUF file")
    ap.add_argument("--llama-cpp-python", default=None,
                    help="a python with llama_cpp, to check the dequantized model against llama.cpp (recorded in the JSON)")
    ap.add_argument("--check-ours", metavar="DIR", help="load DIR (adapter_model.safetensors + adapter_config.json) with "
                    "PeftModel.from_pretrained and report the same logits instead of making the fixture")
    ap.add_argument("--out", help="with --check-ours: write the logits JSON here")
    ap.add_argument("-t", "--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.check_ours:
        check_ours(args)
    else:
        make(args)


if __name__ == "__main__":
    main()
