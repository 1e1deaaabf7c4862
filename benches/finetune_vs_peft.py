#!/usr/bin/env python3
"""LoRA fine-tuning throughput: PyTorch + PEFT against `ferrolm finetune --bench`, the same model,
shapes and thread count, one after the other in one run.

  cargo build --release
  /work/peers/peft-venv/bin/python benches/finetune_vs_peft.py [-t 2] [--steps 5] [--warmup 2] [--reps 2]
      [--binary target/release/ferrolm] [--model ~/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf]
      [--ferrolm-arg=--flag ...] [--no-ferrolm] [--no-peft]

(the peer environment: python3 -m venv /work/peers/peft-venv && /work/peers/peft-venv/bin/pip
install -r tools/peft-requirements.txt)

The work of one step, on both sides: a batch of 8 sequences of 128 token ids (uniformly random,
seeded: the figures do not depend on the text), forward through SmolLM2-135M-Instruct with a LoRA
adapter on all seven linear maps of every block (q, k, v, o, gate, up, down; rank 8, alpha 16,
dropout 0), next-token cross-entropy (mean over the 8 x 127 predictions), backward (gradients of
the adapter only; the base weights are frozen), one AdamW step (lr 2e-4, weight decay 0).
tokens/s = batch x seq_len / seconds per step (8 x 128 = 1024 tokens a step).

The PEFT side: transformers loads the GGUF (`from_pretrained(dir, gguf_file=name)`), dequantizing
every tensor to float32, so it trains in float32 with the model's default attention (sdpa),
no gradient checkpointing, torch.set_num_threads(T); the model is loaded and warmed up before the
clock starts, and each step is timed on its own (the median step counts). The ferrolm side is
whatever `ferrolm finetune --bench --batch 8 --seq-len 128 --rank 8 --threads T --json` reports
on its last line of output: `{"tokens_per_s": ...}` (its own warm-up and timing). If that command
fails (or does not exist yet), the script says so and still prints PEFT's figure.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_MODEL = os.path.expanduser("~/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_BINARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "ferrolm")


def cpu_info():
    """lscpu's model name and the SIMD flags that matter here."""
    model, flags = None, set()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "Model name":
                model = val.strip()
            elif key.strip() == "Flags":
                flags = set(val.split())
    except (OSError, subprocess.CalledProcessError):
        pass
    if model is None or not flags:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = val.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(val.split())
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")
    return model or "unknown CPU", [f for f in wanted if f in flags]


class PeftBench:
    def __init__(self, a):
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        torch.manual_seed(a.seed)
        self.torch = torch
        self.a = a
        d, name = os.path.split(os.path.abspath(a.model))
        t0 = time.perf_counter()
        base = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
        self.load_s = time.perf_counter() - t0
        cfg = LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, target_modules=TARGETS,
                         bias="none", task_type="CAUSAL_LM")
        self.model = get_peft_model(base, cfg)
        self.model.train()
        self.trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.total = sum(p.numel() for p in self.model.parameters())
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                     lr=a.lr, weight_decay=0.0)
        g = torch.Generator().manual_seed(a.seed)
        vocab = base.config.vocab_size
        self.batches = [torch.randint(0, vocab, (a.batch, a.seq_len), generator=g) for _ in range(4)]
        self.i = 0
        self.losses = []

    def step(self):
        ids = self.batches[self.i % len(self.batches)]
        self.i += 1
        out = self.model(input_ids=ids, labels=ids)  # HF shifts: logits[t] against ids[t+1]
        out.loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(float(out.loss.detach()))

    def timed(self, steps):
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - t0)
        return times


