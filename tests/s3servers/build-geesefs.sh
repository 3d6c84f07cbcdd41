#!/usr/bin/env bash
# build-geesefs.sh builds geesefs (Apache-2.0, github.com/yandex-cloud/geesefs)
# at a pinned commit for `make bench`, which then runs it beside rekey, s3fs
# and rclone (GEESEFS_BIN). It cannot come from the Go module proxy like the
# other tools: the proxy answers 403 for its module, and its go.mod has
# replace directives, which `go install pkg@version` refuses. So it is built
# from a checkout of its repository: GEESEFS_SRC names one (any directory
# holding that commit's tree), else the script clones it with git, which
# needs access to github.com.
#
# Output: tools/cache/geesefs-<commit>/geesefs (git-ignored). A warm run does
# nothing. Prints the binary's path last:
#   export GEESEFS_BIN=$(tests/s3servers/build-geesefs.sh | tail -1)
set -euo pipefail

GEESEFS_COMMIT=${GEESEFS_COMMIT:-6e2bbab}
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
cache_paths geesefs "$GEESEFS_COMMIT"
if [[ -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi
src=${GEESEFS_SRC:-}
if [[ -z "$src" ]]; then
	src=$(mktemp -d "$dir/.src.XXXXXX")
	# shellcheck disable=SC2064 # expand $src now
	trap "rm -rf '$src'" EXIT
	git clone --quiet https://github.com/yandex-cloud/geesefs "$src"
	git -C "$src" checkout --quiet "$GEESEFS_COMMIT"
fi
echo "building geesefs $GEESEFS_COMMIT from $src into $dir" >&2
(cd "$src" && CGO_ENABLED=0 GOFLAGS= "${GO:-go}" build -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
mv "$bin.tmp" "$bin"
echo "$bin"
