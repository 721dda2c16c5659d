# Paddock: build, test tiers, benchmarks and the demo. `make test` and `make demo` work from a fresh
# clone: everything they need comes from the Go module proxy and Debian apt, cached in $(CACHE).
SHELL := /bin/bash
GO ?= go
CACHE ?= $(or $(PADDOCK_CACHE),$(HOME)/.cache/paddock)
export PADDOCK_CACHE := $(CACHE)
OUT ?= _output
export OUT
GUEST := $(OUT)/guest
# The release, from VERSION: the one source of paddock --version, the image tag in deploy/kubernetes and the
# chart's appVersion (deploy/deploy_test.go keeps them equal).
VERSION := $(shell cat VERSION)
LDFLAGS := -s -w -X main.version=$(VERSION)
CSI_TEST_VERSION := v5.6.0
CSI_SANITY := $(CACHE)/tools/csi-test-$(CSI_TEST_VERSION)/csi-sanity
# csi-resizer at the release deploy/components/resizer pins, which the cluster tier runs for real
# (test/e2e/kubeenv/sidecars.go builds it the same way, under the same lock, if it is missing).
CSI_RESIZER_VERSION := $(shell sed -n 's|^ *image: registry.k8s.io/sig-storage/csi-resizer:\(v[0-9.]*\)$$|\1|p' deploy/components/resizer/controller.yaml)
CSI_RESIZER := $(CACHE)/tools/external-resizer-$(CSI_RESIZER_VERSION)/csi-resizer
VMRUN := $(GO) run ./test/vm/cmd/vmrun

.PHONY: all build lint test-unit test-sanity test-e2e-node test-e2e-cluster test-e2e-kubelet test-cross cross-warm test test-summary-reset bench demo guest-binaries clean fuzz stress

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/paddock ./cmd/paddock

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/e2e/...
	@echo "lint: ok"

test-unit:
	hack/tier.sh unit go -- bash -c 'rc=0; $(GO) test -race -count=1 -v ./... || rc=1; $(GO) -C deploy/helm/test test -race -count=1 -v ./... || rc=1; exit $$rc'

