# obsd: see README.md. Every target needs only Go, except generate (clang-19)
# and the BPF tests (root).
GO ?= go
BIN := bin
TEST_TIMEOUT ?= 30m

.PHONY: build generate test demo bench offsets image lint clean

build:
	$(GO) build -o $(BIN)/obsd ./cmd/obsd

# Regenerates the committed bpf2go output from bpf/**/*.c with clang-19.
generate:
	$(GO) generate ./bpf/...

# Every suite of both modules, each even when an earlier one failed; the last
# lines give each verdict, and the exit status is non-zero if any failed.
# The race detector is on for the unit tests; the end-to-end suites (whose
# targets are separate processes) and the benchmark tool's timing tests run
# without it (scripts/test.sh says why); RACE= turns it off everywhere. The
# last lines give each suite's duration too.
RACE ?= -race
test:
	GO='$(GO)' RACE='$(RACE)' TEST_TIMEOUT='$(TEST_TIMEOUT)' ./scripts/test.sh

# Builds obsd and testdata/httpserver, instruments the server, drives
# traffic, and shows the metrics and spans. Needs root.
demo: build
	$(GO) build -o $(BIN)/httpserver ./testdata/httpserver
	./scripts/demo.sh $(BIN)

# Plain vs two empty probes (the trap floor) vs obsd. Needs root and wrk.
bench: build
	$(GO) run ./internal/tools/bench

# Regenerates internal/offsets/offsets.json from every supported toolchain.
offsets:
	$(GO) run ./internal/tools/offsetgen -out internal/offsets/offsets.json

# The container image (Dockerfile) as bin/obsd-image.tar, an OCI archive, and
# tagged obsd:dev in buildah's (or docker's) store. Needs buildah (root).
image:
	GO='$(GO)' ./scripts/image.sh obsd:dev $(BIN)/obsd-image.tar

clean:
	rm -rf $(BIN)
