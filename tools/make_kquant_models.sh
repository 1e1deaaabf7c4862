#!/usr/bin/env bash
# Make test models in llama.cpp quant formats (K-quants and Q5_0/Q5_1) with
# llama.cpp's own quantizer, by requantizing SmolLM2-135M-Instruct.Q4_1.gguf.
#
# Usage: tools/make_kquant_models.sh [OUT_DIR]   (default ~/.cache/ferrolm/quants)
# Every output is rebuilt on each run.
#
# Needs:
#   - ~/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf (override: SRC=...)
#   - a configured llama.cpp cmake build dir (override: LLAMA_BUILD=...), default
#     /work/peers/llama-server/build, and the cmake that configured it (CMAKE=...).
#
# Commands it runs:
#   cmake --build $LLAMA_BUILD --target llama-quantize -j 2     (only if missing)
#   llama-quantize --allow-requantize $SRC $OUT/SmolLM2-135M-Instruct.<TYPE>.gguf <TYPE> 2
#
# Note: SmolLM2-135M has n_embd=576, not a multiple of 256, so llama-quantize
# falls back for most tensors (Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0,
# Q2_K/Q3_K->Q4_0); only the 1536-wide ffn_down rows keep real K-quant types.
set -euo pipefail

OUT=${1:-$HOME/.cache/ferrolm/quants}
SRC=${SRC:-$HOME/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf}
LLAMA_BUILD=${LLAMA_BUILD:-/work/peers/llama-server/build}
CMAKE=${CMAKE:-$(sed -n 's/^CMAKE_COMMAND:INTERNAL=//p' "$LLAMA_BUILD/CMakeCache.txt")}
QUANTIZE=$LLAMA_BUILD/bin/llama-quantize
TYPES="Q4_K_M Q5_K_M Q6_K Q3_K_M Q2_K Q5_0 Q5_1 Q4_K_S"

if [[ ! -x $QUANTIZE ]]; then
    nice -n 19 "$CMAKE" --build "$LLAMA_BUILD" --target llama-quantize -j 2
fi

mkdir -p "$OUT"
for t in $TYPES; do
    dst=$OUT/SmolLM2-135M-Instruct.$t.gguf
    echo "== $t -> $dst"
    nice -n 19 "$QUANTIZE" --allow-requantize "$SRC" "$dst" "$t" 2 >"$dst.log" 2>&1 \
        || { cat "$dst.log"; exit 1; }
    grep -E "model size|quant size|fallback" "$dst.log" || true
    rm -f "$dst.log"
done
ls -l "$OUT"
