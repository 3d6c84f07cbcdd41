#!/usr/bin/env bash
# build.sh builds the Kubernetes control-plane binaries (and etcd) that the
# project's envtest suites and local clusters run, from the Go module proxy,
# and caches them under tools/cache/k8s-<version>/bin.
#
# Usage: tests/cluster/build.sh [--all | component...]
#   components: kube-apiserver etcd kubectl kubelet kube-controller-manager kube-scheduler
#   default:    kube-apiserver etcd kube-controller-manager  (what the envtest
#               suites run: controller-runtime envtest, plus the garbage
#               collector for csidriver/volstatus)
#   --all:      every component above
#
# Progress goes to stderr; the last line on stdout is the bin directory, so
#   export KUBEBUILDER_ASSETS="$(tests/cluster/build.sh)"
# works. A warm run (all requested binaries present) does nothing and takes
# milliseconds. GOCACHE and GOMODCACHE keep their defaults so later builds
# reuse the compiled packages.
#
# Environment:
#   K8S_VERSION   Kubernetes release (default v1.34.4)
#   ETCD_VERSION  etcd release built from go.etcd.io/etcd/server/v3 (default v3.6.5)
#   REKEY_CACHE   cache root (default <repo>/tools/cache)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache_root="${REKEY_CACHE:-${repo_root}/tools/cache}"
cache_dir="${cache_root}/k8s-${K8S_VERSION}"
bin_dir="${cache_dir}/bin"

default_components=(kube-apiserver etcd kube-controller-manager)
all_components=(kube-apiserver etcd kubectl kubelet kube-controller-manager kube-scheduler)

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

components=()
if [[ $# -eq 0 ]]; then
  components=("${default_components[@]}")
fi
for arg in "$@"; do
  case "${arg}" in
    --all) components+=("${all_components[@]}") ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    kube-apiserver|etcd|kubectl|kubelet|kube-controller-manager|kube-scheduler) components+=("${arg}") ;;
    *) die "unknown component ${arg}" ;;
  esac
done

missing=()
for c in "${components[@]}"; do
  [[ -x "${bin_dir}/${c}" ]] || missing+=("${c}")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "${bin_dir}"
  exit 0
fi

command -v go >/dev/null || die "go is not on PATH"
mkdir -p "${bin_dir}"

# One build at a time per cache directory: the CSI, e2e and webhook suites
# may start this script concurrently.
exec 9>"${cache_dir}/.lock"
flock 9

export GOWORK=off CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:+${GOFLAGS} }-mod=mod"

k8s_src="${cache_dir}/src/kubernetes"
etcd_src="${cache_dir}/src/etcd"

# prepare_k8s writes a scratch module that requires k8s.io/kubernetes and
# replaces every staging module (k8s.io/api => ./staging/... in kubernetes'
# own go.mod) with its published v0.<minor>.<patch> version.
prepare_k8s() {
  [[ -f "${k8s_src}/go.mod" ]] && return 0
  local tmp="${k8s_src}.tmp" kgomod staging_version
  rm -rf "${tmp}"
  mkdir -p "${tmp}"
  log "downloading k8s.io/kubernetes@${K8S_VERSION} metadata"
  kgomod="$(cd "${tmp}" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "${kgomod}" ]] || die "could not download k8s.io/kubernetes@${K8S_VERSION}"
  staging_version="v0.${K8S_VERSION#v1.}"
  {
    echo "module rekey.dev/k8sbuild"
    echo
    echo "go $(sed -n 's/^go \(.*\)$/\1/p' "${kgomod}")"
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[^[:space:]]*\) => ./staging/src/.*$#\t\1 => \1 '"${staging_version}"'#p' "${kgomod}"
    echo ")"
  } >"${tmp}/go.mod"
  grep -q 'k8s.io/apiserver => ' "${tmp}/go.mod" || die "no staging replace lines found in ${kgomod}"
  mv "${tmp}" "${k8s_src}"
}

prepare_etcd() {
  [[ -f "${etcd_src}/go.mod" ]] && return 0
  local tmp="${etcd_src}.tmp"
  rm -rf "${tmp}"
  mkdir -p "${tmp}"
  printf 'module rekey.dev/etcdbuild\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "${ETCD_VERSION}" >"${tmp}/go.mod"
  mv "${tmp}" "${etcd_src}"
}

k8s_ldflags() {
  local minor="${K8S_VERSION#v1.}" date
  minor="${minor%%.*}"
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    flags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${date}"
  done
  echo "${flags}"
}

build_one() {
  local c="$1" start=${SECONDS}
  [[ -x "${bin_dir}/${c}" ]] && return 0
  case "${c}" in
    etcd)
      prepare_etcd
      log "building etcd ${ETCD_VERSION}"
      (cd "${etcd_src}" && go build -trimpath -ldflags "-s -w" -o "${bin_dir}/.${c}.tmp" go.etcd.io/etcd/server/v3)
      ;;
    kubectl)
      prepare_k8s
      log "building ${c} ${K8S_VERSION}"
      (cd "${k8s_src}" && go build -trimpath -ldflags "$(k8s_ldflags)" -o "${bin_dir}/.${c}.tmp" k8s.io/kubernetes/cmd/kubectl)
      ;;
    *)
      prepare_k8s
      log "building ${c} ${K8S_VERSION}"
      (cd "${k8s_src}" && go build -trimpath -ldflags "$(k8s_ldflags)" -o "${bin_dir}/.${c}.tmp" "k8s.io/kubernetes/cmd/${c}")
      ;;
  esac
  mv "${bin_dir}/.${c}.tmp" "${bin_dir}/${c}"
  log "built ${c} in $((SECONDS - start))s"
}

for c in "${missing[@]}"; do
  build_one "${c}"
done
echo "${bin_dir}"
