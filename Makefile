# obsd: see README.md. Every target needs only Go, except generate (clang-19)
# and the BPF tests (root).
GO ?= go
BIN := bin
TEST_TIMEOUT ?= 30m

.PHONY: build generate test demo bench offsets lint clean

build:
	$(GO) build -o $(BIN)/obsd ./cmd/obsd

# Regenerates the committed bpf2go output from bpf/**/*.c with clang-19.
generate:
	$(GO) generate ./bpf/...

test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(GO) test -run='^$$' -fuzz='^FuzzELFHead$$' -fuzztime=10s ./internal/inspect
	$(GO) test -run='^$$' -fuzz='^FuzzELFTail$$' -fuzztime=10s ./internal/inspect
	$(GO) test -run='^$$' -fuzz='^FuzzBuildInfo$$' -fuzztime=10s ./internal/inspect
	$(GO) test -run='^$$' -fuzz='^FuzzLineTable$$' -fuzztime=10s ./internal/inspect
	$(GO) test -run='^$$' -fuzz='^FuzzDWARF$$' -fuzztime=10s ./internal/inspect
	cd manual && $(GO) vet ./... && $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

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

clean:
	rm -rf $(BIN)
