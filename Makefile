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

# Both modules, always: a failure in the first does not hide the second.
# Each suite's verdict is printed last; the exit status is non-zero if
# either failed. RACE= turns the race detector off.
RACE ?= -race
test:
	@root=PASS; manual=PASS; \
	echo "== root module: go vet, go test $(RACE)"; \
	{ $(GO) vet ./... && $(GO) test $(RACE) -count=1 -timeout $(TEST_TIMEOUT) ./...; } || root=FAIL; \
	echo "== manual/: go vet, go test $(RACE)"; \
	{ cd manual && $(GO) vet ./... && $(GO) test $(RACE) -count=1 -timeout $(TEST_TIMEOUT) ./...; } || manual=FAIL; \
	echo "== make test: root module $$root, manual/ $$manual"; \
	[ $$root = PASS ] && [ $$manual = PASS ]

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
