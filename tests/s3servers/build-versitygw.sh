#!/usr/bin/env bash
# build-versitygw.sh builds versitygw (Apache-2.0, github.com/versity/versitygw),
# the second S3 implementation the benchmarks and integration tests run
# against, from the Go module proxy at a pinned version. It runs as a separate
# binary with its posix backend (a plain directory).
#
# Output: tools/cache/versitygw-<version>/versitygw (tools/cache/ is
# git-ignored). A warm run does nothing. Prints the binary's path last:
#   export REKEY_VERSITYGW_BIN=$(tests/s3servers/build-versitygw.sh | tail -1)
set -euo pipefail

VERSITYGW_VERSION=${VERSITYGW_VERSION:-v1.8.0}

root=$(cd "$(dirname "$0")/../.." && pwd)
dir="$root/tools/cache/versitygw-$VERSITYGW_VERSION"
bin="$dir/versitygw"

if [[ -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi

GO=${GO:-go}
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "building versitygw $VERSITYGW_VERSION into $dir" >&2
# go install pkg@version: module-aware, outside our module, with versitygw's
# own go.mod and go.sum.
(cd "$tmp" && GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS= "$GO" install -trimpath -ldflags "-s -w" \
	"github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION")
mv "$tmp/versitygw" "$bin"
echo "$bin"
