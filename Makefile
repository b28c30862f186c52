# baton: build, test, demo.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
# Short fuzz runs inside `make test`; raise for a real fuzzing session.
FUZZTIME ?= 10s

.PHONY: all build demo test unit fuzz bench vet clean

all: build

build: bin/baton bin/hello

bin/baton: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/baton

bin/hello: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./examples/hello

bin/demo: FORCE
	$(GO) build -o $@ ./examples/demo

FORCE:

# Start baton on examples/hello, upgrade it live under load, count failures.
demo: build bin/demo
	./bin/demo -baton ./bin/baton -config examples/hello/baton.toml

# The whole suite: vet, every test with -race (the end-to-end ones drive real
# processes and sockets on loopback; kernel steering needs root), short fuzz runs.
test: vet unit fuzz

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseNotify$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./handoff/
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./supervisor/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRequest$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./control/

# Benchmarks: e.g. upgrades under load in shared mode against kernel-steered mode.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./supervisor/

clean:
	rm -rf bin
