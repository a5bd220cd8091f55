# kubeftp-edge: `make demo` runs the whole system on a local lab; `make test` runs every test.
# Both install what they need first (Debian packages, binaries built from the Go module proxy,
# cached under .cache/). Run as root on Debian: the lab uses network namespaces.
SHELL := /bin/bash
GO ?= go
CACHE ?= $(CURDIR)/.cache
export KUBEFTP_CACHE := $(CACHE)
export GOTOOLCHAIN := local

.PHONY: all deps build test test-short demo demo-down fuzz soak clean bench

all: build

deps:
	@tools/install-deps.sh

build:
	$(GO) build -trimpath -o bin/kubeftp-edge ./watcher

# Every test on real parts: role golden files through ansible-playbook + haproxy -c, the
# network-namespace lab over real SSH, the watcher against a real kube-apiserver + etcd.
# -p 1: the lab tests of different packages share the machine's network namespaces.
# test/reliability's TestSoak runs 60 s of churn here; `make soak` runs it for 30 minutes.
test: deps
	$(GO) vet ./...
	$(GO) test -p 1 -count=1 -timeout 40m ./...
	$(MAKE) fuzz FUZZTIME=5s

# Pure unit tests only (no root, no lab, no API server).
test-short:
	$(GO) test -short ./...

# Every fuzz target of the parsers of cluster and user input, FUZZTIME each, from the corpus
# committed under */testdata/fuzz/. New failing inputs land there too: commit them.
FUZZTIME ?= 30s
FUZZ_TARGETS := \
	./watcher/desired:FuzzParsePassivePorts ./watcher/desired:FuzzParseAnnotations \
	./watcher/desired:FuzzCompute ./watcher/desired:FuzzValidators \
	./watcher/apply:FuzzMarshalVars ./watcher/apply:FuzzLoadInventory \
	./watcher/apply:FuzzCheckSSHFiles ./watcher/source:FuzzLoadManifests
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

# The long fault runs against the lab and a real API server: the churn soak with FTP
# transfers running all the time (docs/RELIABILITY.md).
SOAK_DURATION ?= 30m
soak: deps build
	$(GO) test -count=1 -v -timeout 90m -run 'TestSoak' ./test/reliability -soak=$(SOAK_DURATION) \
		-lab-prefix=kfsoak -lab-net=10.238

# The whole system on a local lab, step by step with timings (demo/main.go). It keeps running
# for a look around until Ctrl-C or `make demo-down`; DEMO_HOLD=false tears down right after the
# summary. A second `make demo` stops the first one before it starts.
DEMO_HOLD ?= true
demo: build
	@tools/install-deps.sh demo
	$(GO) build -trimpath -o bin/kubeftp-demo ./demo
	@bin/kubeftp-demo up --watcher bin/kubeftp-edge --hold=$(DEMO_HOLD)

demo-down:
	$(GO) build -trimpath -o bin/kubeftp-demo ./demo
	@bin/kubeftp-demo down

# Benchmarks on the local lab, real API server and HAProxy (root; about 20-30 minutes on 2
# cores): rewrites docs/BENCHMARKS.md. Not part of `make test`; bench/bench_test.go keeps the
# drivers working there.
bench: deps build
	$(GO) build -trimpath -o bin/kubeftp-bench ./bench/cmd/kubeftp-bench
	bin/kubeftp-bench -root $(CURDIR) -watcher bin/kubeftp-edge -out docs/BENCHMARKS.md

clean:
	rm -rf bin
