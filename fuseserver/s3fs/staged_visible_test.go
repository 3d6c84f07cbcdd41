package s3fs

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestFailedUploadStaysVisible: a file whose upload failed stays staged,
// listed and readable after the stat cache time, and can be deleted, which
// ends its retries.
func TestFailedUploadStaysVisible(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{StatCacheTTL: 200 * time.Millisecond}, true)
	e.api.failPuts.Store(true)
	err := os.WriteFile(e.path("kept.txt"), []byte("precious"), 0o644)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("write with failing uploads: %v, want EIO", err)
	}
	time.Sleep(500 * time.Millisecond) // past the stat cache time: what answers is the staging
	ents, err := os.ReadDir(e.dir)
	if err != nil || len(ents) != 1 || ents[0].Name() != "kept.txt" {
		t.Fatalf("listing: %v %v, want kept.txt", ents, err)
	}
	if got, err := os.ReadFile(e.path("kept.txt")); err != nil || string(got) != "precious" {
		t.Fatalf("read: %q %v", got, err)
	}
	if err := os.Remove(e.path("kept.txt")); err != nil {
		t.Fatalf("unlink: %v", err)
	}
	if p := e.fsys.Pending(); len(p) != 0 {
		t.Fatalf("pending after unlink: %v", p)
	}
	if _, err := os.Stat(e.path("kept.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat after unlink: %v", err)
	}
}
