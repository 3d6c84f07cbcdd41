#!/usr/bin/env bash
# build.sh prepares s3fs-fuse's integration suite (vendored in this
# directory, see README.md) for tests/s3fssuite: it compiles the suite's C++
# helpers and pjdfstest into tools/cache/s3fs-suite-<commit>/ and copies the
# scripts beside them. A warm run (the directory complete) does nothing.
# Prints the directory last, so
#   export REKEY_S3FS_SUITE_DIR=$(tests/s3fs-suite/build.sh | tail -1)
# works. Needs g++, gcc and perl's prove (Debian: g++, perl).
set -euo pipefail

# s3fs-fuse commit the scripts and helpers were taken from, and pjdfstest's
# (the one integration-test-common.sh pins).
S3FS_COMMIT=46017f2d9bb5043cbb7c1165f322114295fe38f2
PJDFSTEST_COMMIT=c711b5f6b666579846afba399a998f74f60c488b

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../s3servers/lib.sh
. "$here/../s3servers/lib.sh"
cache_paths s3fs-suite "${S3FS_COMMIT:0:12}-${PJDFSTEST_COMMIT:0:7}"
# The stamp names the vendored files' checksum: editing them rebuilds.
sum=$(cd "$here" && find . -type f ! -name README.md ! -name rekey-known-failures.txt -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [[ -f "$dir/.complete-$sum" ]]; then
	echo "$dir"
	exit 0
fi
echo "building s3fs-fuse's integration suite ($S3FS_COMMIT) into $dir" >&2
rm -rf "${dir:?}"/* "$dir"/.complete-*
for h in junk_data write_multiblock mknod_test truncate_read_file path_truncate cr_filename unlink_open_file; do
	g++ -O2 -std=c++17 -o "$dir/$h" "$here/$h.cc"
done
cp -r "$here/pjdfstest" "$dir/pjdfstest"
gcc -O2 -o "$dir/pjdfstest/pjdfstest" "$dir/pjdfstest/pjdfstest.c"
cp "$here/test-utils.sh" "$here/integration-test-main.sh" "$here/run-suite.sh" "$dir/"
touch "$dir/.complete-$sum"
echo "$dir"
