# Wharf: the two commands a new user needs are `make run` and `make test`.
#
#   make run     build the host and the example handlers (release), then serve
#                examples/wharf.toml on http://127.0.0.1:8080
#   make test    install what the tests need, build the guests, check formatting, test
#   make lint    formatting and clippy -D warnings for the host and the guests
#   make build   release host (target/release/wharf) and every example component
#   make bench   the benchmark matrix against the native baseline (BENCHMARKS.md)
#   make bench-cluster  broadcast across hosts sharing one Redis (BENCHMARKS.md)
#   make soak    30 minutes of mixed traffic, embedded store and Redis side by side (BENCHMARKS.md)

CARGO  ?= cargo
NPM    ?= npm
WASM   := target/wasm32-wasip2/release
BROWSER_DIR := host/tests/browser

.PHONY: run build host guests wasm-target test test-deps conformance autobahn bench bench-quick bench-cluster bench-cluster-quick soak soak-quick lint lint-guests fmt clean

run: build
	./target/release/wharf serve --config examples/wharf.toml

build: host guests

host:
	$(CARGO) build --release -p wharf

# Guest components: the examples and the host's test handlers, one workspace.
guests: wasm-target
	cd examples && $(CARGO) build --release

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# The host's clippy (`make lint`) is not part of `make test`: its check build
# would compile Wasmtime a second time, which CI cannot afford.
# Every target but the two binaries' empty test harnesses (`test = false`),
# which `--all-targets` would link anyway; the criterion bench runs once
# in test mode.
test: test-deps guests lint-guests
	$(CARGO) fmt --all --check
	$(CARGO) test --workspace --tests --examples --bench invoke
	cd guest-sdk && $(CARGO) test --doc --target-dir ../target
	$(MAKE) conformance
	$(MAKE) autobahn

# `wharf test` on every example with its scenarios, then a crate made by
# `wharf new` in a temporary directory must build and pass `wharf test`.
EXAMPLES := echo chat broadcast counter
conformance: wasm-target
	$(CARGO) build -p wharf
	for e in $(EXAMPLES); do ./target/debug/wharf test $(WASM)/$$e.wasm examples/$$e/tests/*.toml || exit 1; done
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  (cd "$$tmp" && $(CURDIR)/target/debug/wharf new hello-wharf) && \
	  (cd "$$tmp/hello-wharf" && CARGO_TARGET_DIR=$(CURDIR)/target/scaffold $(CARGO) build --release --target wasm32-wasip2) && \
	  ./target/debug/wharf test target/scaffold/wasm32-wasip2/release/hello_wharf.wasm "$$tmp"/hello-wharf/tests/*.toml

# The Autobahn|Testsuite fuzzing client (cases 1-7, 9, 10) against the echo
# example; every case's result must match conformance/autobahn/expected.json.
autobahn: guests
	$(CARGO) build -p wharf
	conformance/autobahn/run.sh

# The benchmark matrix against the native baseline (minutes): servers on
# core 0, the load generator on core 1 when there are two cores. Writes the
# generated section of BENCHMARKS.md and bench/chart.svg.
PIN_LOAD := $(shell [ "$$(nproc)" -ge 2 ] && echo "taskset -c 1")
PIN_SERVER := $(shell [ "$$(nproc)" -ge 2 ] && echo "--server-core 0")
bench: build
	$(CARGO) build --release -p wharf-bench
	$(CARGO) bench -p wharf --bench invoke
	$(PIN_LOAD) target/release/wharf-bench matrix $(PIN_SERVER)

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
# redis-server (Debian) for the store suite and the multi-host tests.
test-deps:
	@missing=""; command -v chromium >/dev/null || missing="chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "the tests need Debian packages: sudo apt-get install $$missing" >&2; exit 1; fi; fi
	@[ -d $(BROWSER_DIR)/node_modules/playwright-core ] || $(NPM) ci --prefix $(BROWSER_DIR) --no-audit --no-fund

clean:
	$(CARGO) clean
