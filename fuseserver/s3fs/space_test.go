package s3fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"rekey.dev/rekey/internal/fusetest"
)

func TestDecideRoom(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name string
		r    roomRequest
		want roomDecision
	}{
		{"no growth", roomRequest{grow: 0, staged: 10 * mib, limit: mib}, roomDecision{}},
		{"no limits", roomRequest{grow: 100 * mib, staged: 100 * mib}, roomDecision{}},
		{"fits the limit", roomRequest{grow: mib, staged: 2 * mib, limit: 3 * mib}, roomDecision{}},
		{"past the limit, no cache", roomRequest{grow: mib, staged: 3 * mib, limit: 3 * mib}, roomDecision{refuse: syscall.EDQUOT}},
		{"past the limit, cache covers it", roomRequest{grow: 2 * mib, staged: 3 * mib, kept: 2 * mib, limit: 3 * mib},
			roomDecision{evict: 2 * mib}},
		{"past the limit, cache too small", roomRequest{grow: 3 * mib, staged: 3 * mib, kept: 2 * mib, limit: 3 * mib},
			roomDecision{evict: 2 * mib, refuse: syscall.EDQUOT}},
		{"fits the reserve", roomRequest{grow: mib, free: 10 * mib, reserve: 9 * mib}, roomDecision{}},
		{"below the reserve", roomRequest{grow: 2 * mib, free: 10 * mib, reserve: 9 * mib}, roomDecision{refuse: syscall.ENOSPC}},
		{"below the reserve, cache covers it", roomRequest{grow: 2 * mib, staged: 4 * mib, kept: 4 * mib, free: 10 * mib, reserve: 9 * mib},
			roomDecision{evict: mib}},
		{"both short: the reserve's ENOSPC wins", roomRequest{grow: 4 * mib, staged: 4 * mib, kept: mib, limit: 4 * mib, free: 5 * mib, reserve: 4 * mib},
			roomDecision{evict: mib, refuse: syscall.ENOSPC}},
		{"limit short beyond the cache, reserve covered by it", roomRequest{grow: 4 * mib, staged: 4 * mib, kept: mib, limit: 4 * mib, free: 100 * mib, reserve: 97 * mib},
			roomDecision{evict: mib, refuse: syscall.EDQUOT}},
		{"evict the larger shortage", roomRequest{grow: 2 * mib, staged: 4 * mib, kept: 4 * mib, limit: 5 * mib, free: 10 * mib, reserve: 11 * mib},
			roomDecision{evict: 3 * mib}},
	}
	for _, tt := range tests {
		if got := decideRoom(tt.r); got != tt.want {
			t.Errorf("%s: decideRoom(%+v) = %+v, want %+v", tt.name, tt.r, got, tt.want)
		}
	}
}

func TestReserveBytes(t *testing.T) {
	for _, tt := range []struct {
		total, min int64
		pct        int
		want       int64
	}{
		{100 << 30, 1 << 30, 10, 10 << 30},
		{5 << 30, 1 << 30, 10, 1 << 30},
		{5 << 30, 0, 0, 0},
	} {
		if got := reserveBytes(tt.total, tt.min, tt.pct); got != tt.want {
			t.Errorf("reserveBytes(%d, %d, %d) = %d, want %d", tt.total, tt.min, tt.pct, got, tt.want)
		}
	}
}

// writeUntil writes data to path in 1 MiB writes until one fails, closes
// the file and returns how many bytes were accepted, the write error and
// the close error.
func writeUntil(t *testing.T, path string, data []byte) (int, error, error) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var werr error
	for off := 0; off < len(data); off += 1 << 20 {
		m, err := f.Write(data[off:min(off+1<<20, len(data))])
		n += m
		if err != nil {
			werr = err
			break
		}
	}
	return n, werr, f.Close()
}

// stagedOnlyCache waits until the mount stages nothing but its write cache
// (the accounting went back down once uploads finished).
func stagedOnlyCache(t *testing.T, f *FS) {
	t.Helper()
	eventually(t, 10*time.Second, "staged bytes back to the write cache's", func() bool {
		staged, cache := f.StagedBytes()
		return staged == cache
	})
}

// TestStagingLimitRefusesWriter: a writer past the mount's staging limit
// gets EDQUOT, and what it wrote before is uploaded intact by its close.
func TestStagingLimitRefusesWriter(t *testing.T) {
	t.Parallel()
	const limit = 8 << 20
	e := newEnv(t, Options{StagingLimit: limit, WriteCacheSize: -1}, true)
	data := randomBytes(t, 3*limit)
	n, werr, cerr := writeUntil(t, e.path("big"), data)
	if !errors.Is(werr, syscall.EDQUOT) {
		t.Fatalf("writing %d bytes with a staging limit of %d: error %v after %d bytes, want EDQUOT", len(data), limit, werr, n)
	}
	if n > limit || n < limit-(1<<20) {
		t.Fatalf("%d bytes accepted before EDQUOT, want about the limit %d", n, limit)
	}
	if cerr != nil {
		t.Fatalf("close after EDQUOT: %v (the accepted data must upload)", cerr)
	}
	if got := e.mustGet("big"); !bytes.Equal(got, data[:n]) {
		t.Fatalf("bucket has %d bytes (%s), want the %d accepted (%s)", len(got), sum(got), n, sum(data[:n]))
	}
	stagedOnlyCache(t, e.fsys)
	// A truncate that grows the file past the limit is refused too, and
	// leaves the object as it was.
	if err := os.Truncate(e.path("big"), 4*limit); !errors.Is(err, syscall.EDQUOT) {
		t.Fatalf("truncate to 4x the staging limit: %v, want EDQUOT", err)
	}
	if got := e.mustGet("big"); !bytes.Equal(got, data[:n]) {
		t.Fatalf("bucket has %d bytes after the refused truncate, want the %d uploaded before", len(got), n)
	}
	stagedOnlyCache(t, e.fsys)
	// Room again: the same writer can go on.
	if err := os.WriteFile(e.path("after"), data[:limit/2], 0o600); err != nil {
		t.Fatalf("write after the upload freed the staging: %v", err)
	}
}

