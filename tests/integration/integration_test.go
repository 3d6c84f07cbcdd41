//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"rekey.dev/rekey/fuseserver/s3fs"
	"rekey.dev/rekey/internal/fusetest"
	"rekey.dev/rekey/internal/fusetest/rekeyfuse"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/loadcheck"
)

func TestFakeS3(t *testing.T) {
	t.Parallel()
	suite(t, fusetest.StartFake(t), 200*time.Millisecond)
}

func TestMinIO(t *testing.T) {
	t.Parallel()
	fusetest.Binary(t, "REKEY_MC_BIN", "tests/s3servers/build-mc.sh") // keys are issued with mc admin
	suite(t, fusetest.StartMinIO(t), 500*time.Millisecond)
}

func TestVersityGW(t *testing.T) {
	t.Parallel()
	suite(t, fusetest.StartVersityGW(t), 500*time.Millisecond)
}

// suite runs every case against srv, each on its own mount with its own
// keys; rotateEvery is the rotation interval of the rotation test.
func suite(t *testing.T, srv *fusetest.Server, rotateEvery time.Duration) {
	if os.Geteuid() != 0 {
		t.Skip("FUSE mounts need root")
	}
	cases := []struct {
		name string
		run  func(t *testing.T, srv *fusetest.Server)
	}{
		{"RoundTrip", testRoundTrip},
		{"ListingOver1000", testListing},
		{"ImplicitDirs", testImplicitDirs},
		{"Rename", testRename},
		{"TruncateAppend", testTruncateAppend},
		{"UnlinkWhileOpen", testUnlinkWhileOpen},
		{"KeyRevoked", testKeyRevoked},
		{"SmallFileRequests", testSmallFileRequests},
		{"RotationUnderLoad", func(t *testing.T, srv *fusetest.Server) { testRotation(t, srv, rotateEvery) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, srv)
		})
	}
}

// mounted is one s3fs mount signed with keys of its own.
type mounted struct {
	keys keys.Keys
	fsys *s3fs.FS
	dir  string
}

func (m *mounted) path(name string) string { return filepath.Join(m.dir, name) }

// mount issues keys on srv and mounts an FS with them (Bucket, StagingDir
// and Logger of opts are filled in).
func mount(t *testing.T, srv *fusetest.Server, opts s3fs.Options) *mounted {
	t.Helper()
	k, err := srv.Issue(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	opts.Bucket = fusetest.Bucket
	opts.StagingDir = filepath.Join(t.TempDir(), "staging")
	// t.Log output shows only for a failed test (or -v): the S3 error
	// behind an errno is then in the failure report.
	opts.Logger = testr.NewWithOptions(t, testr.Options{Verbosity: 0})
	fsys, err := s3fs.New(srv.Client(k), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = fsys.Close() })
	m := &mounted{keys: k, fsys: fsys, dir: t.TempDir()}
	fsrv, err := s3fs.Mount(m.dir, fsys, false)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() { fusetest.Unmount(t, fsrv) })
	return m
}

