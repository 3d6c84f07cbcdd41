package s3fs

import (
	"os"
	"testing"

	"rekey.dev/rekey/internal/fusetest"
)

// TestSmallFileRequests: a new file written with fsync costs one PutObject
// and nothing else in a directory made through the mount, but for one
// listing of the new directory (close after a clean fsync sends nothing);
// overwriting existing files with cold caches costs one PutObject each
// (open(O_TRUNC) does not upload an empty object first) and one HeadObject
// each (its mode and owner are in its metadata, which the upload keeps),
// plus a listing per 1000 names.
func TestSmallFileRequests(t *testing.T) {
	t.Parallel()
	const n = 50
	e := newEnv(t, Options{}, true)
	if err := os.Mkdir(e.path("new"), 0o755); err != nil {
		t.Fatal(err)
	}
	before := e.fsys.RequestCounts()
	fusetest.WriteSmallFiles(t, e.path("new"), n, 4096)
	if got := fusetest.CountsSince(e.fsys.RequestCounts(), before); len(got) != 2 || got["PutObject"] != n || got["ListObjectsV2"] != 1 {
		t.Fatalf("new files in a new directory: requests %v, want %d PutObject and 1 ListObjectsV2", got, n)
	}

	// A second mount (cold caches) overwrites them.
	e2 := &env{t: t, bucket: e.bucket, srv: e.srv, admin: e.admin, api: e.api}
	var err error
	if e2.fsys, err = New(e.api, Options{Bucket: testBucket, StagingDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e2.fsys.Close() })
	e2.dir = t.TempDir()
	srv, err := Mount(e2.dir, e2.fsys, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(t, srv) })
	before = e2.fsys.RequestCounts()
	fusetest.WriteSmallFiles(t, e2.path("new"), n, 4096)
	got := fusetest.CountsSince(e2.fsys.RequestCounts(), before)
	t.Logf("overwrite %d files with cold caches: %v", n, got)
	// The lookup of "new" costs a HEAD, a probe and a HEAD of its marker;
	// the third file lists ahead; each file a HEAD for its metadata.
	if got["PutObject"] != n || got["HeadObject"] > n+2 || got["ListObjectsV2"] > 2 {
		t.Fatalf("overwrites: requests %v, want %d PutObject, at most %d HeadObject and 2 ListObjectsV2", got, n, n+2)
	}
}