def run_ferrolm(a):
    cmd = [a.binary, "finetune", "--bench", "--batch", str(a.batch), "--seq-len", str(a.seq_len),
           "--rank", str(a.rank), "--threads", str(a.threads), "--json"] + a.ferrolm_arg
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        return None, f"{' '.join(cmd)}: {e}"
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return None, f"{' '.join(cmd)} exited {p.returncode}: {' | '.join(tail)}"
    for line in reversed(p.stdout.strip().splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "tokens_per_s" in obj:
            return obj, None
    return None, f"{' '.join(cmd)}: no JSON line with tokens_per_s in its output"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-t", "--threads", type=int, default=2, help="threads, both sides")
    ap.add_argument("--steps", type=int, default=5, help="timed PEFT steps per rep")
    ap.add_argument("--warmup", type=int, default=2, help="untimed PEFT steps first")
    ap.add_argument("--reps", type=int, default=1, help="reps of (PEFT steps, ferrolm run), alternating")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the GGUF file (PEFT side)")
    ap.add_argument("--binary", default=DEFAULT_BINARY, help="the ferrolm binary")
    ap.add_argument("--ferrolm-arg", action="append", default=[], help="an extra argument for ferrolm finetune (repeatable)")
    ap.add_argument("--no-ferrolm", action="store_true", help="PEFT only")
    ap.add_argument("--no-peft", action="store_true", help="ferrolm only")
    a = ap.parse_args()

    model, flags = cpu_info()
    print(f"CPU: {model}; flags: {' '.join(flags) or 'none of avx2/avx512f'}; {a.threads} threads; "
          f"batch {a.batch} x {a.seq_len} tokens, LoRA rank {a.rank} alpha {a.alpha:g} on {','.join(TARGETS)}")

    peft_rates, peft_fastest, fe_rates = [], [], []
    bench = None
    if not a.no_peft:
        import peft
        import torch
        import transformers
        torch.set_num_threads(a.threads)
        torch.set_num_interop_threads(1)
        print(f"torch {torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()}, "
              f"{torch.get_num_threads()} threads), transformers {transformers.__version__}, peft {peft.__version__}")
        bench = PeftBench(a)
        print(f"PEFT: model loaded and dequantized in {bench.load_s:.1f} s; {bench.trainable:,} trainable of "
              f"{bench.total:,} parameters; {a.warmup} warm-up steps", flush=True)
        warm = bench.timed(a.warmup)
        print("  warm-up steps: " + ", ".join(f"{t:.2f} s" for t in warm), flush=True)

    tokens = a.batch * a.seq_len
    for rep in range(a.reps):
        if bench is not None:
            times = bench.timed(a.steps)
            med = statistics.median(times)
            peft_rates.append(tokens / med)
            peft_fastest.append(tokens / min(times))
            print(f"PEFT rep {rep + 1}: steps " + ", ".join(f"{t:.2f}" for t in times)
                  + f" s; median {med:.2f} s -> {tokens / med:.1f} tokens/s (fastest step {tokens / min(times):.1f}); "
                  f"loss {bench.losses[-1]:.4f}; "
                  f"load average {os.getloadavg()[0]:.2f} (other work on the cores slows torch's threads badly)", flush=True)
        if not a.no_ferrolm:
            obj, err = run_ferrolm(a)
            if err:
                print(f"ferrolm rep {rep + 1}: FAILED: {err}", flush=True)
            else:
                fe_rates.append(float(obj["tokens_per_s"]))
                print(f"ferrolm rep {rep + 1}: {fe_rates[-1]:.1f} tokens/s {json.dumps(obj)}", flush=True)

    peft_best = max(peft_rates) if peft_rates else None
    fe_best = max(fe_rates) if fe_rates else None
    line = []
    line.append(f"PEFT {peft_best:.1f} tokens/s" if peft_best else "PEFT not run")
    line.append(f"ferrolm {fe_best:.1f} tokens/s" if fe_best else "ferrolm: no figure")
    if peft_best and fe_best:
        line.append(f"ratio ferrolm/PEFT {fe_best / peft_best:.2f}x")
    print(" | ".join(line))
    print(json.dumps({"cpu": model, "flags": flags, "threads": a.threads, "batch": a.batch, "seq_len": a.seq_len,
                      "rank": a.rank, "peft_tokens_per_s": peft_best, "peft_reps": peft_rates,
                      "peft_fastest_step_tokens_per_s": max(peft_fastest) if peft_fastest else None,
                      "ferrolm_tokens_per_s": fe_best, "ferrolm_reps": fe_rates,
                      "ratio": fe_best / peft_best if peft_best and fe_best else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
