#!/usr/bin/env bash
# Regenerates the Go code of every .proto file under proto/ next to it, and
# with controller-gen the deep-copy code of the Kubernetes API types under
# api/ and their CustomResourceDefinitions in manifests/crd/ (also copied
# into the Helm chart's crds/).
#
# Tools are pure Go, pinned, and installed into tools/bin (override with
# TOOLS_BIN), so a fresh machine needs only Go and the module proxy:
#   buf                 BUF_VERSION below
#   protoc-gen-go       the google.golang.org/protobuf version in go.mod
#   protoc-gen-go-grpc  PROTOC_GEN_GO_GRPC_VERSION below
#   controller-gen      CONTROLLER_GEN_VERSION below
#
# Usage: hack/generate.sh [proto-output-dir [k8s-output-root]]
#   (default: in place; k8s-output-root receives api/..., manifests/crd/ and
#   charts/rekey/crds/)
set -euo pipefail

BUF_VERSION=v1.75.0
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
CONTROLLER_GEN_VERSION=v0.19.0

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
PROTOC_GEN_GO_VERSION=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
TOOLS_BIN=${TOOLS_BIN:-$root/tools/bin}
out=${1:-$root/proto}
k8sout=${2:-$root}

# ensure <binary> <package> <module> <version>: installs the binary unless
# the one in TOOLS_BIN was already built from that module version.
ensure() {
	local bin=$1 pkg=$2 mod=$3 version=$4 have=""
	if [[ -x $TOOLS_BIN/$bin ]]; then
		have=$(go version -m "$TOOLS_BIN/$bin" | awk -v m="$mod" '$1 == "mod" && $2 == m { print $3 }')
	fi
	if [[ $have != "$version" ]]; then
		echo "installing $bin $version into $TOOLS_BIN" >&2
		GOBIN=$TOOLS_BIN GOFLAGS= go install "$pkg@$version"
	fi
}
mkdir -p "$TOOLS_BIN"
ensure buf github.com/bufbuild/buf/cmd/buf github.com/bufbuild/buf "$BUF_VERSION"
ensure protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/protobuf "$PROTOC_GEN_GO_VERSION"
ensure protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"
ensure controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen sigs.k8s.io/controller-tools "$CONTROLLER_GEN_VERSION"

export PATH=$TOOLS_BIN:$PATH
cd "$root/proto"
buf lint
buf generate --template buf.gen.yaml --output "$out"

cd "$root"
mkdir -p "$k8sout/api/v1alpha1" "$k8sout/manifests/crd" "$k8sout/charts/rekey/crds"
controller-gen object paths=./api/v1alpha1 output:object:dir="$k8sout/api/v1alpha1" \
	crd:crdVersions=v1 output:crd:dir="$k8sout/manifests/crd"
cp "$k8sout"/manifests/crd/rekey.dev_*.yaml "$k8sout/charts/rekey/crds/"
