# Wharf: the two commands a new user needs are `make run` and `make test`.
#
#   make run     build the host and the example handlers (release), then serve
#                examples/wharf.toml on http://127.0.0.1:8080
#   make test    install what the tests need, build the guests, check formatting, test
#   make lint    formatting and clippy -D warnings for the host and the guests
#   make build   release host (target/release/wharf) and every example component,
#                in every language (target/components/ for JS, TS, Python)
#   make tools   the JavaScript and Python toolchains `wharf build` runs, under
#                guest-sdk/ (npm ci; a Python venv)
#   make bench   the benchmark matrix against the native baseline (BENCHMARKS.md)
#   make bench-cluster  broadcast across hosts sharing one Redis (BENCHMARKS.md)
#   make bench-languages  the examples in Rust, JavaScript and Python side by side (BENCHMARKS.md)
#   make bench-grip  a WebSocket-over-HTTP backend behind Wharf and behind Pushpin (BENCHMARKS.md)
#   make bench-edge  what TLS, permessage-deflate and connection tokens cost (BENCHMARKS.md)
#   make bench-history  what channel history costs, and recovering missed messages (BENCHMARKS.md)
#   make bench-pipeline  what each handler of a route's chain costs a message (BENCHMARKS.md)
#   make bench-timers  timer lateness with 10,000 pending, and firings per second (BENCHMARKS.md)
#   make soak    30 minutes of mixed traffic, embedded store and Redis side by side (BENCHMARKS.md)

CARGO  ?= cargo
NPM    ?= npm
WASM   := target/wasm32-wasip2/release
BROWSER_DIR := host/tests/browser
# gripcontrol and websockets for the backend tests and Autobahn (test-deps).
GRIP_VENV := target/grip-venv

.PHONY: run build host guests components components-parallel tools wharf-bin wasm-target test test-deps conformance autobahn bench peers bench-quick bench-cluster bench-cluster-quick bench-languages bench-languages-quick bench-grip bench-grip-quick bench-edge bench-edge-quick bench-timers bench-timers-quick bench-pipeline bench-pipeline-quick soak soak-quick lint lint-guests fmt clean

run: build
	./target/release/wharf serve --config examples/wharf.toml

# `wharf build` runs the guest toolchains; it does not need an optimised
# host, so the tests build components with the debug binary they build
# anyway and `make run` with the release one.
WHARF_BIN ?= target/debug/wharf
run build: WHARF_BIN = target/release/wharf

build: host guests components

host:
	$(CARGO) build --release -p wharf

# Guest components: the examples and the host's test handlers, one workspace.
guests: wasm-target
	cd examples && $(CARGO) build --release

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# The toolchains of the other guest languages, pinned by their lock files:
# componentize-js, esbuild and TypeScript (guest-sdk/js/package-lock.json);
# componentize-py (guest-sdk/python/requirements.txt).
JS_TOOLS := guest-sdk/js/node_modules/.package-lock.json
PY_TOOLS := guest-sdk/python/.venv/bin/componentize-py
tools: $(JS_TOOLS) $(PY_TOOLS)

# Node.js and Python's venv come from Debian when missing and run as root.
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
$(JS_TOOLS): guest-sdk/js/package-lock.json
	@command -v node >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && $(APT_GET) nodejs npm; } || \
	  { echo "wharf build needs Node.js 20 or newer: apt-get install nodejs npm" >&2; exit 1; }
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' || \
	  { echo "wharf build needs Node.js 20 or newer; this is $$(node --version)" >&2; exit 1; }
	cd guest-sdk/js && $(NPM) ci --no-audit --no-fund
	@touch $@

$(PY_TOOLS): guest-sdk/python/requirements.txt
	@python3 -c 'import ensurepip' 2>/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && $(APT_GET) python3-venv; } || \
	  { echo "wharf build needs Python 3 with venv: apt-get install python3-venv" >&2; exit 1; }
	python3 -m venv guest-sdk/python/.venv
	guest-sdk/python/.venv/bin/pip install --quiet --require-hashes -r $<
	@touch $@

wharf-bin:
	$(CARGO) build $(if $(findstring release,$(WHARF_BIN)),--release) -p wharf

