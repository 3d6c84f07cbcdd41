#!/usr/bin/env bash
# build-cert-manager.sh builds cert-manager's controller and cainjector at the
# version pinned in tests/cluster/cert-manager/go.mod from the Go module proxy,
# and caches them with cert-manager's CRDs under
# tools/cache/cert-manager-<version>-<hash of the sources>/.
#
# Usage: tests/cluster/build-cert-manager.sh
#
# Progress goes to stderr; the last line on stdout is the cache directory,
# holding bin/controller, bin/cainjector and crds/*.yaml. A warm run does
# nothing and takes milliseconds.
#
# Why rekey has its own main packages (tests/cluster/cert-manager): cert-manager
# publishes only its root module; the cmd/controller, cmd/cainjector and
# cmd/webhook modules are not on the proxy. The root module holds the
# controllers (pkg/controller/...) and the injectors
# (pkg/controller/cainjector), which two short mains start with cert-manager's
# defaults. cert-manager's webhook (validation and defaulting of its own
# resources) is built from internal/ packages that no other module may import,
# so it is not built: issuance and injection do not need it.
#
# Environment:
#   REKEY_CACHE   cache root (default <repo>/tools/cache)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
src="${repo_root}/tests/cluster/cert-manager"
version="$(awk '$1 == "github.com/cert-manager/cert-manager" { print $2 }' "${src}/go.mod")"
cache_root="${REKEY_CACHE:-${repo_root}/tools/cache}"
# Keyed by the version and by rekey's main packages (a change rebuilds).
src_hash="$(cd "${src}" && cat go.mod go.sum ./*/main.go | sha256sum | cut -c1-8)"
cache_dir="${cache_root}/cert-manager-${version}-${src_hash}"

log() { printf 'build-cert-manager.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -n "${version}" ]] || die "no cert-manager version in ${src}/go.mod"
if [[ -x "${cache_dir}/bin/controller" && -x "${cache_dir}/bin/cainjector" && -f "${cache_dir}/crds/cert-manager.io_certificates.yaml" ]]; then
  echo "${cache_dir}"
  exit 0
fi

command -v go >/dev/null || die "go is not on PATH"
mkdir -p "${cache_dir}"
exec 9>"${cache_dir}/.lock"
flock 9

export GOWORK=off CGO_ENABLED=0
start=$(date +%s)
mkdir -p "${cache_dir}/bin.tmp"
for c in controller cainjector; do
  log "building ${c} (cert-manager ${version})"
  (cd "${src}" && go build -mod=readonly -trimpath -ldflags '-s -w' -o "${cache_dir}/bin.tmp/${c}" "./${c}")
done
moddir="$(cd "${src}" && go list -mod=readonly -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)"
[[ -d "${moddir}/deploy/crds" ]] || die "no deploy/crds in ${moddir}"
rm -rf "${cache_dir}/crds" "${cache_dir}/bin"
mkdir -p "${cache_dir}/crds"
cp "${moddir}"/deploy/crds/*.yaml "${cache_dir}/crds/"
chmod -R u+w "${cache_dir}/crds"
mv "${cache_dir}/bin.tmp" "${cache_dir}/bin"
log "built in $(( $(date +%s) - start ))s"
echo "${cache_dir}"
