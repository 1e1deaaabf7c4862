#!/usr/bin/env bash
# Batched decoding: 8 prompts of different lengths decoded together (--max-batch 8) against the
# same 8 run one after another (--max-batch 1), alternating runs in one invocation; checks that
# the outputs are identical and prints the aggregate decode tokens/s (after the prompts) of each.
#   cargo build --release && bash benches/batch_decode.sh [RUNS] [MAX_TOKENS]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${FERROLM_BIN:-target/release/ferrolm}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores | best level: $(grep -qw avx512_vnni /proc/cpuinfo && echo avx512-vnni || (grep -qw avx_vnni /proc/cpuinfo && echo avx-vnni) || (grep -qw avx2 /proc/cpuinfo && echo avx2 || echo scalar)) | FERROLM_KERNELS=${FERROLM_KERNELS:-unset} FERROLM_SUM_ORDER=${FERROLM_SUM_ORDER:-unset (blocks)}"
n=${2:-128}
# Every sequence generates exactly N tokens unless FERROLM_STOP_AT_EOS=1 (then the batch shrinks as
# sequences end, as it would in use).
IGNORE=$([ "${FERROLM_STOP_AT_EOS:-0}" = 1 ] && echo "" || echo "--ignore-eos")
file=benches/batch_prompts.jsonl # 8 prompts of different lengths
trap 'rm -f /tmp/ferrolm-batch-*.out /tmp/ferrolm-batch-*.err' EXIT
rate() { grep -o '[0-9.]* tok/s after the prompts' "$1" | grep -o '^[0-9.]*'; }
for _ in $(seq "${1:-3}"); do
  "$bin" generate --batch-file "$file" --json -n "$n" --temperature 0 --max-batch 1 $IGNORE >/tmp/ferrolm-batch-1.out 2>/tmp/ferrolm-batch-1.err
  "$bin" generate --batch-file "$file" --json -n "$n" --temperature 0 --max-batch 8 $IGNORE >/tmp/ferrolm-batch-8.out 2>/tmp/ferrolm-batch-8.err
  same=$(cmp -s /tmp/ferrolm-batch-1.out /tmp/ferrolm-batch-8.out && echo identical || echo DIFFERENT)
  one=$(rate /tmp/ferrolm-batch-1.err); eight=$(rate /tmp/ferrolm-batch-8.err)
  tokens=$(grep -o 'generated [0-9]* tokens' /tmp/ferrolm-batch-8.err)
  echo "one after another: $one tok/s | batch of 8: $eight tok/s | ratio $(python3 -c "print(f'{$eight/$one:.2f}x')") | $tokens | outputs $same"
done
