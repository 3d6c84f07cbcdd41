#!/bin/sh
# Writes PATCH.diff: the changes of this copy against upstream go-fuse
# v2.12.1 (the files changed or added here; the files left out of the copy
# are not listed). Run from anywhere: third_party/go-fuse/patch.sh
set -eu
cd "$(dirname "$0")"
version=v2.12.1
go mod download github.com/hanwen/go-fuse/v2@$version
upstream=$(go env GOMODCACHE)/github.com/hanwen/go-fuse/v2@$version
out=PATCH.diff
: >"$out"
find . -name '*.go' -o -name go.mod -o -name go.sum -o -name LICENSE | LC_ALL=C sort | while read -r f; do
	f=${f#./}
	if [ -f "$upstream/$f" ]; then
		diff -u --label "a/$f" --label "b/$f" "$upstream/$f" "$f" >>"$out" || true
	else
		diff -u --label /dev/null --label "b/$f" /dev/null "$f" >>"$out" || true
	fi
done
