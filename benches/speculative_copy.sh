#!/usr/bin/env bash
# Prompt-lookup speculative decoding on an input-grounded task (copying a passage), side by side
# with plain greedy decoding, alternating runs; checks that the outputs are identical.
#   cargo build --release && bash benches/speculative_copy.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${FERROLM_BIN:-target/release/ferrolm}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores | best level: $(grep -qw avx512_vnni /proc/cpuinfo && echo avx512-vnni || (grep -qw avx_vnni /proc/cpuinfo && echo avx-vnni) || (grep -qw avx2 /proc/cpuinfo && echo avx2 || echo scalar)) | FERROLM_KERNELS=${FERROLM_KERNELS:-unset} FERROLM_SUM_ORDER=${FERROLM_SUM_ORDER:-unset (blocks)}"
prompt=$(python3 -c '
import pydoc_data.topics as t
passage = t.topics["naming"][:1400]
print(passage + "\n\nThe same text, copied exactly:\n\n" + passage[:60], end="")')
for _ in $(seq "${1:-3}"); do
  plain=$("$bin" generate -p "$prompt" --temperature 0 -n 200 2>/tmp/ferrolm-plain.err)
  spec=$("$bin" generate -p "$prompt" --temperature 0 -n 200 --speculative ngram --verbose 2>/tmp/ferrolm-spec.err)
  same=$([ "$plain" == "$spec" ] && echo identical || echo DIFFERENT)
  echo "plain: $(grep -o 'generated: [0-9]* tokens, [0-9.]* tok/s' /tmp/ferrolm-plain.err) | speculative: $(grep -o 'generated: [0-9]* tokens, [0-9.]* tok/s' /tmp/ferrolm-spec.err) $(grep -o '[0-9]* drafted.*%)' /tmp/ferrolm-spec.err) | output $same"
done
