#!/usr/bin/env bash
# Two Wharf binaries side by side: both serve bench/wharf.toml on the memory
# store, pinned to core 0, while wharf-bench on core 1 alternates between
# them: echo (64 B; 1, 100 and 1,000 connections) and broadcast to 1,000
# subscribers (unpaced), ROUNDS rounds, SECS seconds per run. One JSON line
# per run on stdout: {"binary": "before"|"after", "mode": ..., result}.
#
#   bench/ab.sh BEFORE_BINARY AFTER_BINARY [ROUNDS] [SECS] > runs.jsonl
#
# BEFORE_CONFIG / AFTER_CONFIG name another config for one of them (an
# older binary may not know a key the current bench/wharf.toml sets).
#
# Needs the release guests (`make guests`) and `target/release/wharf-bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1 after=$2 rounds=${3:-3} secs=${4:-4}
bench=target/release/wharf-bench
pin_server="" pin_load=""
if [ "$(nproc)" -ge 2 ]; then pin_server="taskset -c 0"; pin_load="taskset -c 1"; fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
declare -A port pid
for name in before after; do
  bin=$before config=${BEFORE_CONFIG:-bench/wharf.toml}
  [ "$name" = after ] && bin=$after config=${AFTER_CONFIG:-bench/wharf.toml}
  port[$name]=$(free_port)
  data=$(mktemp -d)
  $pin_server "$bin" serve --config "$config" --listen "127.0.0.1:${port[$name]}" --store memory \
    --data-dir "$data" >/dev/null 2>&1 &
  pid[$name]=$!; pids+=("$!")
done
for name in before after; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/${port[$name]}") 2>/dev/null && break
    sleep 0.1
  done
done
run() { # name mode args...
  local name=$1 mode=$2; shift 2
  local out; out=$($pin_load $bench "$@" --pid "${pid[$name]}" | tr -d '\n')
  echo "{\"binary\": \"$name\", \"mode\": \"$mode\", \"result\": $out}"
}
for r in $(seq "$rounds"); do
  for name in before after; do
    url="ws://127.0.0.1:${port[$name]}"
    for c in 1 100 1000; do run "$name" "echo-$c" echo "$url/echo" --conns "$c" --size 64 --secs "$secs"; done
    run "$name" broadcast-1000 broadcast "$url/broadcast" --subs 1000 --rate 0 --size 64 --secs "$secs"
  done
done
