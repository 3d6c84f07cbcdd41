#!/bin/bash
# run-suite.sh runs tests of s3fs-fuse's integration-test-main.sh against a
# mount that is already there, without S3Proxy or s3fs's own start and stop
# (integration-test-common.sh, which does those, is not used). Written for
# rekey; not part of s3fs-fuse.
#
#   run-suite.sh list MOUNTPOINT          the tests add_all_tests adds
#   run-suite.sh run MOUNTPOINT TEST...   run them, one line each:
#                                         RESULT<TAB>test<TAB>pass|fail<TAB>seconds
#
# Environment: S3_URL, S3_ENDPOINT (the region), TEST_BUCKET_1,
# AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (the suite signs its own
# requests with curl --aws-sigv4), S3FS_PID (the process whose arguments the
# suite greps for options), S3FS_SUITE_LOGS (a directory for each test's
# output, TEST.log) and S3FS_SUITE_TIMEOUT (seconds per test, default 600).
# Each test runs as run_suite runs it (a subshell with errexit, its own file
# names, the working directory a fresh directory in the mount), in its own
# process group, killed at the timeout.
set -o errexit
set -o pipefail

suite=$(cd "$(dirname "$0")" && pwd)
mode=$1
mp=$2
shift 2
# The tests call their helpers as ../../NAME from a directory in the mount.
work=$(dirname "$mp")
for f in junk_data write_multiblock mknod_test truncate_read_file path_truncate cr_filename unlink_open_file pjdfstest; do
	ln -sfn "$suite/$f" "$work/$f"
done
export TEST_BUCKET_MOUNT_POINT_1=$mp
export S3PROXY_CACERT_FILE=
export S3_URL S3_ENDPOINT TEST_BUCKET_1 AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY S3FS_PID
cd "$suite"
# The main script, less its last three lines (init_suite, add_all_tests,
# run_suite); it sources test-utils.sh itself.
# shellcheck disable=SC1090
source <(sed '/^init_suite$/,/^run_suite$/d' integration-test-main.sh)

# curl before 8 (Debian 12 has 7.88) sends no x-amz-content-sha256 with
# --aws-sigv4, and MinIO refuses such uploads (SignatureDoesNotMatch;
# S3Proxy, the suite's own server, lets them pass). The suite's request
# helpers call curl; this sends the header as S3 defines it for a payload
# that is not signed.
curl() {
	command curl --header "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

case "$mode" in
list)
	init_suite
	add_all_tests
	printf '%s\n' "${TEST_LIST[@]}"
	exit 0
	;;
run) ;;
*)
	echo "usage: $0 list|run MOUNTPOINT [TEST...]" >&2
	exit 2
	;;
esac

logs=${S3FS_SUITE_LOGS:-$(mktemp -d)}
timeout=${S3FS_SUITE_TIMEOUT:-600}
key_prefix="testrun-$$"
cd_run_dir "$key_prefix"
set -m # background jobs in process groups of their own, for the timeout
n=0
for t in "$@"; do
	n=$((n + 1))
	RANDOM_STR=$(printf '%03d' "$n")
	TEST_TEXT_FILE="test-s3fs-${RANDOM_STR}.txt"
	TEST_DIR="testdir-${RANDOM_STR}"
	ALT_TEST_TEXT_FILE="test-s3fs-ALT-${RANDOM_STR}.txt"
	BIG_FILE="big-file-s3fs-${RANDOM_STR}.txt"
	start=$(date +%s%N)
	set +o errexit
	(set -o errexit; "$t" "$key_prefix") >"$logs/$t.log" 2>&1 </dev/null &
	pid=$!
	(sleep "$timeout" && echo "run-suite.sh: killed after ${timeout}s" >>"$logs/$t.log" && kill -KILL -- "-$pid") >/dev/null 2>&1 &
	watchdog=$!
	wait "$pid"
	rc=$?
	kill -- "-$watchdog" 2>/dev/null
	wait "$watchdog" 2>/dev/null
	set -o errexit
	result=pass
	[ "$rc" = 0 ] || result=fail
	ms=$((($(date +%s%N) - start) / 1000000))
	printf 'RESULT\t%s\t%s\t%d.%d\n' "$t" "$result" $((ms / 1000)) $((ms % 1000 / 100))
	cd "${TEST_BUCKET_MOUNT_POINT_1}/${key_prefix}" || break
done
cd "$suite"
clean_run_dir "$key_prefix"
