#!/usr/bin/env bash
# Fails if the committed generated code under proto/ differs from what
# hack/generate.sh produces: regenerates into a temporary directory and
# diffs every generated file, including files that should not exist.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$root/hack/generate.sh" "$tmp/proto" "$tmp"

status=0
generated() {
	(cd "$1" && find proto api manifests/crd charts/rekey/crds -type f \
		\( -name '*.pb.go' -o -name 'zz_generated.*.go' -o -name 'rekey.dev_*.yaml' -o -path 'charts/rekey/crds/*' \) 2>/dev/null | sort)
}
if ! diff -u <(generated "$root") <(generated "$tmp"); then
	echo "generated files differ in name (committed vs. regenerated)" >&2
	status=1
fi
while read -r f; do
	if [[ -f $root/$f ]] && ! diff -u "$root/$f" "$tmp/$f"; then
		status=1
	fi
done < <(generated "$tmp")
if [[ $status != 0 ]]; then
	echo "generated code is out of date: run make generate and commit the result" >&2
fi
exit $status
