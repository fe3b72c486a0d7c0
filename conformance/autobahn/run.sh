#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (cases 1-7, 9, 10) against the
# echo example served by target/debug/wharf, and against the same echo
# written as a WebSocket-over-HTTP backend with gripcontrol
# (host/tests/grip/backend.py, on /grip-echo), then compares every case's
# result for each with expected.json; and the compression cases (12, 13)
# against the echo with permessage-deflate, compared with
# expected-deflate.json: any change in behaviour fails.
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
grip_py="$root/target/grip-venv/bin/python"
[ -x "$grip_py" ] || { echo "autobahn: $grip_py is missing (make test-deps)" >&2; exit 1; }

# The gripcontrol echo backend on a free loopback port (it prints the port).
"$grip_py" -u "$root/host/tests/grip/backend.py" >"$out/backend.port" 2>"$out/backend.log" &
backend=$!
pid=
trap 'kill $pid $backend 2>/dev/null || true; wait $pid $backend 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  [ -s "$out/backend.port" ] && break
  kill -0 "$backend" 2>/dev/null || { cat "$out/backend.log" >&2; echo "autobahn: the backend did not start" >&2; exit 1; }
  sleep 0.1
done
config="$out/wharf.toml"
{
  sed "s|\.\./\.\./target/|$root/target/|" "$here/wharf.toml"
  printf '\n[[routes]]\npath = "/grip-echo"\n[routes.backend]\nurl = "http://127.0.0.1:%s/base"\n' "$(head -n1 "$out/backend.port")"
  # Case 9 echoes 16 MiB messages: the answer is the message and the m: prefix.
  printf 'max_response_bytes = 33554432\n'
} >"$config"

# The host on a free loopback port; its log names the address it bound.
log="$out/wharf.log"
"$wharf" serve --config "$config" --listen 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
addr=
for _ in $(seq 1 100); do
  addr=$(sed -n 's/.*wharf listening addr=\([0-9.:]*\).*/\1/p' "$log" | head -n1)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "autobahn: wharf did not start" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log" >&2; echo "autobahn: wharf did not report its address" >&2; exit 1; }

# Two fuzzing clients side by side (each is one Python thread): cases 1-10
# against the plain and the backend echo; the compression cases against
# the deflate echo. Of 12.* and 13.* every group's cases 1-8 (payloads up to
# 32 KiB) run: the whole of both takes the Python 2 client about an hour.
rm -rf "$out/report" "$out/report-deflate"
cat >"$out/fuzzingclient.json" <<JSON
{
  "options": {"failByDrop": false},
  "outdir": "$out/report",
  "servers": [{"agent": "wharf", "url": "ws://$addr/echo"}, {"agent": "wharf-grip", "url": "ws://$addr/grip-echo"}],
  "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
# Case patterns match by prefix (12.*.1 would also take 12.*.10-18): take
# every case of 12 and 13 and leave out 9-18 of each group.
skip=""
for c in 12 13; do for n in $(seq 9 18); do skip="$skip${skip:+, }\"$c.*.$n\""; done; done
cat >"$out/fuzzingclient-deflate.json" <<JSON
{
  "options": {"failByDrop": false},
  "outdir": "$out/report-deflate",
  "servers": [{"agent": "wharf-deflate", "url": "ws://$addr/echo-deflate"}],
  "cases": ["12.*", "13.*"],
  "exclude-cases": [${AUTOBAHN_DEFLATE_SKIP-$skip}],
  "exclude-agent-cases": {}
}
JSON

wstest() {
  (cd "$out" && timeout 1200 "$py2" -c "
import site, sys
site.addsitedir('$lib')
sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', '$1']
from autobahntestsuite import wstest
wstest.run()
" >"$2" 2>&1) || { tail -n 20 "$2" >&2; echo "autobahn: wstest failed ($1)" >&2; return 1; }
}
echo "autobahn: fuzzing ws://$addr/echo, /grip-echo and /echo-deflate (reports in $out/report*/index.html)"
wstest "$out/fuzzingclient.json" "$out/wstest.log" &
plain=$!
wstest "$out/fuzzingclient-deflate.json" "$out/wstest-deflate.log" &
compressed=$!
ok=0
wait $plain || ok=1
wait $compressed || ok=1
[ $ok = 0 ] || exit 1

kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log" >&2; echo "autobahn: wharf exited during the run" >&2; exit 1; }
status=0
python3 "$here/compare.py" "$here/expected.json" "$out/report/index.json" wharf "$@" || status=1
echo "autobahn: the same echo as a WebSocket-over-HTTP backend:"
python3 "$here/compare.py" "$here/expected.json" "$out/report/index.json" wharf-grip || status=1
echo "autobahn: the echo with permessage-deflate (cases 12 and 13):"
python3 "$here/compare.py" "$here/expected-deflate.json" "$out/report-deflate/index.json" wharf-deflate "$@" || status=1
exit $status
