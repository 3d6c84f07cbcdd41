# rekey — live key rotation for S3 FUSE mounts in Kubernetes.
# Every target is documented with "##"; `make help` lists them.

SHELL        := /bin/bash
GO           ?= go
BIN          := bin
TOOLS_BIN    := $(CURDIR)/tools/bin
CACHE        := $(CURDIR)/tools/cache
GOLANGCI_VERSION := v2.15.0
GOLANGCI     := $(TOOLS_BIN)/golangci-lint-$(GOLANGCI_VERSION)
BINARIES     := rekey-fuse rekey-demo rekey-sidecar rekey-webhook rekey-csi kubectl-rekey rekey-controller
TEST_FLAGS   ?= -race -count=1 -timeout 20m
VERSION      := $(shell cat VERSION)

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build static binaries into bin/.
	@mkdir -p $(BIN)
	@for b in $(BINARIES); do \
	  CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w -X main.version=$(VERSION)' -o $(BIN)/$$b ./cmd/$$b || exit 1; \
	done
	@echo "built: $(addprefix $(BIN)/,$(BINARIES))"

.PHONY: test
test: test-prereqs ## Run every test (real FUSE mounts and S3 servers; needs root and /dev/fuse).
	$(GO) vet ./...
	KUBEBUILDER_ASSETS="$$(tests/cluster/build.sh)" REKEY_MINIO_BIN="$$(tests/s3servers/build-minio.sh)" \
	  REKEY_HELM_BIN="$$(hack/install-tools.sh helm)" REKEY_KUSTOMIZE_BIN="$$(hack/install-tools.sh kustomize)" \
	  $(GO) test $(TEST_FLAGS) ./...
	cd third_party/go-fuse && $(GO) test $(TEST_FLAGS) ./fuse/ ./fs/

.PHONY: test-integration
test-integration: test-prereqs ## FUSE functional and key-rotation tests against real MinIO and versitygw, then s3fs-fuse's own suite on rekey and s3fs side by side (builds them; fails rather than skips under CI=true).
	REKEY_MINIO_BIN="$$(tests/s3servers/build-minio.sh | tail -1)" REKEY_MC_BIN="$$(tests/s3servers/build-mc.sh | tail -1)" \
	  REKEY_VERSITYGW_BIN="$$(tests/s3servers/build-versitygw.sh | tail -1)" \
	  $(GO) test $(TEST_FLAGS) -tags integration ./tests/integration/...
	$(MAKE) --no-print-directory test-s3fs-suite

.PHONY: test-s3fs-suite
test-s3fs-suite: test-prereqs ## Run s3fs-fuse's integration suite (tests/s3fs-suite) on rekey and on s3fs 1.90 (apt-get install s3fs) against one MinIO and print both results (S3FS_SUITE_TABLE=FILE also writes the table there), and the cross-tool tests (s3fs writes, rekey reads and back, on MinIO and versitygw).
	REKEY_MINIO_BIN="$$(tests/s3servers/build-minio.sh | tail -1)" REKEY_VERSITYGW_BIN="$$(tests/s3servers/build-versitygw.sh | tail -1)" \
	  REKEY_S3FS_SUITE_DIR="$$(tests/s3fs-suite/build.sh | tail -1)" REKEY_S3FS_SUITE_TABLE="$(S3FS_SUITE_TABLE)" \
	  $(GO) test -count=1 -timeout 40m -v -tags integration ./tests/s3fssuite/

.PHONY: k8s
k8s: ## Build kube-apiserver, etcd and kube-controller-manager v1.34.4 for the envtest suites (cached in tools/cache/).
	tests/cluster/build.sh

.PHONY: cert-manager
cert-manager: ## Build cert-manager's controller and cainjector (version in tests/cluster/cert-manager/go.mod) for the e2e step, cached in tools/cache/.
	tests/cluster/build-cert-manager.sh

.PHONY: minio
minio: ## Build the MinIO server used by the STS tests (separate AGPL binary, cached in tools/cache/).
	tests/s3servers/build-minio.sh

.PHONY: test-prereqs
test-prereqs: ## Check what the tests need on this machine.
	@test -c /dev/fuse || { echo "test: /dev/fuse is missing"; exit 1; }
	@test "$$(id -u)" = 0 || { echo "test: FUSE mount tests need root"; exit 1; }

.PHONY: demo
demo: build ## Mount a bucket of an embedded S3 server, rotate keys 10 times under load, print a summary.
	$(BIN)/rekey-demo --fuse-binary $(BIN)/rekey-fuse --sidecar-binary $(BIN)/rekey-sidecar --csi-binary $(BIN)/rekey-csi

.PHONY: bench
bench: build ## Time rekey-fuse against s3fs, rclone, the raw SDK (and geesefs once tests/s3servers/build-geesefs.sh built it) on MinIO and versitygw; medians and ratios (root; QUICK=1 for small sizes).
	GEESEFS_BIN="$${GEESEFS_BIN:-$$(ls tools/cache/geesefs-*/geesefs 2>/dev/null | tail -1)}" $(GO) run ./tests/bench

.PHONY: bench-go
bench-go: ## Run the Go benchmarks (swap latency, sidecar rotation, NodePublishVolume, admission) and print their results.
	KUBEBUILDER_ASSETS="$$(tests/cluster/build.sh)" $(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: bench-memory
bench-memory: ## Measure the memory of a real rekey-fuse per mount, idle and under 256 MiB of sequential write and read, without and with the per-server budget (root; docs/install.md, "Memory").
	$(GO) test -run '^$$' -bench BenchmarkServerMemory -benchtime 1x -count $${COUNT:-3} -timeout 30m ./csidriver/supervisor/

.PHONY: bench-compat
bench-compat: build ## Run the POSIX behaviour cases on rekey, s3fs and rclone mounts and print the table.
	$(GO) run ./tests/bench -compat

.PHONY: versitygw
versitygw: ## Build versitygw (Apache-2.0) at a pinned version into tools/cache/.
	tests/s3servers/build-versitygw.sh


.PHONY: images
images: build ## Build the rekey-csi, rekey-webhook and rekey-sidecar images as tarballs in bin/images/ without Docker (build/Dockerfile for Docker users).
	$(GO) run ./hack/images -version $(VERSION) -bin $(BIN) -out $(BIN)/images

.PHONY: e2e
e2e: test-prereqs ## Bring up a real single-node cluster on loopback, install rekey from manifests/, run the end-to-end scenario, tear down (root; docs/e2e.md).
	$(GO) run ./tests/e2e

.PHONY: generate
generate: ## Regenerate the gRPC code from proto/ (pinned generators).
	./hack/generate.sh

.PHONY: verify-generate
verify-generate: ## Fail if the committed generated code is not what `make generate` writes.
	./hack/verify-generate.sh

.PHONY: lint
lint: $(GOLANGCI) ## Run golangci-lint (installed at a pinned version under tools/bin).
	$(GOLANGCI) run ./...

$(GOLANGCI):
	@mkdir -p $(TOOLS_BIN)
	GOBIN=$(TOOLS_BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	@mv $(TOOLS_BIN)/golangci-lint $(GOLANGCI)

.PHONY: clean
clean: ## Remove build output (keeps the tools cache).
	rm -rf $(BIN)
