# lib.sh is sourced by the build-*.sh scripts of this directory.
#
# go_install_cached NAME TAG PKG@VERSION [LDFLAGS] builds PKG@VERSION with
# `go install` outside rekey's module (module-aware, with the tool's own
# go.mod and go.sum), static and stripped, into tools/cache/NAME-TAG/NAME
# unless it is there already, and prints the binary's path last.
go_install_cached() {
	local name=$1 tag=$2 pkg=$3 ldflags=${4:-}
	local dir bin tmp
	cache_paths "$name" "$tag"
	if [[ -x "$bin" ]]; then
		echo "$bin"
		return 0
	fi
	tmp=$(mktemp -d "$dir/.build.XXXXXX")
	# shellcheck disable=SC2064 # expand $tmp now
	trap "rm -rf '$tmp'" EXIT
	echo "building $name $tag ($pkg) into $dir" >&2
	(cd "$tmp" && GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS= "${GO:-go}" install -trimpath -ldflags "-s -w $ldflags" "$pkg")
	# go install names the binary after the last element of the package path.
	local built=${pkg%@*}
	mv "$tmp/${built##*/}" "$bin"
	echo "$bin"
}

# cache_paths NAME TAG sets dir (tools/cache/NAME-TAG, created) and bin
# (dir/NAME) in the caller's scope.
cache_paths() {
	local root
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	dir="$root/tools/cache/$1-$2"
	bin="$dir/$1"
	mkdir -p "$dir"
}
