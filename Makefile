# podvnet: see README.md. Targets that touch the network (test, demo, bench)
# need root: they build network namespaces, veths and bpffs mounts.

GO       ?= go
CLANG    ?= clang-19
BIN      := $(CURDIR)/bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildVersion=$(VERSION)
export GOFLAGS ?= -buildvcs=false

# Reference CNI plugins the tests chain with podvnet (loopback, portmap,
# bandwidth) and the benchmarks compare it with (ptp, bridge, host-local),
# built from the Go module proxy at a pinned version into $(BIN)/cni.
CNI_PLUGINS_VERSION := v1.10.0
CNI_PLUGINS := main/loopback main/ptp main/bridge meta/portmap meta/bandwidth ipam/host-local

.PHONY: all build cni-plugins generate check-generated vet test demo clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/podvnet-agent ./cmd/agent
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/podvnet ./cmd/plugin

cni-plugins:
	GOBIN=$(BIN)/cni $(GO) install $(foreach p,$(CNI_PLUGINS),github.com/containernetworking/plugins/plugins/$(p)@$(CNI_PLUGINS_VERSION))

# Rebuild the committed bpf2go objects with the pinned clang.
generate:
	cd pkg/loader && BPF2GO_CC=$(CLANG) $(GO) generate ./...

# CI: the committed objects must be what `make generate` produces.
check-generated: generate
	@git diff --exit-code --stat -- pkg/loader || \
		{ echo "generated BPF objects are stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- pkg/loader)" || \
		{ git status --porcelain -- pkg/loader; echo "untracked generated files: commit them"; exit 1; }

vet:
	$(GO) vet ./...

# Unit, privileged (datapath) and e2e tests. Privileged tests skip without
# root, except under CI=true where they fail.
test: vet build cni-plugins
	PODVNET_BIN_DIR=$(BIN) $(GO) test -count=1 -timeout 20m ./...

# The simulated VNet: two nodes, pods made by the real plugin, traffic over
# the eBPF path, the debug view; everything removed at the end (or Ctrl-C).
demo: build
	$(GO) run ./tests/e2e/demo --bin-dir $(BIN) $(DEMO_FLAGS)

clean:
	rm -rf $(BIN)
