#!/usr/bin/env python3
"""Golden fixtures for beam search from Hugging Face transformers.

Writes
  tests/fixtures/beam/tiny_llama_f32.gguf  a tiny Llama (V 96, D 64, 2 layers, 4 heads, 2 KV heads,
                                           F 128) with seeded random weights, all tensors F32, in
                                           llama.cpp's GGUF layout (Wq/Wk rows permuted for
                                           adjacent-pair RoPE), with a 96-token byte-level vocabulary;
  tests/fixtures/beam/beam_cases.json      HF's prompt logits (2 prompts), greedy continuations, and
                                           beam-search results (sequences and sequences_scores) for
                                           cases covering num_beams, length_penalty, early_stopping
                                           and num_return_sequences.

The weights are drawn at a large scale (std SIGMA instead of 0.02) so that next-token distributions
are peaked but not one-hot; the EOS row of the output head is scaled up so that EOS is likely in
some contexts and unlikely in others (hypotheses end both ways). The control rows 0 and 1 are zero
(logit exactly 0, never chosen). The seed was chosen with `--search` for the widest minimum gap
between the candidate scores beam search compares (top-k ranks, finished-list ranks, the early-stop
test) so that an engine with an f16 KV cache makes the same decisions.

Every file is checked before it is written: an independent numpy forward pass that reads the GGUF
back (adjacent-pair RoPE, as llama.cpp) must agree with HF's logits, and every returned beam score
must equal the teacher-forced sum of log-probabilities divided by length ** length_penalty.

Made with:
  python3 -m venv /work/peers/hf && /work/peers/hf/bin/pip install torch transformers numpy gguf safetensors
  /work/peers/hf/bin/python tools/make_beam_fixtures.py
"""
import argparse
import json
import math
import os
import sys

import gguf
import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "..", "tests", "fixtures", "beam")
GGUF_NAME = "tiny_llama_f32.gguf"

SEED = 20  # chosen with --search 40 (see the module doc)
SIGMA = 0.3  # std of every weight matrix (norm weights are 1 + 0.1 N(0, 1))
HEAD_SCALE = 2.0  # output head times this: median top-1 probability about 0.65
EOS_SCALE = 1.6  # EOS row of the head times this again
N_VOCAB, N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, N_FF = 96, 64, 2, 4, 2, 128
HEAD_DIM = N_EMBD // N_HEAD
ROPE_BASE, RMS_EPS, N_CTX = 10000.0, 1e-5, 256
PAD, BOS, EOS = 0, 1, 2
CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# (num_beams, length_penalty, early_stopping, num_return_sequences, max_new_tokens, prompt length)
CASES = [
    (1, 1.0, False, 1, 12, 5),
    (2, 1.0, False, 2, 10, 3),
    (2, 0.0, True, 1, 16, 7),
    (2, 2.0, True, 2, 9, 12),
    (3, 1.0, True, 3, 12, 4),
    (3, 2.0, "never", 2, 14, 9),
    (3, 0.0, False, 3, 20, 6),
    (4, 1.0, False, 4, 20, 8),
    (4, -0.5, False, 2, 10, 5),
    (4, 0.0, "never", 4, 18, 10),
    (6, 1.0, True, 3, 8, 6),
    (6, 2.0, False, 6, 15, 4),
    (6, -0.5, "never", 1, 12, 11),
    (1, 1.0, "never", 1, 20, 9),
]
LOGIT_PROMPT_LENS = [8, 5]
GREEDY_PROMPT_LENS = [4, 7, 10]
GREEDY_NEW = 20


def token_text(i):
    """Token i as GGUF stores it: control names, then single printable ASCII characters ('!'..'}'),
    which are their own GPT-2 byte-level form."""
    return CONTROL[i] if i < len(CONTROL) else chr(ord("!") + i - len(CONTROL))


def prompts_for(seed, lens):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, N_VOCAB, (n,), generator=g).tolist() for n in lens]


def build_model(seed):
    config = LlamaConfig(
        vocab_size=N_VOCAB, hidden_size=N_EMBD, intermediate_size=N_FF, num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD, num_key_value_heads=N_HEAD_KV, max_position_embeddings=N_CTX,
        rope_theta=ROPE_BASE, rms_norm_eps=RMS_EPS, tie_word_embeddings=False, hidden_act="silu",
        attention_bias=False, mlp_bias=False, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
    )
    model = LlamaForCausalLM(config).float().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # Our own draw, in a fixed order, so the weights do not depend on transformers' init code.
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(SIGMA * torch.randn(p.shape, generator=g))
        head = model.lm_head.weight
        head *= HEAD_SCALE
        head[PAD].zero_()
        head[BOS].zero_()
        head[EOS] *= EOS_SCALE
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = EOS
    model.generation_config.bos_token_id = BOS
    return model


