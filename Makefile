# gearbox — see README.md. Targets that run containers need root.
GO      ?= go
PKG     := github.com/gearboxd/gearbox
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null)
LDFLAGS := -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.GitCommit=$(COMMIT)
export PATH := $(PATH):/usr/local/go/bin

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/gearbox and bin/gearbox-logger
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/gearbox ./cmd/gearbox
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/gearbox-logger ./cmd/gearbox-logger

PREFIX     ?= /usr/local
SYSTEMDDIR ?= /etc/systemd/system
CONFDIR    ?= /etc/gearbox

.PHONY: install
install: build ## install the binaries, the systemd unit and a default config (kept if present)
	install -D -m 0755 bin/gearbox $(DESTDIR)$(PREFIX)/bin/gearbox
	install -D -m 0755 bin/gearbox-logger $(DESTDIR)$(PREFIX)/bin/gearbox-logger
	install -D -m 0644 contrib/systemd/gearbox-agent.service $(DESTDIR)$(SYSTEMDDIR)/gearbox-agent.service
	sed -i 's|/usr/local/bin/gearbox|$(PREFIX)/bin/gearbox|; s|/etc/gearbox/agent.toml|$(CONFDIR)/agent.toml|' $(DESTDIR)$(SYSTEMDDIR)/gearbox-agent.service
	@if [ -e $(DESTDIR)$(CONFDIR)/agent.toml ]; then echo "keeping $(DESTDIR)$(CONFDIR)/agent.toml"; \
	else install -D -m 0644 contrib/agent.toml $(DESTDIR)$(CONFDIR)/agent.toml; fi
	@echo "installed; then: systemctl daemon-reload && systemctl enable --now gearbox-agent"

.PHONY: deps
deps: ## install what gearbox needs to run (Debian: containerd, runc, busybox-static)
	hack/install-deps.sh dev

.PHONY: dev
dev: deps build ## install what is missing, then run a single-node gearbox with a demo task
	bin/gearbox dev

.PHONY: test
test: proto-check lint ## unit and integration tests (as root: they run real containers)
	$(GO) test -race -count=1 -timeout 25m ./...

# The packages whose tests need no root, no containerd and no network:
# everything but integration/.
UNIT_PKGS = $(shell $(GO) list ./... | grep -v '/integration$$')

.PHONY: unit
unit: ## the tests that need no root (every package but integration/), in about a minute
	$(GO) test -race -short -count=1 -timeout 5m $(UNIT_PKGS)

.PHONY: ci-fresh
ci-fresh: ## run .ci/run in a fresh minimal Debian 12 root (as root): proves it installs everything
	hack/ci-fresh.sh

.PHONY: bench
bench: build ## benchmarks against the direct containerd client (as root)
	$(GO) test -tags bench -run '^TestBench' -count=1 -timeout 30m -v ./integration/
	$(GO) test -tags bench -run '^TestBench' -count=1 -timeout 10m -v ./master/allocator/...

.PHONY: proto
proto: ## regenerate the Go code of the .proto files (buf, pinned in go.mod)
	hack/proto.sh

.PHONY: proto-check
proto-check: ## fail when the generated code is stale, buf lint objects or an API change breaks the wire
	hack/proto.sh --check

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt'ed:" $$out >&2; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags bench ./integration/ ./master/allocator/...
