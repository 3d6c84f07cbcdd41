package s3fs

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"
)

// TestWriteCacheReadBack: a file written through the mount reads back from
// its kept staging copy (no GET) within the stat cache TTL, from the bucket
// after it, and the kept copies stay within WriteCacheSize.
func TestWriteCacheReadBack(t *testing.T) {
	t.Parallel()
	const size = 4096
	e := newEnv(t, Options{StatCacheTTL: 2 * time.Second, WriteCacheSize: 3 * size}, true)
	files := make([][]byte, 5)
	for i := range files {
		files[i] = randomBytes(t, size)
		if err := os.WriteFile(e.path(fmt.Sprintf("f%d", i)), files[i], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Release reaches the server after close returns.
	// Release reaches the server after close returns, and evicted copies
	// are removed right after.
	eventually(t, 5*time.Second, "three files kept, the rest evicted", func() bool {
		return keptCount(e.fsys) == 3 && stagingBytes(t, e) == 3*size
	})
	read := func(i int) int64 {
		t.Helper()
		before := e.api.gets.Load()
		got, err := os.ReadFile(e.path(fmt.Sprintf("f%d", i)))
		if err != nil || !bytes.Equal(got, files[i]) {
			t.Fatalf("read f%d: %d bytes, %v (or wrong bytes)", i, len(got), err)
		}
		return e.api.gets.Load() - before
	}
	if gets := read(4); gets != 0 {
		t.Fatalf("reading back the last file written sent %d GETs, want 0", gets)
	}
	if gets := read(0); gets == 0 {
		t.Fatal("the first file written should have been evicted (cache bound), but read without a GET")
	}
	time.Sleep(2500 * time.Millisecond) // past the TTL
	e.put("f4", []byte("changed by another client"))
	got, err := os.ReadFile(e.path("f4"))
	if err != nil || string(got) != "changed by another client" {
		t.Fatalf("after the TTL f4 reads %q, %v; want the bucket's new content", got, err)
	}
}

// TestWriteCacheClose: Close removes kept copies from staging (the bucket
// has them) and leaves data that is not uploaded alone.
func TestWriteCacheClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	if err := os.WriteFile(e.path("kept"), []byte("kept after upload"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "file kept after release", func() bool { return keptCount(e.fsys) == 1 })
	if err := e.fsys.Close(); err != nil {
		t.Fatal(err)
	}
	if used := stagingBytes(t, e); used != 0 {
		t.Fatalf("staging holds %d bytes after Close", used)
	}
	if got := e.mustGet("kept"); string(got) != "kept after upload" {
		t.Fatalf("bucket has %q", got)
	}
}

// keptCount is how many files the write cache keeps.
func keptCount(f *FS) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kept.Len()
}

// TestWriteCacheBoundedAndSwept: the write cache keeps at most
// WriteCacheFiles copies (each an open descriptor), whatever their size,
// and drops expired copies by itself, without the keys being used again.
func TestWriteCacheBoundedAndSwept(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{StatCacheTTL: time.Second, WriteCacheFiles: 4}, true)
	for i := range 30 {
		if err := os.WriteFile(e.path(fmt.Sprintf("small-%d", i)), []byte{byte(i)}, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "the last four files kept", func() bool { return keptCount(e.fsys) == 4 })
	for i := range 30 {
		if got := e.mustGet(fmt.Sprintf("small-%d", i)); len(got) != 1 || got[0] != byte(i) {
			t.Fatalf("small-%d in the bucket: %v", i, got)
		}
	}
	eventually(t, 10*time.Second, "expired copies swept", func() bool {
		return keptCount(e.fsys) == 0 && stagingBytes(t, e) == 0
	})
}
