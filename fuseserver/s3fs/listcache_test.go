package s3fs

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestListingCache: a listing answers later readdirs and negative lookups
// without requests, follows changes made through the mount, and shows
// changes made behind its back once the TTL ends.
func TestListingCache(t *testing.T) {
	t.Parallel()
	const ttl = time.Second
	e := newEnv(t, Options{StatCacheTTL: ttl}, true)
	e.put("d/a", []byte("a"))
	assertDir(t, e.path("d"), "a")
	heads, lists := e.api.heads.Load(), e.api.lists.Load()
	if _, err := os.Stat(e.path("d/missing")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("stat missing: %v", err)
	}
	assertDir(t, e.path("d"), "a")
	if err := os.WriteFile(e.path("d/b"), []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	assertDir(t, e.path("d"), "a", "b")
	if err := os.Remove(e.path("d/a")); err != nil {
		t.Fatal(err)
	}
	assertDir(t, e.path("d"), "b")
	if h, l := e.api.heads.Load()-heads, e.api.lists.Load()-lists; h != 0 || l != 0 {
		t.Fatalf("cached listing still sent %d HEAD and %d LIST", h, l)
	}
	e.put("d/ext", []byte("x"))
	time.Sleep(ttl + 200*time.Millisecond)
	assertDir(t, e.path("d"), "b", "ext")
}
