# zerowake: scale-from-zero controller. `make run` shows it working on a local control plane;
# `make test` runs every test, unit and integration. Tools and Kubernetes binaries are built
# from the Go module proxy by hack/tools.sh and cached in $(ZEROWAKE_CACHE).
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export ZEROWAKE_CACHE ?= $(HOME)/.cache/zerowake
# One set of compile settings for everything built here — tests, vet, staticcheck, the images,
# the release's binaries and hack/tools.sh's tools — so that the Go build cache compiles each
# shared package once: with cgo on for tests and off for the images, a cold machine compiled
# client-go and the API types once for each.
export CGO_ENABLED := 0
export GOFLAGS := -trimpath $(GOFLAGS)
GO_TEST_FLAGS ?= -count=1 -timeout 25m

# What the binaries and the images report with --version. Computed once, so a slow build does
# not stamp two values.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
endif
GO_LDFLAGS := -X github.com/zerowake/zerowake/internal/version.version=$(VERSION)
# Build outputs other than bin/: the images, release bundles.
OUTPUT ?= _output
# A registry prefix (e.g. ghcr.io/you) that make image and make release push the images under, as
# PREFIX/zerowake-controller:VERSION and PREFIX/zerowake-gate:VERSION.
IMAGE_PUSH ?=

.PHONY: help
help: ## Show the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the controller and the kubectl plugin into bin/.
	go build -ldflags "$(GO_LDFLAGS)" -o bin/ ./cmd/...

.PHONY: image
image: ## Build the controller and gate images (linux/amd64+arm64, OCI layouts, SBOMs) into $(OUTPUT)/image/NAME and print their digests; IMAGE_PUSH=registry/prefix pushes them.
	cd hack/tools/image && go run . -root "$(CURDIR)" -version "$(VERSION)" -out "$(CURDIR)/$(OUTPUT)/image" $(if $(IMAGE_PUSH),-push "$(IMAGE_PUSH)")

.PHONY: release
release: ## Write a release bundle for VERSION=vX.Y.Z into $(OUTPUT)/release/VERSION (see README).
	VERSION="$(VERSION)" RELEASE_DIR="$(CURDIR)/$(OUTPUT)/release/$(VERSION)" IMAGE_PUSH="$(IMAGE_PUSH)" hack/release.sh bundle

.PHONY: tools
tools: ## Build (or reuse) etcd, kwok, the Kubernetes binaries and helm; fetch the examples' CRDs (NODE=1: the real node's tools too).
	hack/tools.sh all helm crds $(if $(filter 1,$(NODE)),node)

.PHONY: test
test: tools ## Run unit and integration tests (each integration package starts its own local control plane).
	# Three packages at a time (most integration packages wait on windows, leases, idle-after);
	# measured on a clean clone: 8m37s for .ci/run against 8m33s with two, no gain on two cores.
	go test -p 3 $(GO_TEST_FLAGS) $$(go list ./... | grep -v -e /e2e/faults -e /e2e/node)
	cd hack/tools/image && go test $(GO_TEST_FLAGS) ./...

.PHONY: test-faults
test-faults: tools ## Fault tests: controller crash, apiserver restart, failover, fights, churn, least privilege (~5 min).
	go test $(GO_TEST_FLAGS) -v ./e2e/faults/

.PHONY: test-node
test-node: tools ## Real-node tests: the chart's pods from the built images, a real app woken through Caddy and the gate (ZEROWAKE_SKIP_NODE=1 skips).
	go test $(GO_TEST_FLAGS) -v ./e2e/node/

.PHONY: bench
bench: tools ## Benchmarks on the local control plane: table, JSON at BENCH_OUT and a PNG plot (BENCH_QUICK=1: shorter).
	go run ./hack/bench

.PHONY: test-unit
test-unit: ## Run only the tests that need no control plane.
	go test $(GO_TEST_FLAGS) -short ./...

.PHONY: generate
generate: ## Regenerate deepcopy, clientset, listers, informers and the CRD.
	hack/update-codegen.sh

.PHONY: verify
verify: ## Fail if generated code, the CRD, go.mod or formatting is stale.
	hack/verify.sh

.PHONY: lint
lint: ## go vet and staticcheck.
	go vet ./...
	hack/tools.sh lint
	"$$(hack/tools.sh path staticcheck)" $$(go list ./... | grep -v /generated/)

.PHONY: run
run: tools build ## Start a local control plane, the controller and a demo wake (Ctrl-C stops everything); NODE=1: the same on a real node, with a URL to open.
ifeq ($(NODE),1)
	go run ./hack/demonode
else
	go run ./hack/localcluster/cmd/localcluster run -- hack/demo.sh
endif

.PHONY: cluster-up
cluster-up: tools ## Start a local control plane in the background and print its kubeconfig.
	go run ./hack/localcluster/cmd/localcluster up

.PHONY: cluster-down
cluster-down: ## Stop the control plane started by cluster-up.
	go run ./hack/localcluster/cmd/localcluster down
