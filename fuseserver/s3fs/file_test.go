package s3fs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"rekey.dev/rekey/internal/fusetest"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{MultipartThreshold: 5 << 20, PartSize: MinPartSize}, true)
	tests := []struct {
		name      string
		size      int
		chunk     int
		multipart bool
	}{
		{name: "small.txt", size: 1234, chunk: 1 << 20},
		{name: "empty", size: 0, chunk: 1},
		{name: "exactly-threshold.bin", size: 5 << 20, chunk: 1 << 20},
		{name: "chunked-20MiB.bin", size: 20<<20 + 12345, chunk: 1 << 20, multipart: true},
		{name: "multipart-odd-chunks.bin", size: 11<<20 + 7, chunk: 300_001, multipart: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := randomBytes(t, tc.size)
			partsBefore, completesBefore := e.api.parts.Load(), e.api.completes.Load()
			if err := writeChunks(e.path(tc.name), data, tc.chunk); err != nil {
				t.Fatalf("write: %v", err)
			}
			if got := e.mustGet(tc.name); sum(got) != sum(data) {
				t.Fatalf("bucket object: got %d bytes sha %s, want %d bytes sha %s", len(got), sum(got), len(data), sum(data))
			}
			head, err := e.admin.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(tc.name)})
			if err != nil {
				t.Fatalf("head: %v", err)
			}
			if got, want := aws.ToString(head.ContentType), contentType(tc.name); got != want {
				t.Fatalf("Content-Type %q, want %q", got, want)
			}
			back, err := os.ReadFile(e.path(tc.name))
			if err != nil {
				t.Fatalf("read back: %v", err)
			}
			if sum(back) != sum(data) {
				t.Fatalf("read back: got %d bytes, want %d (sha mismatch)", len(back), len(data))
			}
			st, err := os.Stat(e.path(tc.name))
			if err != nil || st.Size() != int64(tc.size) {
				t.Fatalf("stat: size %v err %v, want %d", st, err, tc.size)
			}
			parts, completes := e.api.parts.Load()-partsBefore, e.api.completes.Load()-completesBefore
			if tc.multipart {
				wantParts := int64((tc.size + int(MinPartSize) - 1) / int(MinPartSize))
				if completes != 1 || parts != wantParts {
					t.Fatalf("multipart: %d parts, %d completes; want %d parts, 1 complete", parts, completes, wantParts)
				}
			} else if parts != 0 || completes != 0 {
				t.Fatalf("small upload used multipart: %d parts", parts)
			}
		})
	}
	if p := e.fsys.Pending(); len(p) != 0 {
		t.Fatalf("Pending after successful closes: %v", p)
	}
}

func TestRangedReads(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	data := randomBytes(t, 3<<20+333)
	e.put("ranged.bin", data)
	f, err := os.Open(e.path("ranged.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tests := []struct {
		name    string
		off, n  int
		wantN   int
		wantEOF bool
	}{
		{name: "start", off: 0, n: 4096, wantN: 4096},
		{name: "middle unaligned", off: 1<<20 + 17, n: 100_000, wantN: 100_000},
		{name: "backwards", off: 12345, n: 777, wantN: 777},
		{name: "crosses window", off: 2<<20 - 10, n: 1 << 20, wantN: 1 << 20},
		{name: "tail", off: len(data) - 100, n: 4096, wantN: 100, wantEOF: true},
		{name: "past end", off: len(data) + 10, n: 10, wantN: 0, wantEOF: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, tc.n)
			n, err := f.ReadAt(buf, int64(tc.off))
			if n != tc.wantN {
				t.Fatalf("ReadAt(%d, %d) = %d, %v; want %d bytes", tc.off, tc.n, n, err, tc.wantN)
			}
			if (err == io.EOF) != tc.wantEOF || (err != nil && err != io.EOF) {
				t.Fatalf("ReadAt err = %v, want EOF %v", err, tc.wantEOF)
			}
			if n > 0 && !bytes.Equal(buf[:n], data[tc.off:tc.off+n]) {
				t.Fatalf("ReadAt(%d, %d): wrong bytes", tc.off, tc.n)
			}
		})
	}
}

