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

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
# Versioned like MinIO's own builds.
go_install_cached minio "$MINIO_RELEASE" "github.com/minio/minio@$MINIO_VERSION" \
	"-X github.com/minio/minio/cmd.Version=$MINIO_TIME -X github.com/minio/minio/cmd.ReleaseTag=$MINIO_RELEASE \
-X github.com/minio/minio/cmd.CommitID=$MINIO_COMMIT -X github.com/minio/minio/cmd.ShortCommitID=${MINIO_COMMIT:0:12} \
-X github.com/minio/minio/cmd.CopyrightYear=${MINIO_TIME:0:4}"
