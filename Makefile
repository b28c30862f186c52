# baton: build, test, demo.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
# Short fuzz runs inside `make test`, as a count of executions: a duration
# (-fuzztime 10s) trips a race in Go 1.26's fuzz coordinator that fails the run
# with "context deadline exceeded" and no crasher (golang/go#75804, fixed in
# Go 1.27). Raise it for a real fuzzing session.
FUZZTIME ?= 150000x

.PHONY: all build demo test unit fuzz bench bench-quick bench-go vet clean

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

bin/batonbench: FORCE
	$(GO) build -o $@ ./bench

# The fault suite's service (tests/faults/faultapp): it serves every socket
# passed to it, as the scale benchmark needs (hello serves one).
bin/faultapp: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./tests/faults/faultapp

# examples/hello upgrading itself with tableflip, for the bench's comparison.
bin/flipper: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./examples/flipper

# Benchmarks (bench/): upgrades under load for baton kernel-steered, baton
# shared, tableflip (examples/flipper) and a plain stop-then-start, side by
# side, with the latency of requests during upgrades against steady state and
# baton's upgrade timeline from its JSON log; the data-path overhead (hello
# under baton against hello alone, 10 alternating rounds of 3 s a side) and
# baton's footprint (RSS, CPU over 60 s idle, binary size); prints tables and
# writes BENCHMARKS.md and bench-latency.svg (latency over a few upgrades per
# mode); baton at scale (one generation of 64 instances x 16 listeners: time
# to ready, a blue-green and a rolling upgrade, baton's fds and RSS) and over
# 1,000 upgrades back to back (fds and goroutines at the end exactly as at
# the start, RSS within 2 MiB). Then the Go benchmark of the supervisor
# (`make bench-go`).
# `make bench-quick` runs 5 upgrades per mode, 2 overhead rounds of 3 s a
# side, 10 s idle, 16 instances x 4 listeners and 100 upgrades back to back,
# and only prints (under two minutes), so that BENCHMARKS.md and the picture
# keep the figures of a full run.
BENCH_UPGRADES ?= 20
BENCH_OUT      ?= BENCHMARKS.md
BENCH_BINS     := -baton bin/baton -hello bin/hello -flipper bin/flipper -app bin/faultapp

bench: build bin/flipper bin/faultapp bin/batonbench
	./bin/batonbench $(BENCH_BINS) -upgrades $(BENCH_UPGRADES) -out '$(BENCH_OUT)'
	$(MAKE) bench-go

bench-quick: build bin/flipper bin/faultapp bin/batonbench
	./bin/batonbench $(BENCH_BINS) -upgrades 5 -interval 500ms -settle 500ms -overhead-rounds 2 -overhead-time 3s -idle 10s \
		-scale-instances 16 -scale-listeners 4 -soak-upgrades 100 -out ''

# Upgrades under load in shared mode against kernel-steered mode, as a Go benchmark.
bench-go:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./supervisor/

clean:
	rm -rf bin dist

# Release artifacts (packaging/). `make dist` writes a static binary per
# platform, dist/baton_VERSION_linux_{amd64,arm64,armv7}/baton, and
# dist/SHA256SUMS; `make package` adds a .deb and an .rpm per PKG_ARCHS,
# built by nfpm (pinned here, run as a Go tool: go.mod is untouched).
DIST           ?= dist
# name:GOARCH:GOARM of each binary `make dist` builds.
DIST_PLATFORMS ?= amd64:amd64: arm64:arm64: armv7:arm:7
# Which of them get packages (nfpm calls armv7 "arm7": armhf, armv7hl).
PKG_ARCHS      ?= amd64 arm64 armv7
PKG_FORMATS    ?= deb rpm
PKG_VERSION    := $(shell sh packaging/pkgversion.sh '$(VERSION)')
PKG_MAINTAINER ?= baton developers <baton@users.noreply.github.com>
NFPM           ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
# File dates inside packages and the man page: the last commit's, so that
# a rebuild of the same commit gives the same packages.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)

.PHONY: dist package test-package

dist: FORCE
	rm -rf $(DIST)/baton_*_linux_* $(DIST)/SHA256SUMS
	set -e; for p in $(DIST_PLATFORMS); do \
		name=$${p%%:*}; rest=$${p#*:}; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$${rest%%:*} GOARM=$${rest#*:} \
			$(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o $(DIST)/baton_$(VERSION)_linux_$$name/baton ./cmd/baton; \
	done
	cd $(DIST) && sha256sum baton_$(VERSION)_linux_*/baton > SHA256SUMS

package: dist
	rm -f $(addprefix $(DIST)/*.,$(PKG_FORMATS))
	sed -e 's/@VERSION@/$(PKG_VERSION)/' \
		-e "s/@DATE@/$$(date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%d)/" \
		packaging/baton.1 | gzip -9n > $(DIST)/baton.1.gz
	set -e; for a in $(PKG_ARCHS); do \
		for f in $(PKG_FORMATS); do \
			BATON_ARCH=$$(echo $$a | sed 's/^armv7$$/arm7/') \
			BATON_VERSION='$(PKG_VERSION)' \
			BATON_BIN=$(DIST)/baton_$(VERSION)_linux_$$a/baton \
			BATON_MAN=$(DIST)/baton.1.gz \
			BATON_MAINTAINER='$(PKG_MAINTAINER)' \
			SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
			$(NFPM) package -f packaging/nfpm.yaml -p $$f -t $(DIST)/; \
		done; \
	done
	cd $(DIST) && sha256sum baton_$(VERSION)_linux_*/baton $(addprefix *.,$(PKG_FORMATS)) > SHA256SUMS

# The slow packaging test: `make package` into a temp dir, then check every
# binary and package; with BATON_TEST_DPKG=1 (root, Debian) also install the
# .deb with dpkg -i, run it and purge it. `make test` runs the fast ones
# (unit files, man page, sample config) as part of `unit`.
test-package:
	BATON_TEST_PACKAGE=1 $(GO) test -count=1 -timeout 15m -v -run 'Package' ./packaging/