// TestStagingLimitEvictsWriteCacheFirst: copies the write cache keeps are
// dropped to make room before an application's write is refused.
func TestStagingLimitEvictsWriteCacheFirst(t *testing.T) {
	t.Parallel()
	const limit = 8 << 20
	e := newEnv(t, Options{StagingLimit: limit, WriteCacheSize: limit, StatCacheTTL: time.Minute}, true)
	var files [][]byte
	for i := range 3 {
		files = append(files, randomBytes(t, 2<<20))
		if err := os.WriteFile(e.path(fmt.Sprintf("c%d", i)), files[i], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "three files in the write cache", func() bool { return keptCount(e.fsys) == 3 })
	if _, cache := e.fsys.StagedBytes(); cache != 6<<20 {
		t.Fatalf("write cache holds %d bytes, want %d", cache, 6<<20)
	}
	// 6 MiB more: 12 MiB with the cache, over the limit of 8.
	big := randomBytes(t, 6<<20)
	n, werr, cerr := writeUntil(t, e.path("big"), big)
	if werr != nil || cerr != nil {
		t.Fatalf("write of 6 MiB with 6 MiB of write cache under a limit of 8: %v, %v after %d bytes; the cache should have been evicted", werr, cerr, n)
	}
	if got := e.mustGet("big"); !bytes.Equal(got, big) {
		t.Fatal("bucket content of big differs")
	}
	for i, want := range files {
		got, err := os.ReadFile(e.path(fmt.Sprintf("c%d", i)))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("c%d after eviction: %v (or wrong bytes)", i, err)
		}
	}
	eventually(t, 5*time.Second, "staging within the limit", func() bool {
		staged, _ := e.fsys.StagedBytes()
		return staged <= limit
	})
}

// TestStagingLimitWaitsForUploadsInFlight: a sequential writer of a file
// several times the limit gets no error: the parts of its streamed upload
// in flight free their room once acknowledged, and the writer waits for
// them instead of failing.
func TestStagingLimitWaitsForUploadsInFlight(t *testing.T) {
	t.Parallel()
	const limit = 16 << 20 // 3 parts: less than the stream's window of 8
	e := newEnv(t, Options{StagingLimit: limit, MultipartThreshold: 5 << 20, PartSize: MinPartSize, WriteCacheSize: -1}, true)
	data := randomBytes(t, 64<<20)
	n, werr, cerr := writeUntil(t, e.path("stream"), data)
	if werr != nil || cerr != nil {
		t.Fatalf("streamed write of 64 MiB under a 16 MiB limit: %v, %v after %d bytes", werr, cerr, n)
	}
	if got := e.mustGet("stream"); !bytes.Equal(got, data) {
		t.Fatalf("bucket has %d bytes (%s), want %s", len(got), sum(got), sum(data))
	}
	stagedOnlyCache(t, e.fsys)
}

// TestStagingReserveRefusesWhenDiskLow stages on a real 64 MiB tmpfs and
// keeps half of it free: a writer gets ENOSPC before the filesystem
// fills, and what it wrote before uploads intact.
func TestStagingReserveRefusesWhenDiskLow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fusetest.MountTmpfs(t, dir, 64)
	e := newEnv(t, Options{StagingDir: filepath.Join(dir, "staging"), StagingReservePercent: 50, WriteCacheSize: -1}, true)
	data := randomBytes(t, 48<<20)
	n, werr, cerr := writeUntil(t, e.path("big"), data)
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("writing 48 MiB to a 64 MiB staging filesystem with a 50%% reserve: %v after %d bytes, want ENOSPC", werr, n)
	}
	if free := fusetest.FreeBytes(t, dir); free < 31<<20 {
		t.Fatalf("staging filesystem has %d bytes free with the file open, want the reserve (32 MiB) kept", free)
	}
	if n < 16<<20 {
		t.Fatalf("only %d bytes accepted before ENOSPC, want about 32 MiB", n)
	}
	if cerr != nil {
		t.Fatalf("close after ENOSPC: %v", cerr)
	}
	if got := e.mustGet("big"); !bytes.Equal(got, data[:n]) {
		t.Fatalf("bucket has %d bytes, want the %d accepted", len(got), n)
	}
	stagedOnlyCache(t, e.fsys)
}
