# rvoip-events: `make run` starts the broker, `make test` runs every test. Both install what is missing.
BUILD      ?= build
JOBS       ?= $(shell nproc)
SOCKET     ?=
CMAKE_ARGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

# Debian packages the build and tests need (`make deps` installs the missing ones); `make bench` adds the
# peers it measures us against and gnuplot for its plots.
DEPS := cmake g++ make pkg-config libboost-dev libspdlog-dev libcli11-dev libmimalloc-dev libtoml11-dev doctest-dev python3 spin systemd libsystemd-dev nlohmann-json3-dev prometheus-cpp-dev tmux liburing-dev
BENCH_DEPS := gnuplot-nox libzmq3-dev iceoryx libiceoryx-posh-dev
# `make package` builds the .deb with CPack; dpkg-shlibdeps (dpkg-dev) works out its Depends:.
PACKAGE_DEPS := dpkg-dev
# The fuzz targets (tests/fuzz) need clang with libFuzzer: clang 19, the first in Debian 12 whose C++20
# concepts level lets libstdc++ 12 define std::expected.
FUZZ_DEPS := clang-19 libclang-rt-19-dev
FUZZ_CC := clang-19
FUZZ_CXX := clang++-19
FUZZ_SECONDS ?= 300
FUZZ_TARGETS := fuzz_decode fuzz_records fuzz_broker
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps bench-deps fuzz-deps install-packages build run test test-sanitizers build-fuzz test-fuzz fuzz bench bench-quick install package clean

all: build

deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEPS)"

bench-deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEPS) $(BENCH_DEPS)"

fuzz-deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEPS) $(FUZZ_DEPS)"

install-packages:
	@missing=$$(for p in $(PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_ARGS) >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

run: build
	@sock="$(SOCKET)"; [ -n "$$sock" ] || sock="$${RVOIP_EVENTS_SOCKET:-$$( [ "$$(id -u)" = 0 ] && echo /run/rvoip-events/broker.sock || echo $${XDG_RUNTIME_DIR:-/tmp/rvoip-events-$$(id -u)}/rvoip-events/broker.sock )}"; \
	echo ""; \
	echo "rvoip-eventd on $$sock (Ctrl-C stops it). In another terminal try:"; \
	echo "  $(BUILD)/bin/rvoip-demo --socket $$sock sub"; \
	echo "  $(BUILD)/bin/rvoip-demo --socket $$sock pub --count 5"; \
	echo "  $(BUILD)/bin/rvoip-bench throughput --socket $$sock --size 64 --seconds 3"; \
	echo "  $(BUILD)/bin/rvoip-eventctl --socket $$sock top      # topics, rates, lag; also status, topics, clients"; \
	echo ""; \
	exec $(BUILD)/bin/rvoip-eventd --foreground --socket "$$sock"

# Every test: unit, multi-process, model, crash soak, bench smoke; then the whole suite again under
# ASan+UBSan, and the ring, recovery and client tests under TSan; then each fuzz target for 30 s.
test: build
	cd $(BUILD) && ctest --output-on-failure --timeout 900
	$(MAKE) --no-print-directory test-sanitizers
	$(MAKE) --no-print-directory test-fuzz

TSAN_TESTS := test_lane test_reader test_recovery test_api test_waitset_api test_bus_api test_trust test_reload test_group
test-sanitizers: deps
	cmake -S . -B $(BUILD)-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRVOIP_SANITIZE=thread >/dev/null
	cmake --build $(BUILD)-tsan -j$(JOBS) --target $(TSAN_TESTS)
	cd $(BUILD)-tsan && ctest --output-on-failure -R '^($(subst $(eval) ,|,$(TSAN_TESTS)))$$'
	cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRVOIP_SANITIZE=address >/dev/null
	cmake --build $(BUILD)-asan -j$(JOBS)
	cd $(BUILD)-asan && ctest --output-on-failure --timeout 900 -LE '^model$$' -E '^bench_soak$$'

# The fuzz targets only (tests/fuzz/README.md), in their own tree: clang, libFuzzer, ASan, UBSan.
FUZZ_RUN_SECONDS ?= 30
build-fuzz: fuzz-deps
	CC=$(FUZZ_CC) CXX=$(FUZZ_CXX) cmake -S . -B $(BUILD)-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRVOIP_FUZZ=ON \
	  -DRVOIP_FUZZ_SECONDS=$(FUZZ_RUN_SECONDS) >/dev/null
	cmake --build $(BUILD)-fuzz -j$(JOBS) --target $(FUZZ_TARGETS)

# Each target for 30 s from its seeds (ctest label fuzz); a crash, leak, UB or hang fails the run.
test-fuzz: build-fuzz
	cd $(BUILD)-fuzz && ctest --output-on-failure -L '^fuzz$$' -j$(JOBS)

# Each target for FUZZ_SECONDS (default 300), one after the other; what they find stays in
# $(BUILD)-fuzz/tests/fuzz/corpus/<target> (new inputs) and .../artifacts (crashes).
fuzz:
	@$(MAKE) --no-print-directory build-fuzz FUZZ_RUN_SECONDS=$(FUZZ_SECONDS)
	cd $(BUILD)-fuzz && ctest --output-on-failure -L '^fuzz$$' --timeout $$(( $(FUZZ_SECONDS) + 300 ))

# The full suite against the peers: terminal tables, bench/results/<date>.json, PNG plots, README section
# (about 15-20 minutes on 2 cores; it shows each case, the time elapsed and an estimate of the time left).
# BENCH_ARGS passes options to bench/suite.py: --quick, --runs N, --no-peers, --no-readme, --verbose.
BENCH_ARGS ?=
bench: bench-deps
	cmake -S . -B $(BUILD) $(CMAKE_ARGS) >/dev/null
	cmake --build $(BUILD) -j$(JOBS)
	python3 bench/suite.py --bindir $(BUILD)/bin $(BENCH_ARGS)

# A first look in about a minute: every system, 64 B and 1 KiB, one short run per case (bench/README.md).
bench-quick:
	@$(MAKE) --no-print-directory bench BENCH_ARGS="--quick $(BENCH_ARGS)"

# Into CMAKE_INSTALL_PREFIX (/usr/local unless CMAKE_ARGS says otherwise); README.md, "Installing".
install: build
	cmake --install $(BUILD)

# The .deb, from a tree of its own configured for /usr (the unit's ExecStart=, the multiarch libdir) and
# without the tests: $(BUILD)-deb/rvoip-events_<version>_<arch>.deb.
package:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEPS) $(PACKAGE_DEPS)"
	cmake -S . -B $(BUILD)-deb -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr -DBUILD_TESTING=OFF >/dev/null
	cmake --build $(BUILD)-deb -j$(JOBS)
	cd $(BUILD)-deb && cpack -G DEB

clean:
	rm -rf $(BUILD) $(BUILD)-tsan $(BUILD)-asan $(BUILD)-fuzz $(BUILD)-deb
