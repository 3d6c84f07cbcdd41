#!/usr/bin/env bash
# install-tools.sh builds the pinned helm and kustomize binaries that the
# manifest tests (manifests/manifests_test.go) render with, from the Go module
# proxy, and caches them under tools/cache/<tool>-<version>/.
#
# Usage: hack/install-tools.sh [helm|kustomize]...   (default: both)
#
# For each tool it prints one line on stdout, the path of the binary, in the
# order asked, so
#   REKEY_HELM_BIN="$(hack/install-tools.sh helm)"
# works. Progress goes to stderr. A warm run (binary present) does nothing and
# takes milliseconds; the cache is keyed by version, so changing a version
# below builds the new one next to the old.
#
# Environment:
#   HELM_VERSION       helm.sh/helm/v3 release (default v3.21.4)
#   KUSTOMIZE_VERSION  sigs.k8s.io/kustomize/kustomize/v5 release (default v5.8.2)
#   REKEY_CACHE        cache root (default <repo>/tools/cache)
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_root="${REKEY_CACHE:-${repo_root}/tools/cache}"

log() { printf 'install-tools.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# install <name> <version> <package>: go install into the versioned cache dir.
install() {
  local name="$1" version="$2" pkg="$3"
  local dir="${cache_root}/${name}-${version}"
  local bin="${dir}/${name}"
  if [[ ! -x "${bin}" ]]; then
    command -v go >/dev/null || die "go is not on PATH"
    mkdir -p "${dir}"
    # One build at a time per tool: several suites may start this script.
    exec 9>"${dir}/.lock"
    flock 9
    if [[ ! -x "${bin}" ]]; then
      local start=${SECONDS}
      log "building ${name} ${version}"
      rm -rf "${dir}/.gobin"
      GOWORK=off CGO_ENABLED=0 GOBIN="${dir}/.gobin" \
        go install -trimpath -ldflags "-s -w" "${pkg}@${version}"
      mv "${dir}/.gobin/${name}" "${bin}"
      rm -rf "${dir}/.gobin"
      log "built ${name} ${version} in $((SECONDS - start))s"
    fi
    exec 9>&-
  fi
  echo "${bin}"
}

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(helm kustomize)
for t in "${tools[@]}"; do
  case "${t}" in
    helm) install helm "${HELM_VERSION}" helm.sh/helm/v3/cmd/helm ;;
    kustomize) install kustomize "${KUSTOMIZE_VERSION}" sigs.k8s.io/kustomize/kustomize/v5 ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown tool ${t} (want helm or kustomize)" ;;
  esac
done
