# kumo — build, run, test, benchmark.
GO      ?= go
BIN     ?= bin/kumo
MNT     ?= $(HOME)/Kumo
FUZZTIME ?= 10s

.PHONY: build run test test-short bench fuzz lint clean deps test-servers

# The servers the tests run for real, installed once into a cache on the
# first `make test` (the tests find them there through these variables).
TESTCACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kumo-test
VERSITYGW_VERSION := v1.8.0
BTCD_VERSION := v0.26.2
export KUMO_VERSITYGW ?= $(TESTCACHE)/bin/versitygw-$(VERSITYGW_VERSION)
export KUMO_BTCD ?= $(TESTCACHE)/btcd-$(BTCD_VERSION)
# make lint's staticcheck, installed there once too (per Go version: it must
# be built with the Go it analyses for).
STATICCHECK_VERSION := v0.8.2
STATICCHECK ?= $(TESTCACHE)/bin/staticcheck-$(STATICCHECK_VERSION)-$(shell $(GO) env GOVERSION)

build:
	$(GO) build -o $(BIN) ./cmd/kumo

# The main job: mount the drive on the embedded cloud (local disk) at $(MNT).
run: build deps
	mkdir -p $(MNT)
	$(BIN) mount $(MNT)
	@echo "kumo is mounted at $(MNT); 'cat $(MNT)/.kumo' for status, '$(BIN) unmount $(MNT)' to stop"

# Install FUSE 3 if it is missing (Debian/Ubuntu, needs root or sudo).
deps:
	@command -v fusermount3 >/dev/null 2>&1 || { \
		echo "installing fuse3"; \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y fuse3; else sudo apt-get install -y fuse3; fi; }

# The full test suite: real FUSE mounts, real S3 server (versitygw), real
# Bitcoin node (btcd). The servers are installed first (once); FUSE tests skip
# without root and /dev/fuse, except with CI=true (.ci/run) where they fail.
test: lint test-servers
	$(GO) test -count=1 -timeout 25m ./...

# Install versitygw and build btcd (the version go.mod pins) into
# $(TESTCACHE), once, and Debian's chromium (the link page's browser tests).
# A failure stops `make test`: the S3, payment and browser tests never skip
# for want of them.
test-servers:
	@if [ ! -x "$(KUMO_VERSITYGW)" ]; then \
		echo "installing versitygw $(VERSITYGW_VERSION) for the S3 tests into $(dir $(KUMO_VERSITYGW)) (once)"; \
		tmp=$$(mktemp -d) && GOBIN=$$tmp $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION) && \
		mkdir -p "$(dir $(KUMO_VERSITYGW))" && mv $$tmp/versitygw "$(KUMO_VERSITYGW)" && rmdir $$tmp || \
		{ echo "could not install versitygw: the S3 tests need it (network access to the Go module proxy)"; exit 1; }; \
	fi
	@if [ ! -x "$(KUMO_BTCD)" ]; then \
		echo "building btcd $(BTCD_VERSION) for the payment tests into $(KUMO_BTCD) (once)"; \
		mkdir -p "$(dir $(KUMO_BTCD))" && $(GO) build -o "$(KUMO_BTCD).tmp" github.com/btcsuite/btcd && mv "$(KUMO_BTCD).tmp" "$(KUMO_BTCD)" || \
		{ echo "could not build btcd: the payment tests need it"; exit 1; }; \
	fi
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium for the link page's browser tests (Debian package, once)"; \
		if [ "$$(id -u)" = 0 ]; then { apt-get update -qq || true; apt-get install -y chromium; }; else { sudo apt-get update -qq || true; sudo apt-get install -y chromium; }; fi || \
		{ echo "could not install chromium: the browser tests need it (apt-get install chromium)"; exit 1; }; }

# Tests that need nothing but Go (no FUSE, no external servers).
test-short:
	$(GO) test -count=1 -short ./...

# Same workloads on the local disk and on kumo (PEERS=1: also gocryptfs and rclone crypt).
bench: build
	$(GO) run ./.ci/bench -kumo $(BIN) $(BENCH_ARGS)

# Every fuzz target, each for $(FUZZTIME).
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for t in $$($(GO) test -list 'Fuzz.*' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "== $$pkg $$t"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@out=$$($(GO) mod tidy -diff 2>&1) || { echo "go.mod/go.sum are not tidy (run go mod tidy):"; echo "$$out"; exit 1; }
	@if [ ! -x "$(STATICCHECK)" ]; then \
		echo "installing staticcheck $(STATICCHECK_VERSION) into $(STATICCHECK) (once)"; \
		tmp=$$(mktemp -d) && GOBIN=$$tmp $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) && \
		mkdir -p "$(dir $(STATICCHECK))" && mv $$tmp/staticcheck "$(STATICCHECK)" && rmdir $$tmp || \
		{ echo "could not install staticcheck: make lint needs it (network access to the Go module proxy)"; exit 1; }; \
	fi
	$(STATICCHECK) ./...

clean:
	rm -rf bin