func TestModify(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	orig := []byte("0123456789abcdefghij")
	tests := []struct {
		name   string
		modify func(path string) error
		want   []byte
	}{
		{
			name:   "overwrite",
			modify: func(p string) error { return os.WriteFile(p, []byte("new"), 0o644) },
			want:   []byte("new"),
		},
		{
			name: "append",
			modify: func(p string) error {
				f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					return err
				}
				if _, err := f.Write([]byte("+tail")); err != nil {
					return err
				}
				return f.Close()
			},
			want: append(append([]byte{}, orig...), "+tail"...),
		},
		{
			name: "write in place",
			modify: func(p string) error {
				f, err := os.OpenFile(p, os.O_WRONLY, 0)
				if err != nil {
					return err
				}
				if _, err := f.WriteAt([]byte("XY"), 3); err != nil {
					return err
				}
				return f.Close()
			},
			want: []byte("012XY56789abcdefghij"),
		},
		{name: "truncate smaller", modify: func(p string) error { return os.Truncate(p, 5) }, want: orig[:5]},
		{name: "truncate larger", modify: func(p string) error { return os.Truncate(p, 25) }, want: append(append([]byte{}, orig...), 0, 0, 0, 0, 0)},
		{name: "truncate zero", modify: func(p string) error { return os.Truncate(p, 0) }, want: []byte{}},
		{
			name: "ftruncate on handle",
			modify: func(p string) error {
				f, err := os.OpenFile(p, os.O_RDWR, 0)
				if err != nil {
					return err
				}
				if err := f.Truncate(8); err != nil {
					return err
				}
				if _, err := f.WriteAt([]byte("!"), 8); err != nil {
					return err
				}
				return f.Close()
			},
			want: []byte("01234567!"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := "modify-" + tc.name
			e.put(key, orig)
			if err := tc.modify(e.path(key)); err != nil {
				t.Fatalf("modify: %v", err)
			}
			if got := e.mustGet(key); !bytes.Equal(got, tc.want) {
				t.Fatalf("bucket: got %q, want %q", got, tc.want)
			}
			got, err := os.ReadFile(e.path(key))
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("mount: got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestSharedStaging(t *testing.T) {
	t.Parallel()
	// Without the write cache, which would keep the clean staging file.
	e := newEnv(t, Options{WriteCacheSize: -1}, true)
	p := e.path("shared.txt")
	a, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteAt([]byte("hello "), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt([]byte("world"), 6); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 11)
	if _, err := b.ReadAt(buf, 0); err != nil || string(buf) != "hello world" {
		t.Fatalf("read through second handle: %q, %v", buf, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got := e.mustGet("shared.txt"); string(got) != "hello world" {
		t.Fatalf("bucket after first close: %q", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if len(e.fsys.Pending()) != 0 {
		t.Fatalf("pending: %v", e.fsys.Pending())
	}
	eventually(t, 5*time.Second, "staging files removed", func() bool {
		ents, _ := stagingEntries(e.fsys.opts.StagingDir)
		return len(ents) == 0
	})
}

func TestContentType(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"a.txt":      "text/plain", // s3fs's mime table: no charset
		"e.html":     "text/html",
		"dir/b.json": "application/json",
		"c.PNG":      "image/png",
		"noext":      "application/octet-stream",
		"d.unknown1": "application/octet-stream",
	} {
		if got := contentType(name); got != want {
			t.Errorf("contentType(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestStatCache(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		ttl         time.Duration
		wantVisible bool
	}{
		{name: "negative lookups are cached", ttl: time.Minute, wantVisible: false},
		{name: "caching disabled", ttl: -1, wantVisible: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, Options{StatCacheTTL: tc.ttl}, true)
			if _, err := os.Stat(e.path("late")); !errors.Is(err, syscall.ENOENT) {
				t.Fatalf("stat before: %v", err)
			}
			e.put("late", []byte("x"))
			_, err := os.Stat(e.path("late"))
			if visible := err == nil; visible != tc.wantVisible {
				t.Fatalf("object created behind the mount: stat err %v, want visible %v", err, tc.wantVisible)
			}
			// Names the mount creates itself are visible at once either way.
			if _, err := os.Stat(e.path("mine")); !errors.Is(err, syscall.ENOENT) {
				t.Fatalf("stat mine before: %v", err)
			}
			if err := os.WriteFile(e.path("mine"), []byte("m"), 0o600); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(e.path("mine")); err != nil || fi.Size() != 1 {
				t.Fatalf("stat mine: %v %v", fi, err)
			}
		})
	}
}

// TestMultipartFailure: a failed part fails the close with EIO, aborts the
// upload and keeps the data; fsync on a fresh handle uploads it later.
func TestMultipartFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{MultipartThreshold: 5 << 20, PartSize: MinPartSize}, true)
	data := randomBytes(t, 11<<20)
	e.api.failParts.Store(true)
	if err := writeChunks(e.path("big.bin"), data, 1<<20); !errors.Is(err, syscall.EIO) {
		t.Fatalf("close with failing parts: %v, want EIO", err)
	}
	// No part reached the server, so nothing was released from staging
	// and the upload is aborted (in the background).
	eventually(t, 10*time.Second, "failed multipart upload aborted", func() bool { return e.api.aborts.Load() >= 1 })
	e.assertAbsent("big.bin")
	e.api.failParts.Store(false)
	f, err := os.Open(e.path("big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := e.mustGet("big.bin"); sum(got) != sum(data) {
		t.Fatalf("bucket object differs after retry")
	}
}

// TestMetadataKept: chmod, chown and utimens are kept in the object's
// metadata under s3fs's names, with a server-side copy (no upload, the
// data unchanged); an object without metadata shows the mount's defaults.
func TestMetadataKept(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{UID: 1234, GID: 5678, Umask: 0o027}, true)
	e.put("m", []byte("data"))
	p := e.path("m")
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o640 || st.Uid != 1234 || st.Gid != 5678 {
		t.Fatalf("object without metadata: mode %v uid %d gid %d; want 0640 1234 5678", fi.Mode(), st.Uid, st.Gid)
	}
	before := e.fsys.RequestCounts()
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatalf("chmod: %v", err)
	}
	if err := os.Chown(p, 1, 2); err != nil {
		t.Fatalf("chown: %v", err)
	}
	mtime := time.Unix(1_000_000_000, 123456789)
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatalf("utimens: %v", err)
	}
	if got := fusetest.CountsSince(e.fsys.RequestCounts(), before); got["PutObject"] != 0 || got["CopyObject"] != 3 {
		t.Fatalf("requests %v: want 3 CopyObject and no PutObject", got)
	}
	fi, err = os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o600 || st.Uid != 1 || st.Gid != 2 || !fi.ModTime().Equal(mtime) {
		t.Fatalf("mode %v uid %d gid %d mtime %v; want 0600 1 2 %v", fi.Mode(), st.Uid, st.Gid, fi.ModTime(), mtime)
	}
	head, err := e.admin.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String("m")})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"mode": "33152", "uid": "1", "gid": "2", "mtime": "1000000000.123456789"}
	for k, v := range want {
		if got := head.Metadata[k]; got != v {
			t.Errorf("x-amz-meta-%s = %q, want %q (all: %v)", k, got, v, head.Metadata)
		}
	}
	if got := e.mustGet("m"); string(got) != "data" {
		t.Fatalf("object changed: %q", got)
	}
	root, err := os.Stat(e.dir)
	if err != nil || root.Mode().Perm() != 0o755 {
		t.Fatalf("mount root: %v %v, want 0755", root, err)
	}
}

