#!/usr/bin/env bash
# Long prompts side by side with llama.cpp on one machine, in one run (issue: attention at 8k):
#   1. perplexity at ctx 7680 over 64 KB of English text (two chunks: 15,360 of its tokens): value and wall time of
#      `ferrolm perplexity` and `llama-perplexity` (flash attention on);
#   2. prefill of 8192 tokens from an empty cache, and pp512 / tg128 at depths 0, 2048, 4096 and 8000, through
#      benches/bench_vs_llama_cpp.py (llama-cpp-python, flash attention on).
#
#   cargo build --release
#   LLAMA_PERPLEXITY=/work/peers/llama-server/build/bin/llama-perplexity \
#     PY=/work/peers/venv/bin/python bash benches/long_context.sh [THREADS]
#
# The text is Python's own documentation topics (pydoc_data, shipped with every CPython), cut at
# 64,000 bytes (about 15,400 tokens): the same bytes on any machine with the same Python. `lscpu`'s model name and the
# kernel level are printed beside the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
PY=${PY:-/work/peers/venv/bin/python}
LP=${LLAMA_PERPLEXITY:-/work/peers/llama-server/build/bin/llama-perplexity}
MODEL=${MODEL:-$HOME/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf}
FERROLM=target/release/ferrolm
TEXT=$(mktemp --suffix .txt)
trap 'rm -f "$TEXT"' EXIT
"$PY" - "$TEXT" <<'PYEOF'
import sys
from pydoc_data.topics import topics
out = ""
for key in sorted(topics):
    out += topics[key] + "\n\n"
    if len(out.encode()) >= 64000:
        break
open(sys.argv[1], "wb").write(out.encode()[:64000])
PYEOF
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), flags: $(grep -o -w 'avx512f\|avx512_vnni\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "text: $(wc -c < "$TEXT") bytes; threads $T"

echo "== perplexity, ctx 7680"
start=$(date +%s.%N)
"$LP" -m "$MODEL" -f "$TEXT" -c 7680 -b 512 -t "$T" -fa on 2> /tmp/llama_ppl.log | tail -1 > /dev/null || true
lt=$(echo "$(date +%s.%N) - $start" | bc)
lppl=$(grep -o 'Final estimate: PPL = [0-9.]*' /tmp/llama_ppl.log | grep -o '[0-9.]*$' || echo "?")
start=$(date +%s.%N)
fj=$("$FERROLM" perplexity --model "$MODEL" --file "$TEXT" --ctx 7680 -t "$T" --json)
ft=$(echo "$(date +%s.%N) - $start" | bc)
fppl=$(echo "$fj" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
printf "llama.cpp ppl %s in %.1f s | ferrolm ppl %s in %.1f s | speed ratio %.2fx, ppl apart %s%%\n" "$lppl" "$lt" "$fppl" "$ft" \
  "$(echo "$lt / $ft" | bc -l)" "$("$PY" -c "print(f'{abs($fppl/$lppl-1)*100:.3f}')" 2>/dev/null || echo ?)"

echo "== prefill of 8192 tokens from an empty cache"
"$PY" benches/bench_vs_llama_cpp.py --model "$MODEL" -p 8192 -n 0 -r 1 -t "$T" --fa 2>/dev/null | grep '^threads'
echo "== pp512 and tg128 at depths 0, 2048, 4096 and 8000"
"$PY" benches/bench_vs_llama_cpp.py --model "$MODEL" -p 512 -n 128 -r 2 -t "$T" -d 0 2048 4096 8000 --fa 2>/dev/null | grep '^threads'
