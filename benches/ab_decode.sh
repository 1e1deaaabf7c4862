#!/usr/bin/env bash
# A/B of two builds (or two settings) on one decoding workload: runs A and B alternately PAIRS
# times and prints each pair's decode tokens/s and the median B/A ratio. On this 2-vCPU machine
# the second virtual CPU is now and then unavailable for a while, which makes two-thread timings
# jump by up to 2x; one thread (`-t 1` in the arguments) gives steadier comparisons of kernels.
#   bash benches/ab_decode.sh BIN_A BIN_B PAIRS [generate arguments...]
#   e.g. bash benches/ab_decode.sh /tmp/ferrolm-old target/release/ferrolm 3 -n 128 --max-batch 8 -t 1
# A "binary" may be a wrapper script that sets a variable, e.g. FERROLM_SUM_ORDER=blocks.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1; b=$2; pairs=$3; shift 3
file=benches/batch_prompts.jsonl # 8 prompts of different lengths
rate() { "$1" generate --batch-file "$file" --json --temperature 0 --ignore-eos "${@:2}" 2>&1 >/dev/null | grep -o '[0-9.]* tok/s after the prompts' | grep -o '^[0-9.]*'; }
results=()
for _ in $(seq "$pairs"); do
  results+=("$(rate "$a" "$@") $(rate "$b" "$@")")
done
printf '%s\n' "${results[@]}" | python3 -c "
import statistics, sys
pairs = [tuple(map(float, line.split())) for line in sys.stdin if line.strip()]
print('tok/s A/B per pair:', ' '.join(f'{a:.0f}/{b:.0f}' for a, b in pairs))
print(f'median B/A {statistics.median(b / a for a, b in pairs):.3f}')"