// TestMetadataOfCleanOpenFile: a chmod of a file whose data is uploaded
// but which is still open for writing reaches the object at once. (The
// kernel sends RELEASE after close(2) returns, so a chmod right after a
// close meets such a file; staging the change for an upload that never
// comes lost it: seen in TestCrossTool.)
func TestMetadataOfCleanOpenFile(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	f, err := os.Create(e.path("open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil { // uploaded: clean, still open for writing
		t.Fatal(err)
	}
	if err := os.Chmod(e.path("open"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	head, err := e.admin.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String("open")})
	if err != nil {
		t.Fatal(err)
	}
	if got := head.Metadata["mode"]; got != "33152" { // 0100600
		t.Fatalf("x-amz-meta-mode = %q after chmod 0600 of an open clean file, want 33152 (all: %v)", got, head.Metadata)
	}
	if got := e.mustGet("open"); string(got) != "data" {
		t.Fatalf("object: %q", got)
	}
}

// TestMetadataForced: uid, gid and umask given as options apply to every
// entry, whatever its metadata says (s3fs's rule).
func TestMetadataForced(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{UID: 1234, GID: 5678, Umask: 0o077, ForceUID: true, ForceGID: true, ForceUmask: true}, true)
	e.bucket.PutMeta(t, "m", []byte("x"), map[string]string{"mode": "33279", "uid": "7", "gid": "8"}) // 0100777
	fi, err := os.Stat(e.path("m"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o700 || st.Uid != 1234 || st.Gid != 5678 {
		t.Fatalf("mode %v uid %d gid %d; want 0700 1234 5678", fi.Mode(), st.Uid, st.Gid)
	}
}

// TestUnlinkWhileOpen: an open file stays readable after unlink, and its
// staged copy goes away with the last close.
func TestUnlinkWhileOpen(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	data := randomBytes(t, 300_000)
	e.put("u.bin", data)
	f, err := os.Open(e.path("u.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.path("u.bin")); err != nil {
		t.Fatal(err)
	}
	e.assertAbsent("u.bin")
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after unlink: %d bytes, %v; want the %d bytes", len(got), err, len(data))
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "staging emptied", func() bool {
		ents, _ := stagingEntries(e.fsys.opts.StagingDir)
		return len(ents) == 0
	})
}