def permute_rows(w, n_head):
    """HF's rotate_half pairs (x[i], x[i + Dh/2]); GGUF llama pairs (x[2i], x[2i+1]). Same as
    llama.cpp's convert_hf_to_gguf.py LlamaModel.permute."""
    out, inp = w.shape
    return w.reshape(n_head, 2, out // n_head // 2, inp).swapaxes(1, 2).reshape(out, inp)


class Writer(gguf.GGUFWriter):
    """gguf-py refuses empty arrays; GGUF allows them, and ferrolm requires the merges key."""

    def _pack_val(self, val, vtype, add_vtype, sub_type=None):
        if vtype == gguf.GGUFValueType.ARRAY and len(val) == 0:
            head = self._pack("I", vtype) if add_vtype else b""
            return head + self._pack("I", sub_type or gguf.GGUFValueType.STRING) + self._pack("Q", 0)
        return super()._pack_val(val, vtype, add_vtype, sub_type)


def write_gguf(model, path):
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w = Writer(path, "llama")
    w.add_name("ferrolm-beam-tiny-llama")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(ROPE_BASE)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_vocab_size(N_VOCAB)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list([token_text(i) for i in range(N_VOCAB)])
    w.add_token_types([3] * len(CONTROL) + [1] * (N_VOCAB - len(CONTROL)))
    w.add_key_value(gguf.Keys.Tokenizer.MERGES, [], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_pad_token_id(PAD)
    w.add_add_bos_token(False)
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(N_LAYER):
        p = f"model.layers.{i}."
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(b + "attn_q.weight", permute_rows(sd[p + "self_attn.q_proj.weight"], N_HEAD))
        w.add_tensor(b + "attn_k.weight", permute_rows(sd[p + "self_attn.k_proj.weight"], N_HEAD_KV))
        w.add_tensor(b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_forward(path, ids):
    """Independent float64 forward pass of the GGUF file, with llama.cpp's adjacent-pair RoPE."""
    r = gguf.GGUFReader(path)
    t = {x.name: np.array(x.data, dtype=np.float64).reshape([int(d) for d in reversed(x.shape)]) for x in r.tensors}

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + RMS_EPS) * g

    def rope(x):  # (T, heads, Dh)
        pos = np.arange(x.shape[0])[:, None, None]
        freq = ROPE_BASE ** (-np.arange(0, HEAD_DIM, 2) / HEAD_DIM)
        ang = pos * freq[None, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * np.cos(ang) - b * np.sin(ang)
        out[..., 1::2] = a * np.sin(ang) + b * np.cos(ang)
        return out

    n = len(ids)
    x = t["token_embd.weight"][ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(N_LAYER):
        b = lambda s: t[f"blk.{i}.{s}"]
        h = rms(x, b("attn_norm.weight"))
        q = rope((h @ b("attn_q.weight").T).reshape(n, N_HEAD, HEAD_DIM))
        k = rope((h @ b("attn_k.weight").T).reshape(n, N_HEAD_KV, HEAD_DIM))
        v = (h @ b("attn_v.weight").T).reshape(n, N_HEAD_KV, HEAD_DIM)
        rep = N_HEAD // N_HEAD_KV
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(HEAD_DIM) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        att = np.einsum("hqk,khd->qhd", s, v).reshape(n, N_EMBD)
        x = x + att @ b("attn_output.weight").T
        h = rms(x, b("ffn_norm.weight"))
        gate = h @ b("ffn_gate.weight").T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ b("ffn_up.weight").T)) @ b("ffn_down.weight").T
    return rms(x, t["output_norm.weight"]) @ t["output.weight"].T


def forward_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double()


def sum_logprob(model, prompt, gen):
    """Teacher-forced sum of log-probabilities of gen after prompt (float64)."""
    lp = torch.log_softmax(forward_logits(model, prompt + gen), -1)
    return float(sum(lp[len(prompt) - 1 + j, tok] for j, tok in enumerate(gen)))


class Gaps:
    """Wraps the beam-search helpers of one model to record how close each decision was."""

    def __init__(self, model):
        self.values = []
        self.model = model
        top_k = model._get_top_k_continuations
        update = model._update_finished_beams
        heuristic = model._check_early_stop_heuristic

        def top_k_wrapped(**kw):
            # Only the set boundaries are decisions: which EOS candidates rank in the top num_beams
            # (they become finished), and which num_beams non-EOS candidates keep running. On the
            # last step every candidate is finished, so only the top num_beams boundary counts.
            nb, scores = kw["num_beams"], kw["accumulated_log_probs"][0]
            valid = scores > -1e8
            vals, idx = torch.sort(scores[valid], descending=True)
            toks = torch.nonzero(valid)[:, 0][idx] % N_VOCAB
            last = kw["running_sequences"].shape[-1] == kw["cur_len"] + 1
            stop = torch.ones_like(toks, dtype=torch.bool) if last else toks == EOS
            if len(vals) > nb and (bool(stop[nb - 1]) or bool(stop[nb])):
                self.values.append((float(vals[nb - 1] - vals[nb]), "top-k finished"))
            going = vals[~stop]
            if len(going) > nb:
                self.values.append((float(going[nb - 1] - going[nb]), "top-k running"))
            return top_k(**kw)

        def update_wrapped(**kw):
            # Finished scores are divided by len ** length_penalty; an error e in a sum of log-probs
            # moves a score by e / len ** lp, so gaps are scaled back to log-prob units.
            lp, nb = kw["length_penalty"], kw["num_beams"]
            length = kw["cur_len"] + 1 - kw["decoder_prompt_len"]
            just = (kw["next_token_hits_stopping_criteria"] & kw["top_num_beam_mask"][None, :])[0]
            if bool(kw["is_early_stop_heuristic_unsatisfied"].all()) and bool(just.any()):
                old = kw["beam_scores"][0]
                old_len = (kw["beam_indices"][0] != -1).sum(-1)
                scores = torch.cat((old, kw["topk_log_probs"][0][just] / (length**lp)))
                lens = torch.cat((old_len, torch.full((int(just.sum()),), length))).double()
                order = torch.argsort(scores, descending=True)
                scores, lens = scores[order], lens[order]
                keep = scores > -1e8
                scores, lens = scores[keep][: nb + 1], lens[keep][: nb + 1]
                for j in range(len(scores) - 1):
                    scale = min(float(lens[j]) ** lp, float(lens[j + 1]) ** lp)
                    self.values.append((float(scores[j] - scores[j + 1]) * scale, "finished"))
            return update(**kw)

        def heuristic_wrapped(**kw):
            if bool(kw["is_sent_finished"].all()) and bool(kw["is_early_stop_heuristic_unsatisfied"].all()):
                es, lp = kw["early_stopping"], kw["length_penalty"]
                length = (kw["max_length"] if es == "never" and lp > 0 else kw["cur_len"]) - kw["decoder_prompt_len"]
                best = float(kw["running_beam_scores"][0, 0]) / (length**lp)
                worst = float(kw["beam_scores"][0].min())
                self.values.append((abs(best - worst) * length**lp, "early-stop"))
            return heuristic(**kw)

        model._get_top_k_continuations = top_k_wrapped
        model._update_finished_beams = update_wrapped
        model._check_early_stop_heuristic = heuristic_wrapped

    def record(self, ranked, what):
        if len(ranked) > 1:
            self.values.append((float((ranked[:-1] - ranked[1:]).min()), what))

    def min(self):
        return min(self.values) if self.values else (math.inf, "none")


def trim(gen):
    """Generated ids up to and including the first EOS (HF pads finished beams, with EOS itself when
    pad_token_id is 0: `pad_token_id or eos_token_id` treats 0 as unset)."""
    return gen[: gen.index(EOS) + 1] if EOS in gen else gen


def run_case(model, gaps, prompt, nb, lp, es, nrs, mnt):
    out = model.generate(
        torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        num_beams=nb, length_penalty=lp, early_stopping=es, num_return_sequences=nrs, max_new_tokens=mnt,
        eos_token_id=EOS, pad_token_id=PAD, do_sample=False, return_dict_in_generate=True,
        output_scores=True, output_logits=True,
    )
    seqs = [trim(s[len(prompt):].tolist()) for s in out.sequences]
    sums = [sum_logprob(model, prompt, s) for s in seqs]
    if nb == 1:
        # generate() runs greedy search for one beam: no sequences_scores; record the same formula.
        for logits in out.logits:
            top2 = torch.topk(logits[0].double(), 2).values
            gaps.values.append((float(top2[0] - top2[1]), "greedy"))
        scores = [sums[0] / (len(seqs[0]) ** lp)]
    else:
        scores = out.sequences_scores.tolist()
        for s, total, score in zip(seqs, sums, scores):
            expect = total / (len(s) ** lp)
            if abs(expect - score) > 1e-3 * max(1.0, abs(score)):
                sys.exit(f"score {score} is not sum {total} / len {len(s)} ** {lp}")
    return seqs, scores, sums


def greedy(model, prompt):
    out = model.generate(
        torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=GREEDY_NEW, do_sample=False, num_beams=1, eos_token_id=EOS, pad_token_id=PAD,
        return_dict_in_generate=True, output_logits=True,
    )
    gen = trim(out.sequences[0, len(prompt):].tolist())
    margins, top1 = [], []
    for logits in out.logits[: len(gen)]:
        l = logits[0].double()
        v = torch.topk(l, 2).values
        margins.append(float(v[0] - v[1]))
        top1.append(float(torch.softmax(l, -1).max()))
    return gen, margins, top1


def evaluate(seed, verbose):
    torch.manual_seed(seed)
    model = build_model(seed)
    gaps = Gaps(model)
    prompts = prompts_for(seed + 1000, [c[5] for c in CASES])
    cases = []
    for (nb, lp, es, nrs, mnt, _), prompt in zip(CASES, prompts):
        seqs, scores, sums = run_case(model, gaps, prompt, nb, lp, es, nrs, mnt)
        cases.append({
            "prompt": prompt, "prompt_text": "".join(token_text(i) for i in prompt),
            "num_beams": nb, "length_penalty": lp, "early_stopping": es, "num_return_sequences": nrs,
            "max_new_tokens": mnt, "eos_token_id": EOS, "pad_token_id": PAD,
            "hf_method": "greedy_search" if nb == 1 else "beam_search",
            "sequences": seqs, "scores": scores, "sum_logprobs": sums,
            "ends_with_eos": [bool(s and s[-1] == EOS) for s in seqs],
        })
    greedies = []
    top1_all = []
    for prompt in prompts_for(seed + 2000, GREEDY_PROMPT_LENS):
        gen, margins, top1 = greedy(model, prompt)
        top1_all += top1
        gaps.values.append((min(margins), "greedy"))
        greedies.append({"prompt": prompt, "prompt_text": "".join(token_text(i) for i in prompt),
                         "max_new_tokens": GREEDY_NEW, "generated": gen, "top2_logit_margins": margins})
    n_eos = sum(any(c["ends_with_eos"]) for c in cases)
    n_maxlen = sum(not all(c["ends_with_eos"]) for c in cases)
    control = any(t in (PAD, BOS) for c in cases for s in c["sequences"] for t in s)
    stats = {"seed": seed, "min_gap": gaps.min(), "cases_with_eos": n_eos, "cases_with_max_len": n_maxlen,
             "control_tokens": control, "median_top1": float(np.median(top1_all))}
    if verbose:
        print(stats)
    return model, cases, greedies, stats


def search(n):
    best = []
    for seed in range(n):
        _, _, _, st = evaluate(seed, verbose=True)
        if not st["control_tokens"] and st["cases_with_eos"] >= 4 and st["cases_with_max_len"] >= 4:
            best.append((st["min_gap"][0], seed))
    print("eligible seeds by min gap:", sorted(best, reverse=True)[:10])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--search", type=int, metavar="N", help="try seeds 0..N-1 and print their statistics")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    if args.search:
        search(args.search)
        return
    model, cases, greedies, stats = evaluate(args.seed, verbose=True)
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, GGUF_NAME)
    write_gguf(model, path)
    checks = []
    for prompt in prompts_for(args.seed + 3000, LOGIT_PROMPT_LENS):
        hf = forward_logits(model, prompt)
        ours = gguf_forward(path, prompt)
        err = float(np.abs(hf.numpy() - ours).max())
        if err > 1e-3:
            sys.exit(f"GGUF numpy forward disagrees with HF by {err}: check the Wq/Wk permutation")
        print(f"GGUF numpy forward vs HF, prompt of {len(prompt)}: max |diff| {err:.2e}")
        checks.append({"prompt": prompt, "prompt_text": "".join(token_text(i) for i in prompt),
                       "logits": [[round(float(x), 6) for x in row] for row in hf.float()]})
    fixture = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "gguf_py_version": getattr(gguf, "__version__", None) or _dist_version("gguf"),
        "model": GGUF_NAME,
        "seed": args.seed,
        "min_decision_gap": {"value": stats["min_gap"][0], "where": stats["min_gap"][1]},
        "notes": [
            "sequences: generated ids only; a hypothesis that finished with EOS keeps its EOS as the last id.",
            "scores (beam_search): HF sequences_scores = sum_logprobs / len ** length_penalty, len = "
            "generated tokens counting the EOS.",
            "scores (num_beams 1): generate() runs greedy search and returns no score; the same formula is "
            "recorded. Greedy stops at the first EOS, which beam search with one beam would not.",
            "logits_checks: HF float32 logits at every prompt position, rounded to 6 decimals.",
        ],
        "logits_checks": checks,
        "greedy": greedies,
        "cases": cases,
    }
    with open(os.path.join(OUT_DIR, "beam_cases.json"), "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes) and beam_cases.json")


def _dist_version(name):
    from importlib.metadata import version
    return version(name)


if __name__ == "__main__":
    main()
