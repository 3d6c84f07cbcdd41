//go:build integration

// Package s3fssuite runs s3fs-fuse's own integration suite
// (tests/s3fs-suite, built by tests/s3fs-suite/build.sh into
// REKEY_S3FS_SUITE_DIR) against a rekey mount and an s3fs mount (the Debian
// package) of the same MinIO server, prints the two results side by side and
// fails when rekey fails a test that s3fs passes, unless the test is listed
// in tests/s3fs-suite/rekey-known-failures.txt. `make test-integration`
// runs it with -tags integration and -v (the table is the output).
package s3fssuite
