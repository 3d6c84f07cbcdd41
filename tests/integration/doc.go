//go:build integration

// Package integration runs the FUSE functional tests of rekey-fuse against
// real S3 servers: MinIO (REKEY_MINIO_BIN, with REKEY_MC_BIN for its admin
// API) and versitygw (REKEY_VERSITYGW_BIN), and the in-process fakes3 as a
// baseline. `make test-integration` builds the servers and runs it with
// -tags integration (so `go test ./...` leaves it out). Without
// a binary the server's tests skip, except under CI=true, where they fail.
package integration