// testRoundTrip writes files of several sizes through the mount (single
// PUT and multipart, streamed), checks the objects by SHA-256, and reads
// objects put behind the mount's back through it (ranged GETs, read-ahead).
func testRoundTrip(t *testing.T, srv *fusetest.Server) {
	sizes := []struct {
		size, chunk int
		multipart   bool
	}{
		{0, 1, false}, {1234, 1 << 20, false}, {5 << 20, 1 << 20, false},
		{11<<20 + 7, 300_001, true}, {16<<20 + 12345, 1 << 20, true},
	}
	contents := make([][]byte, len(sizes))
	for i, sz := range sizes {
		// Put before mounting: a listed directory would not see them for
		// stat_cache_expire.
		contents[i] = fusetest.RandomBytes(t, sz.size)
		srv.Put(t, fmt.Sprintf("rtr/r-%d.bin", sz.size), contents[i])
	}
	m := mount(t, srv, s3fs.Options{MultipartThreshold: 5 << 20, PartSize: s3fs.MinPartSize})
	if err := os.Mkdir(m.path("rt"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, sz := range sizes {
		data := contents[i]
		name := fmt.Sprintf("rt/w-%d.bin", sz.size)
		before := m.fsys.RequestCounts()["CompleteMultipartUpload"]
		if err := fusetest.WriteChunks(m.path(name), data, sz.chunk); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
		if got := srv.MustGet(t, name); fusetest.Sum(got) != fusetest.Sum(data) {
			t.Fatalf("%s in the bucket: %d bytes sha %s, want %d bytes sha %s", name, len(got), fusetest.Sum(got), len(data), fusetest.Sum(data))
		}
		// More than one upload completes when a process forked meanwhile
		// (parallel tests run mc): the child's exec closes the inherited
		// descriptor, and that close flushes the file written so far.
		if completes := m.fsys.RequestCounts()["CompleteMultipartUpload"] - before; (completes >= 1) != sz.multipart {
			t.Fatalf("%s: %d multipart uploads completed, multipart=%v expected", name, completes, sz.multipart)
		}
		back, err := os.ReadFile(m.path(name))
		if err != nil || fusetest.Sum(back) != fusetest.Sum(data) {
			t.Fatalf("read back %s: %d bytes, %v (sha mismatch)", name, len(back), err)
		}

		name = fmt.Sprintf("rtr/r-%d.bin", sz.size)
		f, err := os.Open(m.path(name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := readChunks(f, 128<<10) // kernel-sized reads: sequential detection and read-ahead
		_ = f.Close()
		if err != nil || fusetest.Sum(got) != fusetest.Sum(data) {
			t.Fatalf("read %s through the mount: %d bytes, %v (sha mismatch)", name, len(got), err)
		}
	}
	// A range in the middle of an object that is not staged.
	name := fmt.Sprintf("rtr/r-%d.bin", 11<<20+7)
	want := srv.MustGet(t, name)[6<<20 : 6<<20+4096]
	f, err := os.Open(m.path(name))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 6<<20); err != nil || fusetest.Sum(buf) != fusetest.Sum(want) {
		t.Fatalf("ranged read: %v (mismatch)", err)
	}
	if p := m.fsys.Pending(); len(p) != 0 {
		t.Fatalf("Pending after successful closes: %v", p)
	}
}

func readChunks(f *os.File, chunk int) ([]byte, error) {
	var out []byte
	buf := make([]byte, chunk)
	for {
		n, err := f.Read(buf)
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// testListing lists a directory of more than 1000 objects (several
// ListObjectsV2 pages) with and without stat of every entry.
func testListing(t *testing.T, srv *fusetest.Server) {
	const n = 1100
	var wg sync.WaitGroup
	names := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range names {
				srv.Put(t, fmt.Sprintf("big/f-%04d", i), []byte(strings.Repeat("x", i%7)))
			}
		})
	}
	for i := range n {
		names <- i
	}
	close(names)
	wg.Wait()
	srv.Put(t, "big/sub/inner", []byte("in a subdirectory"))
	m := mount(t, srv, s3fs.Options{})
	ents, err := os.ReadDir(m.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != n+1 {
		t.Fatalf("readdir: %d entries, want %d", len(ents), n+1)
	}
	for i, e := range ents[:n] {
		if want := fmt.Sprintf("f-%04d", i); e.Name() != want || !e.Type().IsRegular() {
			t.Fatalf("entry %d: %s (%v), want file %s", i, e.Name(), e.Type(), want)
		}
		fi, err := e.Info()
		if err != nil || fi.Size() != int64(i%7) {
			t.Fatalf("stat %s: %v, %v; want size %d", e.Name(), fi, err, i%7)
		}
	}
	if last := ents[n]; last.Name() != "sub" || !last.IsDir() {
		t.Fatalf("last entry %s (%v), want directory sub", last.Name(), last.Type())
	}
}

// testImplicitDirs: prefixes without marker objects are directories.
func testImplicitDirs(t *testing.T, srv *fusetest.Server) {
	srv.Put(t, "imp/a/b/c.txt", []byte("deep"))
	srv.Put(t, "imp/a/x.txt", []byte("x"))
	m := mount(t, srv, s3fs.Options{})
	for _, d := range []string{"imp", "imp/a", "imp/a/b"} {
		if fi, err := os.Stat(m.path(d)); err != nil || !fi.IsDir() {
			t.Fatalf("stat %s: %v, %v; want a directory", d, fi, err)
		}
	}
	assertDir(t, m.path("imp/a"), "b", "x.txt")
	if got, err := os.ReadFile(m.path("imp/a/b/c.txt")); err != nil || string(got) != "deep" {
		t.Fatalf("read: %q, %v", got, err)
	}
	if err := os.Remove(m.path("imp/a")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir of a non-empty implicit directory: %v, want ENOTEMPTY", err)
	}
	if err := os.WriteFile(m.path("imp/a/b/new.txt"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := srv.MustGet(t, "imp/a/b/new.txt"); string(got) != "new" {
		t.Fatalf("bucket: %q", got)
	}
}

func assertDir(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("readdir %s = %v, want %v", dir, got, want)
	}
}

// testRename renames a file (over an existing one) and a directory tree.
func testRename(t *testing.T, srv *fusetest.Server) {
	m := mount(t, srv, s3fs.Options{})
	for _, d := range []string{"ren", "ren/d", "ren/d/sub"} {
		if err := os.Mkdir(m.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{"ren/f1": "one", "ren/f2": "two", "ren/d/a": "a", "ren/d/sub/b": "b"}
	for name, content := range files {
		if err := os.WriteFile(m.path(name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(m.path("ren/f1"), m.path("ren/f2")); err != nil {
		t.Fatalf("rename file: %v", err)
	}
	if got := srv.MustGet(t, "ren/f2"); string(got) != "one" {
		t.Fatalf("renamed file: %q", got)
	}
	srv.AssertAbsent(t, "ren/f1")
	if err := os.Rename(m.path("ren/d"), m.path("ren/e")); err != nil {
		t.Fatalf("rename directory: %v", err)
	}
	if got := srv.Keys(t, "ren/d/"); len(got) != 0 {
		t.Fatalf("keys left under the old directory: %v", got)
	}
	for name, want := range map[string]string{"ren/e/a": "a", "ren/e/sub/b": "b"} {
		if got := srv.MustGet(t, name); string(got) != want {
			t.Fatalf("%s: %q", name, got)
		}
		if got, err := os.ReadFile(m.path(name)); err != nil || string(got) != want {
			t.Fatalf("read %s: %q, %v", name, got, err)
		}
	}
	assertDir(t, m.path("ren"), "e", "f2")
}

// testTruncateAppend: append with O_APPEND, truncate shorter and longer.
func testTruncateAppend(t *testing.T, srv *fusetest.Server) {
	m := mount(t, srv, s3fs.Options{})
	if err := os.Mkdir(m.path("ta"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := m.path("ta/f")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(" world")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := srv.MustGet(t, "ta/f"); string(got) != "hello world" {
		t.Fatalf("after append: %q", got)
	}
	if err := os.Truncate(p, 3); err != nil {
		t.Fatal(err)
	}
	if got := srv.MustGet(t, "ta/f"); string(got) != "hel" {
		t.Fatalf("after truncate: %q", got)
	}
	if err := os.Truncate(p, 6); err != nil {
		t.Fatal(err)
	}
	if got := srv.MustGet(t, "ta/f"); string(got) != "hel\x00\x00\x00" {
		t.Fatalf("after extending truncate: %q", got)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != 6 {
		t.Fatalf("stat: %v, %v", fi, err)
	}
}

// testUnlinkWhileOpen: an open file stays readable after unlink.
func testUnlinkWhileOpen(t *testing.T, srv *fusetest.Server) {
	data := fusetest.RandomBytes(t, 300_000)
	srv.Put(t, "uw/f", data)
	m := mount(t, srv, s3fs.Options{})
	f, err := os.Open(m.path("uw/f"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	head := make([]byte, 10)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.path("uw/f")); err != nil {
		t.Fatalf("unlink: %v", err)
	}
	srv.AssertAbsent(t, "uw/f")
	if _, err := os.Stat(m.path("uw/f")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat after unlink: %v", err)
	}
	rest, err := io.ReadAll(f)
	if err != nil || fusetest.Sum(append(head, rest...)) != fusetest.Sum(data) {
		t.Fatalf("read after unlink: %d bytes, %v (mismatch)", len(head)+len(rest), err)
	}
}

// testKeyRevoked: with the mount's key revoked on the server, reads and
// uploads fail with EACCES and the written data stays staged; once the key
// is restored, fsync uploads one file and the background retry the other.
func testKeyRevoked(t *testing.T, srv *fusetest.Server) {
	srv.Put(t, "rv/existing.txt", []byte("old"))
	m := mount(t, srv, s3fs.Options{})
	// Look the new names up while the key works: with the key revoked the
	// lookup before create would fail with EACCES already.
	for _, name := range []string{"rv/by-fsync.txt", "rv/by-retry.txt"} {
		if _, err := os.Stat(m.path(name)); !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("stat %s: %v", name, err)
		}
	}
	if err := srv.Revoke(t.Context(), m.keys); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(m.path("rv/existing.txt")); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("read with revoked key: %v, want EACCES", err)
	}
	for _, name := range []string{"rv/by-fsync.txt", "rv/by-retry.txt"} {
		fusetest.WriteCloseFails(t, m.path(name), []byte("precious "+name), syscall.EACCES) // the key is revoked
		srv.AssertAbsent(t, name)
	}
	if got := m.fsys.Pending(); len(got) != 2 {
		t.Fatalf("Pending = %v, want both files", got)
	}
	if err := m.fsys.FlushAll(t.Context()); !errors.Is(err, s3fs.ErrNotUploaded) {
		t.Fatalf("FlushAll with revoked key: %v, want ErrNotUploaded", err)
	}
	if got, err := os.ReadFile(m.path("rv/by-fsync.txt")); err != nil || string(got) != "precious rv/by-fsync.txt" {
		t.Fatalf("read staged file: %q, %v", got, err)
	}

	if err := srv.Restore(t.Context(), m.keys); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.path("rv/by-fsync.txt"), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync after the key is back: %v", err)
	}
	if got := srv.MustGet(t, "rv/by-fsync.txt"); string(got) != "precious rv/by-fsync.txt" {
		t.Fatalf("bucket after fsync: %q", got)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	fusetest.Eventually(t, 40*time.Second, "background upload", func() bool {
		got, err := srv.Get(t, "rv/by-retry.txt")
		return err == nil && string(got) == "precious rv/by-retry.txt"
	})
	fusetest.Eventually(t, 5*time.Second, "nothing pending", func() bool { return len(m.fsys.Pending()) == 0 })
}

// testRotation runs rekey-fuse (control API and all) under a verified
// read/write load while keys are created on the server, swapped in and the
// old ones deleted on the server right after each swap.
func testRotation(t *testing.T, srv *fusetest.Server, every time.Duration) {
	issuer := prefetch(t, srv)
	initial, err := issuer.Issue(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	m := rekeyfuse.Run(t, srv, initial, "")
	rot := &loadcheck.Rotator{Keys: issuer, Swap: m.SwapApplied, Current: initial}
	st, swaps := fusetest.RotateUnderLoad(t, rot, every, 10*time.Second, loadcheck.Load{Dir: m.Dir, Workers: 4, MaxFileSize: 512 << 10, Metadata: true})
	rotations := len(swaps)
	t.Logf("%s: %d rotations (swap p50 %v, max %v), %d operations, %d failed, %d mismatched bytes, %.1f MiB verified",
		srv.Name, rotations, loadcheck.Percentile(swaps, 50), loadcheck.Percentile(swaps, 100),
		st.Ops.Load(), st.Failed.Load(), st.Mismatched.Load(), float64(st.Bytes.Load())/(1<<20))
	if st.Failed.Load() != 0 || st.Mismatched.Load() != 0 {
		t.Fatalf("failures under rotation: %d failed, %d mismatched bytes: %q", st.Failed.Load(), st.Mismatched.Load(), st.Errors())
	}
	if rotations < 4 || st.Ops.Load() < 16 {
		t.Fatalf("too little happened: %d rotations, %d operations", rotations, st.Ops.Load())
	}
}

// prefetched issues keys ahead of time, three at once: creating a user on
// MinIO takes one to three seconds on a loaded machine, which would
// otherwise set the rotation pace. What the test checks (swap, then revoke
// at once) keeps its pace.
type prefetched struct {
	*fusetest.Server
	ready chan keys.Keys
}

func prefetch(t *testing.T, srv *fusetest.Server) *prefetched {
	p := &prefetched{Server: srv, ready: make(chan keys.Keys, 6)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range 3 {
		wg.Go(func() {
			for ctx.Err() == nil {
				k, err := srv.Issue(ctx)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("issue keys: %v", err)
					}
					return
				}
				select {
				case p.ready <- k:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	return p
}

func (p *prefetched) Issue(ctx context.Context) (keys.Keys, error) {
	select {
	case k := <-p.ready:
		return k, nil
	case <-ctx.Done():
		return keys.Keys{}, ctx.Err()
	}
}

// testSmallFileRequests counts the requests of the benchmark's small-file
// phase: new files in a new directory cost one PutObject each; rewriting
// them through a second mount (cold caches) one PutObject each plus a
// HEAD for the first two names and one listing ahead for the rest.
func testSmallFileRequests(t *testing.T, srv *fusetest.Server) {
	const n = 40
	write := func(m *mounted) map[string]uint64 {
		before := m.fsys.RequestCounts()
		fusetest.WriteSmallFiles(t, m.path("sf"), n, 4096)
		return fusetest.CountsSince(m.fsys.RequestCounts(), before)
	}
	m := mount(t, srv, s3fs.Options{})
	if err := os.Mkdir(m.path("sf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := write(m); len(got) != 2 || got["PutObject"] != n || got["ListObjectsV2"] != 1 {
		t.Fatalf("new files: %v, want %d PutObject and one ListObjectsV2 of the new directory", got, n)
	}
	m2 := mount(t, srv, s3fs.Options{})
	if _, err := os.Stat(m2.path("sf")); err != nil {
		t.Fatal(err)
	}
	got := write(m2)
	t.Logf("%s: rewriting %d files with cold caches: %v", srv.Name, n, got)
	// One HeadObject per file: its POSIX metadata, which the rewrite keeps.
	if got["PutObject"] != n || got["HeadObject"] > n+2 || got["ListObjectsV2"] > 1 || len(got) > 3 {
		t.Fatalf("rewrites: %v, want %d PutObject, at most %d HeadObject and 1 ListObjectsV2", got, n, n+2)
	}
}
