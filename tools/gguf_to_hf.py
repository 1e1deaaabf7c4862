#!/usr/bin/env python3
"""Converts a Llama-family GGUF (the default SmolLM2-135M-Instruct Q4_1) into a Hugging Face
checkpoint folder: config.json, model.safetensors (F32, or --dtype f16/bf16), tokenizer.json,
tokenizer_config.json, generation_config.json. Hugging Face transformers does the work (it
dequantizes the GGUF and undoes llama.cpp's Q/K row permutation), so the folder is what
transformers itself would load: the test input for `ferrolm --model DIR`.

  /work/peers/peft-venv/bin/python tools/gguf_to_hf.py ~/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf OUT_DIR [--dtype f32]
"""
import argparse
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    a = ap.parse_args()
    path = os.path.expanduser(a.gguf)
    folder, name = os.path.dirname(path), os.path.basename(path)
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # transformers marks a model loaded from GGUF as quantized and will not save it: copy the
    # (already dequantized) weights into a plain model of the same configuration.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(a.out, safe_serialization=True)
    tok.save_pretrained(a.out)
    print(f"wrote {a.out}: {model.config.architectures}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters in {a.dtype}")


if __name__ == "__main__":
    main()
