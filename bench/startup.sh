#!/usr/bin/env bash
# Prints milliseconds from exec to "wharf listening" for the examples config
# with data (and compile cache) in $1.
set -u
start=$(date +%s%N)
"$(dirname "$0")/../target/release/wharf" serve --config "$(dirname "$0")/../examples/wharf.toml" --listen 127.0.0.1:0 \
  --admin-listen 127.0.0.1:0 --store memory --data-dir "$1" 2>&1 | while read -r line; do
  if [[ "$line" == *"wharf listening"* ]]; then
    echo $(( ($(date +%s%N) - start) / 1000000 ))
    pkill -f -- "--data-dir $1"
    break
  fi
done
