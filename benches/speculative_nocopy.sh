#!/usr/bin/env bash
# Prompt-lookup speculative decoding where there is little to copy: chat answers that write new
# text, and a chat prompt asking for a passage to be repeated that the small default model
# paraphrases instead. Side by side with plain greedy decoding, alternating runs; checks that the
# outputs are identical and prints the tok/s of each, the drafts accepted, the steps that drafted
# nothing (backing off) and the ratio speculative / plain over all prompts of a run (the goal:
# speculation no more than 3% slower here).
#   cargo build --release && bash benches/speculative_nocopy.sh [RUNS] [MAX_TOKENS] [ARGS...]
# ARGS go to both runs (e.g. --threads 1, which suffers less from other work on a shared machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${FERROLM_BIN:-target/release/ferrolm}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores | best level: $(grep -qw avx512_vnni /proc/cpuinfo && echo avx512-vnni || (grep -qw avx_vnni /proc/cpuinfo && echo avx-vnni) || (grep -qw avx2 /proc/cpuinfo && echo avx2 || echo scalar)) | FERROLM_KERNELS=${FERROLM_KERNELS:-unset} FERROLM_SUM_ORDER=${FERROLM_SUM_ORDER:-unset (blocks)}"
runs=${1:-3}
n=${2:-200}
shift $(($# < 2 ? $# : 2))
passage='The lighthouse stood on a rock at the mouth of the harbour. Every evening at dusk the keeper climbed the ninety-two steps of the tower, trimmed the wick, polished the great lens and lit the lamp, which then turned all night so that its beam swept across the water every ten seconds. Ships far out at sea counted the flashes to know which light they were seeing, and so where they were on the dark coast. In winter storms the keeper stayed awake until morning, wiping the salt from the windows and listening to the waves break against the rock below.'
names=(story dragon moon volcano paraphrase)
asks=(
  'Write a short story about a lighthouse keeper.'
  'Tell me a bedtime story about a small dragon who is afraid of the dark.'
  'Write a short story about a girl who finds a door to the moon.'
  'Explain how volcanoes form, in simple words.'
  "Repeat the following passage word for word:

$passage"
)
# "generated: N tokens, R tok/s" -> "N R"
rate() { grep -o 'generated: [0-9]* tokens, [0-9.]* tok/s' "$1" | awk '{print $2, $4}'; }
for run in $(seq "$runs"); do
  plain_time=0 spec_time=0 tokens=0
  for i in "${!names[@]}"; do
    # printf -v keeps the prompt's final newline (command substitution would drop it).
    printf -v prompt '<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n' "${asks[$i]}"
    plain=$("$bin" generate -p "$prompt" --temperature 0 -n "$n" "$@" 2>/tmp/ferrolm-plain.err)
    spec=$("$bin" generate -p "$prompt" --temperature 0 -n "$n" --speculative ngram --verbose "$@" 2>/tmp/ferrolm-spec.err)
    same=$([ "$plain" == "$spec" ] && echo identical || echo DIFFERENT)
    read -r count plain_rate < <(rate /tmp/ferrolm-plain.err)
    read -r _ spec_rate < <(rate /tmp/ferrolm-spec.err)
    # The rates count the tokens after the first (its time is the prompt's).
    plain_time=$(awk -v t="$plain_time" -v n="$count" -v r="$plain_rate" 'BEGIN {print t + (n - 1) / r}')
    spec_time=$(awk -v t="$spec_time" -v n="$count" -v r="$spec_rate" 'BEGIN {print t + (n - 1) / r}')
    tokens=$((tokens + count - 1))
    drafts=$(grep -o '[0-9]* drafted, [0-9]* accepted ([0-9]*%)' /tmp/ferrolm-spec.err)
    backoff=$(grep -o '[0-9]* steps not drafted' /tmp/ferrolm-spec.err)
    printf '%-10s %3d tokens | plain %6.1f tok/s | speculative %6.1f tok/s, %s, %s | output %s\n' "${names[$i]}" "$count" "$plain_rate" "$spec_rate" "$drafts" "$backoff" "$same"
  done
  awk -v run="$run" -v n="$tokens" -v p="$plain_time" -v s="$spec_time" \
    'BEGIN {printf "run %d: plain %.1f tok/s, speculative %.1f tok/s: %.3fx\n", run, n / p, n / s, p / s}'
done
