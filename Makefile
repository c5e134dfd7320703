# kumo — build, run, test, benchmark.
GO      ?= go
BIN     ?= bin/kumo
MNT     ?= $(HOME)/Kumo
FUZZTIME ?= 10s

.PHONY: build run test test-short bench fuzz lint clean deps

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

# The full test suite: real FUSE mounts, real S3 server, real Bitcoin node when present.
# With CI=true nothing that needs them may skip (.ci/run installs them).
test: lint
	$(GO) test -count=1 -timeout 25m ./...

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

clean:
	rm -rf bin