# The JavaScript, TypeScript and Python examples, each built by
# `wharf build` into target/components/LANG-NAME.wasm (`make -j` builds
# them side by side).
COMPONENTS := target/components
JS_EXAMPLES := js/echo js/chat ts/echo ts/chat ts/counter ts/tour ts/countdown
JS_SDK := $(wildcard guest-sdk/js/src/* guest-sdk/js/build/*) guest-sdk/js/package-lock.json wit/wharf.wit
PY_EXAMPLES := python/echo python/chat python/counter python/tour python/countdown
PY_SDK := $(wildcard guest-sdk/python/wharf/*.py) guest-sdk/python/requirements.txt wit/wharf.wit
# The app example's handlers in TypeScript (examples/app runs its scenarios
# against its configs: Rust, TypeScript, and the two mixed).
# The rooms example in each language; its scenarios need history, so
# `make conformance` runs them with examples/rooms/wharf-test.toml.
ROOMS := $(WASM)/rooms.wasm $(COMPONENTS)/ts-rooms.wasm $(COMPONENTS)/py-rooms.wasm
COMPONENT_FILES := $(foreach e,$(JS_EXAMPLES),$(COMPONENTS)/$(subst /,-,$(e)).wasm) \
  $(foreach e,$(PY_EXAMPLES),$(COMPONENTS)/py-$(notdir $(e)).wasm) $(COMPONENTS)/ts-rooms.wasm $(COMPONENTS)/py-rooms.wasm \
  $(COMPONENTS)/ts-app-auth.wasm $(COMPONENTS)/ts-app-rooms.wasm
# The host's own test handlers in those languages (examples/test-guests-*).
TEST_COMPONENTS := $(COMPONENTS)/js-faulty.wasm $(COMPONENTS)/py-faulty.wasm
components: $(COMPONENT_FILES) $(TEST_COMPONENTS)

# Each guest toolchain runs mostly on one thread: build them side by side.
components-parallel:
	$(MAKE) -j$$(nproc) components

$(COMPONENTS)/js-faulty.wasm: examples/test-guests-js/faulty/src/index.js $(JS_SDK) | tools wharf-bin
	$(WHARF_BIN) build examples/test-guests-js/faulty --out $@

$(COMPONENTS)/py-faulty.wasm: examples/test-guests-py/faulty/app.py $(PY_SDK) | tools wharf-bin
	$(WHARF_BIN) build examples/test-guests-py/faulty --out $@

$(COMPONENTS)/py-%.wasm: examples/python/%/app.py $(PY_SDK) | tools wharf-bin
	$(WHARF_BIN) build examples/python/$* --out $@

$(COMPONENTS)/js-%.wasm: examples/js/%/src/index.js $(JS_SDK) | tools wharf-bin
	$(WHARF_BIN) build examples/js/$* --out $@

$(COMPONENTS)/ts-%.wasm: examples/ts/%/src/index.ts examples/ts/%/tsconfig.json $(JS_SDK) | tools wharf-bin
	$(WHARF_BIN) build examples/ts/$* --out $@

# The host's clippy (`make lint`) is not part of `make test`: its check build
# would compile Wasmtime a second time, which CI cannot afford.
# Every target but the two binaries' empty test harnesses (`test = false`),
# which `--all-targets` would link anyway; the criterion bench runs once
# in test mode.
test: test-deps guests components-parallel lint-guests
	$(CARGO) fmt --all --check
	$(CARGO) test --workspace --tests --examples --bench invoke
	cd guest-sdk && $(CARGO) test --doc --target-dir ../target
	$(MAKE) conformance
	$(MAKE) autobahn

# `wharf test` on every example, in every language, with the Rust
# example's scenarios; then a project made by `wharf new` in each language,
# in a temporary directory, must build with `wharf build` and pass
# `wharf test`.
EXAMPLES := echo chat broadcast counter countdown
NEW_LANGS := rust js ts python
# The runs share the compile cache of the host's tests (target/test-data/cache),
# so each component is compiled once per `make test`.
TEST_CONFIG := target/test-data/wharf-test.toml
ROOMS_CONFIG := target/test-data/wharf-test-rooms.toml
conformance: wasm-target components
	$(CARGO) build -p wharf
	@mkdir -p $(dir $(TEST_CONFIG)) && echo 'cache_dir = "$(CURDIR)/target/test-data/cache"' > $(TEST_CONFIG)
	for e in $(EXAMPLES); do ./target/debug/wharf test --config $(TEST_CONFIG) $(WASM)/$$e.wasm examples/$$e/tests/*.toml || exit 1; done
	for e in $(JS_EXAMPLES); do ./target/debug/wharf test --config $(TEST_CONFIG) $(COMPONENTS)/$$(echo $$e | tr / -).wasm examples/$${e#*/}/tests/*.toml || exit 1; done
	for e in $(PY_EXAMPLES); do ./target/debug/wharf test --config $(TEST_CONFIG) $(COMPONENTS)/py-$${e#*/}.wasm examples/$${e#*/}/tests/*.toml || exit 1; done
	for c in app ts mixed; do ./target/debug/wharf test --config examples/app/$$c.toml examples/app/tests/*.toml || exit 1; done
	./target/debug/wharf test --config examples/ratelimit/ratelimit.toml examples/ratelimit/tests/*.toml
	cat $(TEST_CONFIG) examples/rooms/wharf-test.toml > $(ROOMS_CONFIG)
	for w in $(ROOMS); do ./target/debug/wharf test --config $(ROOMS_CONFIG) $$w examples/rooms/tests/*.toml || exit 1; done
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  for lang in $(NEW_LANGS); do \
	    (cd "$$tmp" && $(CURDIR)/target/debug/wharf new hello-$$lang --lang $$lang) && \
	    wasm=$$(cd "$$tmp/hello-$$lang" && CARGO_TARGET_DIR=$(CURDIR)/target/scaffold $(CURDIR)/target/debug/wharf build | tail -n 1) && \
	    ./target/debug/wharf test --config $(TEST_CONFIG) "$$wasm" "$$tmp"/hello-$$lang/tests/*.toml || exit 1; \
	  done

# The Autobahn|Testsuite fuzzing client (cases 1-7, 9, 10) against the echo
# example; every case's result must match conformance/autobahn/expected.json.
autobahn: guests $(GRIP_VENV)/.installed
	$(CARGO) build -p wharf
	conformance/autobahn/run.sh

# The benchmark matrix against the native baseline (minutes): servers on
# core 0, the load generator on core 1 when there are two cores. Writes the
# generated section of BENCHMARKS.md and bench/chart.svg.
PIN_LOAD := $(shell [ "$$(nproc)" -ge 2 ] && echo "taskset -c 1")
PIN_SERVER := $(shell [ "$$(nproc)" -ge 2 ] && echo "--server-core 0")
bench: build peers
	$(CARGO) build --release -p wharf-bench
	$(CARGO) bench -p wharf --bench invoke
	$(PIN_LOAD) target/release/wharf-bench matrix $(PIN_SERVER)

# The peers the matrix runs beside Wharf (Node ws, Cloudflare's workerd),
# from bench/peers/package-lock.json. The matrix leaves out a peer that did
# not install, and says so.
peers:
	@[ -d bench/peers/node_modules/ws ] && [ -d bench/peers/node_modules/@cloudflare/workerd-linux-64 ] || \
	  $(NPM) ci --prefix bench/peers --no-audit --no-fund || echo "bench peers did not install; the matrix runs without them" >&2

# Broadcast across 1, 2 and 3 hosts on one redis-server beside one host on
# the memory store (minutes); writes its section of BENCHMARKS.md.
bench-cluster: build
	$(CARGO) build --release -p wharf-bench
	target/release/wharf-bench cluster

bench-cluster-quick: build
	$(CARGO) build --release -p wharf-bench
	target/release/wharf-bench cluster --quick --out target/bench/BENCHMARKS.md --json target/bench/cluster-quick.json

# Mixed traffic against a host on the embedded store and one on Redis
# (killed and restarted midway), side by side, for SOAK_MINUTES (30):
# memory sampled every 10 s, every acknowledged write, every on-close, every
# answer and the host's log checked; writes its section of BENCHMARKS.md and
# fails when a check does not hold. Not part of `make test`.
SOAK_MINUTES ?= 30
soak: build test-deps
	$(CARGO) build --release -p wharf-bench
	target/release/wharf-bench soak --minutes $(SOAK_MINUTES)

# Two minutes of the same, written under target/bench/.
soak-quick: build test-deps
	$(CARGO) build --release -p wharf-bench
	target/release/wharf-bench soak --quick --out target/bench/BENCHMARKS.md --json target/bench/soak-quick.json

# The echo and chat examples in Rust, JavaScript and Python side by side
# (minutes): start-up, throughput, memory, and one warm call each (the
# invoke bench); writes its section of BENCHMARKS.md.
bench-languages: build
	$(CARGO) build --release -p wharf-bench
	$(CARGO) bench -p wharf --bench invoke -- "text 64 B"
	$(PIN_LOAD) target/release/wharf-bench languages $(PIN_SERVER)

# Echo through one WebSocket-over-HTTP backend behind Wharf and behind
# Debian's Pushpin (installed when missing, as root), side by side at 1 and
# 100 connections; writes its section of BENCHMARKS.md.
bench-grip: host
	@command -v pushpin >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && $(APT_GET) pushpin; } || \
	  { echo "make bench-grip needs Pushpin: apt-get install pushpin" >&2; exit 1; }
	$(CARGO) build --release -p wharf-bench
	$(PIN_LOAD) target/release/wharf-bench grip $(PIN_SERVER)

bench-grip-quick: host
	$(CARGO) build --release -p wharf-bench
	$(PIN_LOAD) target/release/wharf-bench grip $(PIN_SERVER) --quick --out target/bench/BENCHMARKS.md --json target/bench/grip-quick.json

# What TLS, permessage-deflate and connection tokens cost (a minute): echo
# over ws:// and wss://, with and without deflate, handshakes with RSA and
# P-256 certificates and with tokens, idle memory; writes its section of
# BENCHMARKS.md.
bench-edge: host guests
	$(CARGO) build --release -p wharf-bench
	$(PIN_LOAD) target/release/wharf-bench edge $(PIN_SERVER)

bench-edge-quick: host guests
	$(CARGO) build --release -p wharf-bench
	$(PIN_LOAD) target/release/wharf-bench edge $(PIN_SERVER) --quick --out target/bench/BENCHMARKS.md --json target/bench/edge-quick.json

# What channel history costs (a minute): fan-out to 1,000 members with
# history on and off, memory and embedded stores side by side, and the time
# to recover 100 missed messages; writes its section of BENCHMARKS.md.
bench-history: host guests
	$(CARGO) build --release -p wharf-bench
	$(PIN_LOAD) target/release/wharf-bench history $(PIN_SERVER)

bench-history-quick: host guests
	$(CARGO) build --release -p wharf-bench
	$(PIN_LOAD) target/release/wharf-bench history $(PIN_SERVER) --quick --out target/bench/BENCHMARKS.md --json target/bench/history-quick.json

# What each handler of a route's chain costs a message (a minute): echo
# alone, behind a selection, after one and two forwarding handlers; writes
# its section of BENCHMARKS.md.
# BEFORE=path/to/an/earlier/wharf measures that build beside this one.
bench-pipeline: host guests
	$(CARGO) build --release -p wharf-bench
	$(PIN_LOAD) target/release/wharf-bench pipeline $(PIN_SERVER) $(if $(BEFORE),--before $(BEFORE))

bench-pipeline-quick: host guests
	$(CARGO) build --release -p wharf-bench
	$(PIN_LOAD) target/release/wharf-bench pipeline $(PIN_SERVER) --quick --out target/bench/BENCHMARKS.md --json target/bench/pipeline-quick.json

# How late timers fire with 10,000 pending and how many one host fires a
# second, memory, embedded and Redis side by side (a minute); writes its
# section of BENCHMARKS.md.
bench-timers: host guests
	$(CARGO) build --release -p wharf-bench
	$(PIN_LOAD) target/release/wharf-bench timers $(PIN_SERVER)

bench-timers-quick: host guests
	$(CARGO) build --release -p wharf-bench
	$(PIN_LOAD) target/release/wharf-bench timers $(PIN_SERVER) --quick --out target/bench/BENCHMARKS.md --json target/bench/timers-quick.json

bench-languages-quick: build
	$(CARGO) build --release -p wharf-bench
	$(PIN_LOAD) target/release/wharf-bench languages $(PIN_SERVER) --quick --out target/bench/BENCHMARKS.md --json target/bench/languages-quick.json

# A few seconds of every mode, written under target/bench/.
bench-quick: build
	$(CARGO) build --release -p wharf-bench
	$(PIN_LOAD) target/release/wharf-bench matrix $(PIN_SERVER) --quick --out target/bench/BENCHMARKS.md --chart target/bench/chart.svg

lint: lint-guests
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint-guests:
	cd examples && $(CARGO) fmt --all --check
	cd guest-sdk && $(CARGO) fmt --check
	cd examples && $(CARGO) clippy --release -- -D warnings

fmt:
	$(CARGO) fmt --all
	cd examples && $(CARGO) fmt --all
	cd guest-sdk && $(CARGO) fmt

# Headless Chromium (Debian) and playwright-core (npm) for the chat page test;
# redis-server (Debian) for the store suite and the multi-host tests;
# openssl (Debian) for the RSA keys of the token tests;
# gripcontrol and websockets (PyPI) and @fanoutio/grip (npm) for the
# WebSocket-over-HTTP backends.
$(GRIP_VENV)/.installed: host/tests/grip/requirements.txt
	@python3 -c 'import ensurepip' 2>/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && $(APT_GET) python3-venv; } || \
	  { echo "the tests need Python 3 with venv: apt-get install python3-venv" >&2; exit 1; }
	rm -rf $(GRIP_VENV) && python3 -m venv $(GRIP_VENV)
	$(GRIP_VENV)/bin/pip install --quiet --require-hashes -r $<
	@touch $@

test-deps: $(GRIP_VENV)/.installed
	@missing=""; command -v chromium >/dev/null || missing="chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "the tests need Debian packages: sudo apt-get install $$missing" >&2; exit 1; fi; fi
	@[ -d $(BROWSER_DIR)/node_modules/playwright-core ] || $(NPM) ci --prefix $(BROWSER_DIR) --no-audit --no-fund
	@[ -d host/tests/grip/node_modules/@fanoutio/grip ] || $(NPM) ci --prefix host/tests/grip --no-audit --no-fund
	@[ -d bench/peers/node_modules/ws ] && [ -d bench/peers/node_modules/@cloudflare/workerd-linux-64 ] || \
	  $(NPM) ci --prefix bench/peers --no-audit --no-fund

clean:
	$(CARGO) clean