# Short fuzz runs of every fuzzer in every package, FUZZTIME each (the long runs: docs/testing.md).
fuzz:
	@set -e; for pkg in $$($(GO) list ./pkg/... ./cmd/...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run=NONE -fuzz="^$$f\$$" -fuzztime=$(or $(FUZZTIME),20s) $$pkg; \
	  done; \
	done

# The randomized, model-checked concurrency test of the export workspace (pkg/share/model_test.go) for
# much longer than in test-unit: STRESS_OPS logical operations (default 200000, some ten minutes under
# -race on two cores), from STRESS_SEED (default: the clock; every failure prints its round's seed).
stress:
	$(GO) test -race -count=1 -timeout 3h -run '^TestModelConcurrentVolumes$$' ./pkg/share \
	  -model.ops=$(or $(STRESS_OPS),200000) $(if $(STRESS_SEED),-model.seed=$(STRESS_SEED))

$(CSI_SANITY):
	mkdir -p $(dir $@)
	CGO_ENABLED=0 GOBIN=$(abspath $(dir $@)) $(GO) install github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$(CSI_TEST_VERSION)

# Static binaries for the guest (it has no libc of ours), shared with it over 9p.
guest-binaries: $(CSI_SANITY)
	mkdir -p $(GUEST)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(GUEST)/paddock ./cmd/paddock
	cp $(CSI_SANITY) $(GUEST)/csi-sanity
	cp test/sanity/*.sh $(GUEST)/
	CGO_ENABLED=0 $(GO) test -c -tags e2e -o $(GUEST)/e2e-node.test ./test/e2e/node

test-sanity: guest-binaries
	hack/tier.sh sanity ginkgo -- $(VMRUN) -share $(GUEST) -timeout 30m -- /host/sanity.sh

test-e2e-node: guest-binaries
	hack/tier.sh e2e-node go -- $(VMRUN) -share $(GUEST) -mem 2048 -timeout 30m -- /host/e2e-node.test -test.v -test.timeout=25m -paddock=/host/paddock

# The Dockerfile's go build for each architecture the image is published for (amd64, arm64), run
# by build/image's test; cross-warm compiles the arm64 side beforehand (make test does it in the
# background) so that the tier only links.
test-cross:
	hack/tier.sh cross go -- env PADDOCK_CROSS=all $(GO) test -count=1 -v -run '^TestDockerfileCrossCompiles$$' ./build/image

cross-warm:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o /dev/null ./cmd/paddock

$(CSI_RESIZER):
	mkdir -p $(dir $@)
	flock $(CACHE)/tools/external-resizer.lock sh -c 'test -x $@ || GOWORK=off GOFLAGS= CGO_ENABLED=0 GOBIN=$(abspath $(dir $@)) $(GO) install -trimpath -ldflags "-s -w -X main.version=$(CSI_RESIZER_VERSION)" github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer@$(CSI_RESIZER_VERSION)'

test-e2e-cluster: guest-binaries $(CSI_RESIZER)
	hack/tier.sh e2e-cluster go -- $(GO) test -tags e2e -count=1 -v -timeout 40m ./test/e2e/cluster -guest-dir=$(abspath $(GUEST))

# The guest as a real node (containerd, runc, CNI, kubelet) running the shipped manifests and image
# as pods (test/e2e/kubelet); the node runtime is built by test/node/build.sh, kubelet with the
# control plane.
test-e2e-kubelet: guest-binaries images
	hack/tier.sh e2e-kubelet go -- $(GO) test -tags e2e -count=1 -v -timeout 45m ./test/e2e/kubelet -guest-dir=$(abspath $(GUEST)) -images-dir=$(abspath $(OUT)/images)

test-summary-reset:
	@mkdir -p $(OUT); rm -f $(OUT)/summary.txt

# Every tier, in order; the summary with each tier's counts is printed even when a tier fails.
# The guest tiers keep one host core busy (the emulated CPU) and leave the other mostly idle: from
# test-sanity on, the control plane, kubelet and the node runtime are built there in the background,
# at nice 19 so the guest does not wait for them; the later tiers' own build steps find them built
# (or wait on the builds' locks). On a warm cache this only checks that they are there.
test: test-summary-reset
	@rc=0; \
	for t in lint test-unit test-sanity test-e2e-node test-e2e-cluster test-e2e-kubelet test-cross; do \
	  if [ $$t = test-sanity ]; then \
	    echo "==== building the control plane, kubelet, csi-resizer, the node runtime and the arm64 paddock in the background ($(OUT)/prebuild.log) ===="; \
	    ( nice -n 19 test/cluster/build.sh && nice -n 19 $(MAKE) --no-print-directory $(CSI_RESIZER) && nice -n 19 test/node/build.sh && nice -n 19 $(MAKE) --no-print-directory cross-warm ) >$(OUT)/prebuild.log 2>&1 & \
	  fi; \
	  echo "==== make $$t ===="; \
	  if ! $(MAKE) --no-print-directory $$t; then rc=1; [ $$t = lint ] && break; fi; \
	done; \
	wait; \
	hack/summary.sh; exit $$rc

bench: guest-binaries
	$(GO) run ./test/bench/cmd/benchrun -guest-dir=$(abspath $(GUEST)) -out docs/performance.md

demo: guest-binaries images
	$(GO) run ./test/e2e/demo -guest-dir=$(abspath $(GUEST)) -images-dir=$(abspath $(OUT)/images) $(DEMO_FLAGS)

# Container image archives built without a registry or container engine (hack/image.sh), in
# $(OUT)/images/: Paddock's image (registry.paddock.test/paddock:e2e, from build/image/packages
# as the Dockerfile), and with `images` the pause and busybox test images, for
# `ctr -n k8s.io images import`.
.PHONY: image-archive images
image-archive:
	GO='$(GO)' VERSION='$(VERSION)' LDFLAGS='$(LDFLAGS)' hack/image.sh paddock

images:
	GO='$(GO)' VERSION='$(VERSION)' LDFLAGS='$(LDFLAGS)' hack/image.sh paddock pause busybox

# The quota agent's gRPC API: regenerates the committed Go code in pkg/quota/api from quota.proto
# (make test does not need it). protoc is Debian's (apt-get install -y protobuf-compiler); the Go
# plugins are installed in $(CACHE)/tools, protoc-gen-go at google.golang.org/protobuf's version in
# go.mod (the generated code must match the runtime), protoc-gen-go-grpc at one that pairs with grpc's.
PROTOC_GEN_GO_VERSION := $(shell sed -n 's|^\tgoogle.golang.org/protobuf \(v[^ ]*\)$$|\1|p' go.mod)
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
PROTOC_GEN_GO := $(CACHE)/tools/protoc-gen-go-$(PROTOC_GEN_GO_VERSION)/protoc-gen-go
PROTOC_GEN_GO_GRPC := $(CACHE)/tools/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION)/protoc-gen-go-grpc

$(PROTOC_GEN_GO):
	mkdir -p $(dir $@)
	CGO_ENABLED=0 GOBIN=$(abspath $(dir $@)) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(PROTOC_GEN_GO_GRPC):
	mkdir -p $(dir $@)
	CGO_ENABLED=0 GOBIN=$(abspath $(dir $@)) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

.PHONY: proto
proto: $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC)
	@command -v protoc >/dev/null || { echo "proto: protoc not found: apt-get install -y protobuf-compiler"; exit 1; }
	protoc --plugin=protoc-gen-go=$(PROTOC_GEN_GO) --plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GO_GRPC) \
	  -I pkg/quota/api --go_out=paths=source_relative:pkg/quota/api \
	  --go-grpc_out=paths=source_relative:pkg/quota/api pkg/quota/api/quota.proto

clean:
	rm -rf bin $(OUT)
