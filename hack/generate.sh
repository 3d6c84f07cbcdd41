#!/usr/bin/env bash
# Regenerates the Go code of every .proto file under proto/ next to it.
#
# Tools are pure Go, pinned, and installed into tools/bin (override with
# TOOLS_BIN), so a fresh machine needs only Go and the module proxy:
#   buf                 BUF_VERSION below
#   protoc-gen-go       the google.golang.org/protobuf version in go.mod
#   protoc-gen-go-grpc  PROTOC_GEN_GO_GRPC_VERSION below
#
# Usage: hack/generate.sh [output-dir]   (default: proto/, in place)
set -euo pipefail

BUF_VERSION=v1.75.0
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
PROTOC_GEN_GO_VERSION=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
TOOLS_BIN=${TOOLS_BIN:-$root/tools/bin}
out=${1:-$root/proto}

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

export PATH=$TOOLS_BIN:$PATH
cd "$root/proto"
buf lint
buf generate --template buf.gen.yaml --output "$out"
