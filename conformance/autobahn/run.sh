#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (cases 1-7, 9, 10) against the
# echo example served by target/debug/wharf, then compares every case's
# result with expected.json: any change in behaviour fails.
#
#   conformance/autobahn/run.sh            run and compare
#   conformance/autobahn/run.sh --update   run and rewrite expected.json
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/autobahn"
wharf="$root/target/debug/wharf"
mkdir -p "$out"

# The suite is Python 2 code; pyenv provides 2.7 on these machines.
py2=${PYTHON2:-}
if [ -z "$py2" ]; then
  for c in "$(pyenv root 2>/dev/null)/versions/2.7.18/bin/python" "$HOME/.pyenv/versions/2.7.18/bin/python" python2.7 python2; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
      py2=$c
      break
    fi
  done
fi
[ -n "$py2" ] || { echo "autobahn: needs a Python 2.7 interpreter (pyenv install 2.7.18, or set PYTHON2)" >&2; exit 1; }

# Install the pinned suite once into target/ (not into the interpreter).
lib="$out/py"
if ! cmp -s "$here/requirements.txt" "$lib/.requirements.txt" 2>/dev/null; then
  rm -rf "$lib"
  "$py2" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$lib" -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$lib/.requirements.txt"
fi

[ -x "$wharf" ] || { echo "autobahn: $wharf is missing (cargo build -p wharf)" >&2; exit 1; }

# The host on a free loopback port; its log names the address it bound.
log="$out/wharf.log"
"$wharf" serve --config "$here/wharf.toml" --listen 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
addr=
for _ in $(seq 1 100); do
  addr=$(sed -n 's/.*wharf listening addr=\([0-9.:]*\).*/\1/p' "$log" | head -n1)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "autobahn: wharf did not start" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log" >&2; echo "autobahn: wharf did not report its address" >&2; exit 1; }

rm -rf "$out/report"
cat >"$out/fuzzingclient.json" <<JSON
{
  "options": {"failByDrop": false},
  "outdir": "$out/report",
  "servers": [{"agent": "wharf", "url": "ws://$addr/echo"}],
  "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON

echo "autobahn: fuzzing ws://$addr/echo (report in $out/report/index.html)"
(cd "$out" && timeout 900 "$py2" -c "
import site, sys
site.addsitedir('$lib')
sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', '$out/fuzzingclient.json']
from autobahntestsuite import wstest
wstest.run()
" >"$out/wstest.log" 2>&1) || { tail -n 20 "$out/wstest.log" >&2; echo "autobahn: wstest failed" >&2; exit 1; }

kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log" >&2; echo "autobahn: wharf exited during the run" >&2; exit 1; }
python3 "$here/compare.py" "$here/expected.json" "$out/report/index.json" wharf "$@"
