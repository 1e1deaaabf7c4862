#!/usr/bin/env bash
# Decoding speed on a machine shared with a CPU-bound process (issue 11: the thread pool must not
# spin against it). Runs `ferrolm bench -p 0 -n 128 -r 5` with the default threads and with -t 1,
# each without and with one busy-looping competitor, ROUNDS times in turn, and prints the median tg
# of each and the two ratios the pool is held to: with the competitor, the default threads at
# least as fast as one thread, and at least 40% of their own speed without it. Builds nothing.
#   bash benches/contention.sh [ROUNDS] [BINARY]
#   e.g. cargo build --release && bash benches/contention.sh 3
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1}
bin=${2:-target/release/ferrolm}
competitor=
stop_competitor() {
  if [ -n "$competitor" ]; then
    kill "$competitor" 2>/dev/null || true
    wait "$competitor" 2>/dev/null || true
    competitor=
  fi
}
trap stop_competitor EXIT
tg() { "$bin" bench -p 0 -n 128 -r 5 --json "$@" | grep -o '"tg":[0-9.]*' | cut -d: -f2; }
results=()
for _ in $(seq "$rounds"); do
  quiet_default=$(tg)
  quiet_one=$(tg -t 1)
  sh -c 'while :; do :; done' &
  competitor=$!
  busy_default=$(tg)
  busy_one=$(tg -t 1)
  stop_competitor
  results+=("$quiet_default $quiet_one $busy_default $busy_one")
done
printf '%s\n' "${results[@]}" | python3 -c "
import statistics, sys
runs = [list(map(float, line.split())) for line in sys.stdin if line.strip()]
qd, q1, bd, b1 = (statistics.median(col) for col in zip(*runs))
print('tg (tokens/s, median of %d)   default threads   -t 1' % len(runs))
print(f'without a competitor          {qd:15.1f} {q1:6.1f}')
print(f'with one competitor           {bd:15.1f} {b1:6.1f}')
print(f'with the competitor: default / -t 1 = {bd / b1:.2f} (want >= 1), default / default without = {bd / qd:.2f} (want >= 0.40)')"
