#!/usr/bin/env bash
# build-mc.sh builds the MinIO client `mc`, which the integration tests use to
# create and remove MinIO users (`mc admin user add/remove`, `mc admin policy
# attach`) while they rotate keys. Like MinIO it is AGPL-3.0: built from the Go
# module proxy at a pinned version and executed, never imported.
#
# The pin is the mc version MinIO RELEASE.2025-09-07T16-13-09Z itself requires
# (so a machine that built MinIO already has it in the module cache); its
# admin API client speaks to that server.
#
# Output: tools/cache/mc-<version>/mc (tools/cache/ is git-ignored). A warm
# run does nothing. Prints the binary's path last:
#   export REKEY_MC_BIN=$(tests/s3servers/build-mc.sh | tail -1)
set -euo pipefail

MC_VERSION=${MC_VERSION:-v0.0.0-20250313080218-cf909e1063a9}

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
go_install_cached mc "$MC_VERSION" "github.com/minio/mc@$MC_VERSION"
