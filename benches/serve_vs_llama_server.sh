#!/usr/bin/env bash
# Serving side by side: llama-server, then `ferrolm serve`, on the same model and threads, each
# measured by serve_load.py with 1 client and then 16 clients (closed loop, streaming chat
# completions, 128 tokens each, ~600-character prompts). The two servers never run at the same
# time: each is stopped before the next starts. Prints a table with the CPU; skips ferrolm (with
# a message) when its binary has no working `serve`. Builds nothing:
#   nice -n 10 bash benches/build_llama_server.sh      # once, ~10 minutes on 2 cores
#   cargo build --release
#   bash benches/serve_vs_llama_server.sh [MODEL]
# Environment: LLAMA_SERVER (default /work/peers/llama-server/bin/llama-server),
#   FERROLM (default target/release/ferrolm), THREADS (2), REQUESTS (per client, 3),
#   LLAMA_PORT (18080), FERROLM_PORT (18081), LLAMA_ARGS / FERROLM_ARGS (extra server flags).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-$HOME/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf}
llama=${LLAMA_SERVER:-/work/peers/llama-server/bin/llama-server}
ferrolm=${FERROLM:-target/release/ferrolm}
threads=${THREADS:-2}
requests=${REQUESTS:-3}
llama_port=${LLAMA_PORT:-18080}
ferrolm_port=${FERROLM_PORT:-18081}
out=$(mktemp -d)
server=

stop_server() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=
  fi
}
trap 'stop_server; rm -rf "$out"' EXIT

# wait_health URL LOG: until GET URL/health answers 200 (the server may die meanwhile)
wait_health() {
  for _ in $(seq 600); do
    if python3 - "$1/health" <<'EOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
EOF
    if ! kill -0 "$server" 2>/dev/null; then
      echo "server exited before /health answered; its log:" >&2; tail -20 "$2" >&2; return 1
    fi
    sleep 0.2
  done
  echo "no /health after 120 s; log: $2" >&2; return 1
}

# cpu_seconds PID: "BUSY SERVER" CPU seconds so far, all CPUs together and the server's own
cpu_seconds() {
  python3 - "$1" <<'EOF'
import os, sys
hz = os.sysconf("SC_CLK_TCK")
f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
busy = sum(f) - f[3] - f[4]  # all but idle and iowait
st = open("/proc/%s/stat" % sys.argv[1]).read().rsplit(")", 1)[1].split()
print(busy / hz, (int(st[11]) + int(st[12])) / hz)
EOF
}

# measure NAME URL: one short warm-up request, then 1 client and 16 clients; notes the share of
# the CPUs that other processes (the load generator included) used meanwhile, as the machine
# may be shared
measure() {
  # Each run has its own prompts (seed): nothing is in a prefix cache from an earlier run.
  python3 benches/serve_load.py --url "$2" --clients 1 --requests-per-client 1 --max-tokens 8 --seed 999 >/dev/null
  for c in 1 16; do
    echo "== $1, $c client(s)" >&2
    read -r busy0 own0 < <(cpu_seconds "$server")
    t0=$(date +%s.%N)
    python3 benches/serve_load.py --url "$2" --clients "$c" --requests-per-client "$requests" \
      --seed "$c" --label "$1" | tee "$out/$1-$c.txt" >&2
    read -r busy1 own1 < <(cpu_seconds "$server")
    python3 -c 'import sys; b0,o0,b1,o1,t0,t1,n = map(float, sys.argv[1:]); w=(t1-t0)*n
print("%.0f %.0f" % (100*(o1-o0)/w, 100*max(0.0,(b1-b0)-(o1-o0))/w))' \
      "$busy0" "$own0" "$busy1" "$own1" "$t0" "$(date +%s.%N)" "$(nproc)" > "$out/$1-$c.cpu"
    read -r own other < "$out/$1-$c.cpu"
    echo "CPU use during the run: server ${own}%, other processes ${other}% of $(nproc) CPUs" >&2
  done
}

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo)
case "$flags" in
  *avx512f*) level=avx512 ;;
  *avx2*) level=avx2 ;;
  *) level=sse ;;
esac

if [ -x "$llama" ]; then
  # shellcheck disable=SC2086
  "$llama" -m "$model" -np 16 -c 16384 -t "$threads" --port "$llama_port" ${LLAMA_ARGS:-} \
    >"$out/llama-server.log" 2>&1 &
  server=$!
  wait_health "http://127.0.0.1:$llama_port" "$out/llama-server.log"
  measure llama-server "http://127.0.0.1:$llama_port"
  stop_server
else
  echo "llama-server: $llama not found (bash benches/build_llama_server.sh builds it); skipped" >&2
fi

if "$ferrolm" serve --help >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  "$ferrolm" serve --model "$model" --port "$ferrolm_port" --threads "$threads" ${FERROLM_ARGS:-} \
    >"$out/ferrolm.log" 2>&1 &
  server=$!
  wait_health "http://127.0.0.1:$ferrolm_port" "$out/ferrolm.log"
  measure ferrolm "http://127.0.0.1:$ferrolm_port"
  stop_server
else
  echo "ferrolm: '$ferrolm serve --help' failed (not built, or no serve command yet); skipped" >&2
fi

python3 - "$out" "$cpu" "$level" "$threads" "$(basename "$model")" <<'EOF'
import json, os, sys
out, cpu, level, threads, model = sys.argv[1:]
def load(name, c):
    p = os.path.join(out, "%s-%d.txt" % (name, c))
    if not os.path.exists(p):
        return None
    lines = [l for l in open(p) if l.startswith("{")]
    if not lines:
        return None
    r = json.loads(lines[-1])
    cpu = p[:-4] + ".cpu"
    if os.path.exists(cpu):
        r["cpu_own"], r["cpu_other"] = open(cpu).read().split()
    return r
names = ["llama-server", "ferrolm"]
print("CPU: %s (%s), %s threads per server, model %s" % (cpu, level, threads, model))
rows = [("1 client tok/s", 1, "tok_s"), ("1 client TTFT p50 ms", 1, "ttft_p50_ms"),
        ("1 client ITL p50 ms", 1, "itl_p50_ms"),
        ("16 clients tok/s (aggregate)", 16, "tok_s"), ("16 clients TTFT p50 ms", 16, "ttft_p50_ms"),
        ("16 clients TTFT p99 ms", 16, "ttft_p99_ms"), ("16 clients ITL p50 ms", 16, "itl_p50_ms"),
        ("16 clients ITL p99 ms", 16, "itl_p99_ms"), ("16 clients requests ok", 16, "ok"),
        ("16 clients refused", 16, "refused"), ("16 clients failed", 16, "failed"),
        ("prompt tokens (mean)", 16, "prompt_tokens_mean"),
        ("1 client: server CPU %", 1, "cpu_own"), ("1 client: other CPU %", 1, "cpu_other"),
        ("16 clients: server CPU %", 16, "cpu_own"), ("16 clients: other CPU %", 16, "cpu_other")]
print("%-30s %14s %14s" % ("", *names))
for label, c, key in rows:
    cells = []
    for n in names:
        r = load(n, c)
        v = None if r is None else r.get(key)
        cells.append("-" if v is None else str(v))
    print("%-30s %14s %14s" % (label, *cells))
print("(other CPU %: share of all CPUs used by processes other than the server during the run,"
      " the load generator included; far above ~10% means the machine was shared and contended)")
EOF
