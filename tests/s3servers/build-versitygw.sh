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

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
go_install_cached versitygw "$VERSITYGW_VERSION" "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
