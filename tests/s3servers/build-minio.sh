#!/usr/bin/env bash
# build-minio.sh builds the MinIO server the STS tests run against, as a
# separate binary from the Go module proxy at a pinned release. MinIO is
# AGPL-3.0: it is never imported into rekey's module, only built and executed.
#
# Output: tools/cache/minio-<release>/minio (tools/cache/ is git-ignored).
# A warm run (binary present) does nothing. Prints the binary's path last, so
#   export REKEY_MINIO_BIN=$(tests/s3servers/build-minio.sh | tail -1)
# works.
set -euo pipefail

# RELEASE.2025-09-07T16-13-09Z. MinIO tags are not semver, so the module
# proxy knows the release by its pseudo-version (commit 07c3a429bfed).
MINIO_RELEASE=${MINIO_RELEASE:-RELEASE.2025-09-07T16-13-09Z}
MINIO_VERSION=${MINIO_VERSION:-v0.0.0-20250907161309-07c3a429bfed}
# The release time in RFC 3339, as MinIO's own build (buildscripts/gen-ldflags.go) sets cmd.Version.
MINIO_TIME=${MINIO_TIME:-2025-09-07T16:13:09Z}
MINIO_COMMIT=${MINIO_COMMIT:-07c3a429bfed433e49018cb0f78a52145d4bedeb}

root=$(cd "$(dirname "$0")/../.." && pwd)
dir="$root/tools/cache/minio-$MINIO_RELEASE"
bin="$dir/minio"

if [[ -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi

GO=${GO:-go}
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "building minio $MINIO_RELEASE ($MINIO_VERSION) into $dir" >&2
# go install pkg@version builds in module-aware mode outside our module, with
# MinIO's own go.mod and go.sum. Static, stripped, versioned like MinIO's builds.
(cd "$tmp" && GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS= "$GO" install -trimpath \
	-ldflags "-s -w -X github.com/minio/minio/cmd.Version=$MINIO_TIME -X github.com/minio/minio/cmd.ReleaseTag=$MINIO_RELEASE \
-X github.com/minio/minio/cmd.CommitID=$MINIO_COMMIT -X github.com/minio/minio/cmd.ShortCommitID=${MINIO_COMMIT:0:12} \
-X github.com/minio/minio/cmd.CopyrightYear=${MINIO_TIME:0:4}" \
	"github.com/minio/minio@$MINIO_VERSION")
mv "$tmp/minio" "$bin"
echo "$bin"
