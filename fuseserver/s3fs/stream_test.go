package s3fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"rekey.dev/rekey/fuseserver/journal"
)

// TestStreamingUpload: parts of a sequentially written file go up while it
// is written; close completes the object with the right bytes.
func TestStreamingUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{MultipartThreshold: 5 << 20, PartSize: MinPartSize}, true)
	data := randomBytes(t, 17<<20+99)
	f, err := os.Create(e.path("stream.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data[:16<<20]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "parts uploaded before close", func() bool { return e.api.parts.Load() >= 2 })
	if _, err := f.Write(data[16<<20:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := e.mustGet("stream.bin"); !bytes.Equal(got, data) {
		t.Fatalf("streamed object differs (%d bytes, want %d)", len(got), len(data))
	}
	if p := e.api.parts.Load(); p != 4 {
		t.Fatalf("%d parts uploaded, want 4", p)
	}
	if len(e.fsys.Pending()) != 0 {
		t.Fatalf("pending after close: %v", e.fsys.Pending())
	}
}

// TestStreamingRewrite: a write into a part handed to the upload but not
// acknowledged yet (nothing released from staging) breaks the stream; close
// uploads the staged file whole, with the rewrite.
func TestStreamingRewrite(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{MultipartThreshold: 5 << 20, PartSize: MinPartSize}, true)
	data := randomBytes(t, 12<<20)
	f, err := os.Create(e.path("rewrite.bin"))
	if err != nil {
		t.Fatal(err)
	}
	e.api.holdParts.Lock()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	patch := []byte("rewritten at the start")
	copy(data, patch)
	if _, err := f.WriteAt(patch, 0); err != nil {
		t.Fatal(err)
	}
	e.api.holdParts.Unlock()
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := e.mustGet("rewrite.bin"); !bytes.Equal(got, data) {
		t.Fatalf("object after rewrite differs")
	}
	eventually(t, 10*time.Second, "broken stream aborted", func() bool { return e.api.aborts.Load() >= 1 })
}

// stagingBytes is the disk space the staging files of e take now.
func stagingBytes(t *testing.T, e *env) int64 {
	t.Helper()
	entries, err := stagingEntries(e.fsys.opts.StagingDir)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, ent := range entries {
		if strings.HasSuffix(ent.Name(), journal.RecordSuffix) {
			continue // the journal's records are not staged data
		}
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(e.fsys.opts.StagingDir, ent.Name()), &st); err == nil {
			total += st.Blocks * 512
		}
	}
	return total
}

// writeReleased creates name, writes data to it in 1 MiB writes and
// returns the open file once the upload has released at least two parts
// from staging. It returns the most staging disk seen after any write.
func writeReleased(t *testing.T, e *env, name string, data []byte) (*os.File, int64) {
	t.Helper()
	f, err := os.Create(e.path(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	var peak int64
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := f.Write(data[off:min(off+1<<20, len(data))]); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
		peak = max(peak, stagingBytes(t, e))
	}
	// Acknowledged parts are released on the next write: rewrite the last
	// byte until two parts are gone from staging.
	eventually(t, 10*time.Second, "two parts released from staging", func() bool {
		if _, err := f.WriteAt(data[len(data)-1:], int64(len(data)-1)); err != nil {
			t.Fatal(err)
		}
		return stagingBytes(t, e) <= int64(len(data))-2*MinPartSize
	})
	return f, peak
}

// TestStreamingBoundedStaging: a streamed file needs a bounded window of
// staging disk, not a full copy; the object is complete and the staging
// file gone after close.
func TestStreamingBoundedStaging(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{MultipartThreshold: 5 << 20, PartSize: MinPartSize}, true)
	data := randomBytes(t, 96<<20+123)
	f, peak := writeReleased(t, e, "big.bin", data)
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	// After a write returns: at most streamWindow parts queued and not
	// acknowledged (acknowledged ones are released before it returns) and
	// the part being written; two parts of slack for block allocation.
	limit := int64(streamWindow+3) * MinPartSize
	t.Logf("staging peak %d MiB for a %d MiB file (limit %d MiB)", peak>>20, len(data)>>20, limit>>20)
	if peak > limit {
		t.Fatalf("staging peaked at %d bytes, want at most %d", peak, limit)
	}
	if got := e.mustGet("big.bin"); sum(got) != sum(data) {
		t.Fatalf("streamed object differs")
	}
	if used := stagingBytes(t, e); used != 0 {
		t.Fatalf("staging holds %d bytes after close", used)
	}
	if a := e.api.aborts.Load(); a != 0 {
		t.Fatalf("%d uploads aborted", a)
	}
}

// TestStreamingReadReleased: reading back a released range completes the
// upload and reads the object; the writer then goes on appending, and the
// final object has every byte.
func TestStreamingReadReleased(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{MultipartThreshold: 5 << 20, PartSize: MinPartSize}, true)
	data := randomBytes(t, 30<<20)
	f, _ := writeReleased(t, e, "rb.bin", data[:20<<20+777])
	r, err := os.Open(e.path("rb.bin"))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	if _, err := r.ReadAt(got, 1<<20); err != nil {
		t.Fatalf("read back a released range: %v", err)
	}
	if !bytes.Equal(got, data[1<<20:2<<20]) {
		t.Fatal("read back a released range: wrong bytes")
	}
	_ = r.Close()
	if _, err := f.Write(data[20<<20+777:]); err != nil {
		t.Fatalf("append after read-back: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := e.mustGet("rb.bin"); sum(got) != sum(data) {
		t.Fatalf("object differs after read-back and append")
	}
}

// TestStreamingReleasedThenChanged: a write into a released range, or a
// rename, completes the upload first (settle); the write then stages the
// object again, the rename copies it. Close leaves the right object.
func TestStreamingReleasedThenChanged(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// change acts on the open file f (written from data as "src")
		// and returns the key that must hold want afterwards.
		change func(t *testing.T, e *env, f *os.File, want []byte) string
	}{
		{"rewrite", func(t *testing.T, e *env, f *os.File, want []byte) string {
			patch := []byte("patched inside the first part")
			copy(want[100:], patch)
			if _, err := f.WriteAt(patch, 100); err != nil {
				t.Fatalf("rewrite a released range: %v", err)
			}
			return "src"
		}},
		{"rename", func(t *testing.T, e *env, f *os.File, want []byte) string {
			if err := os.Rename(e.path("src"), e.path("dst")); err != nil {
				t.Fatalf("rename: %v", err)
			}
			return "dst"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, Options{MultipartThreshold: 5 << 20, PartSize: MinPartSize}, true)
			data := randomBytes(t, 24<<20)
			f, _ := writeReleased(t, e, "src", data)
			key := tc.change(t, e, f, data)
			if err := f.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if got := e.mustGet(key); sum(got) != sum(data) {
				t.Fatalf("%s differs after %s", key, tc.name)
			}
			if key != "src" {
				e.assertAbsent("src")
			}
		})
	}
}

// TestStreamingUnlinkReleased: after an unlink the released ranges of the
// still open file are gone; reading them fails with EIO instead of
// returning zeros.
func TestStreamingUnlinkReleased(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{MultipartThreshold: 5 << 20, PartSize: MinPartSize}, true)
	data := randomBytes(t, 24<<20)
	f, _ := writeReleased(t, e, "gone.bin", data)
	if err := os.Remove(e.path("gone.bin")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a released range after unlink: %v, want EIO", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	e.assertAbsent("gone.bin")
}

// TestStreamingFailureAfterRelease: once parts were released, a failed
// part or a failed completion fails the close but does not abort the
// upload; the background retry uploads what is missing, completes it with
// the parts the server has, and the object is whole.
func TestStreamingFailureAfterRelease(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		fail *atomic.Bool
	}{
		{"part", nil}, {"complete", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, Options{MultipartThreshold: 5 << 20, PartSize: MinPartSize}, true)
			fail := &e.api.failParts
			if tc.name == "complete" {
				fail = &e.api.failCompletes
			}
			data := randomBytes(t, 30<<20+5)
			f, _ := writeReleased(t, e, "retry.bin", data[:20<<20+777])
			fail.Store(true)
			if _, err := f.Write(data[20<<20+777:]); err != nil {
				t.Fatalf("write: %v", err)
			}
			if err := f.Close(); !errors.Is(err, syscall.EIO) {
				t.Fatalf("close while %s fails: %v, want EIO", tc.name, err)
			}
			if a := e.api.aborts.Load(); a != 0 {
				t.Fatalf("upload aborted %d times after parts were released", a)
			}
			if p := e.fsys.Pending(); len(p) != 1 {
				t.Fatalf("pending %v, want retry.bin", p)
			}
			fail.Store(false)
			eventually(t, 20*time.Second, "background retry completes", func() bool { return len(e.fsys.Pending()) == 0 })
			if got := e.mustGet("retry.bin"); sum(got) != sum(data) {
				t.Fatalf("object differs after retry")
			}
		})
	}
}

// TestStreamingFinishStallsOnlyItsFile: while a close waits for the parts
// of a streamed upload (held back here), a listing of its directory and an
// open of the file wait for it, but nothing else does: other directories,
// other files and new files are served meanwhile.
func TestStreamingFinishStallsOnlyItsFile(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{MultipartThreshold: 5 << 20, PartSize: MinPartSize}, true)
	e.put("other.txt", []byte("other"))
	e.put("d2/old.txt", []byte("old"))
	data := randomBytes(t, 12<<20)
	f, err := os.Create(e.path("big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	e.api.holdParts.Lock()
	held := true
	defer func() {
		if held {
			e.api.holdParts.Unlock()
		}
	}()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	st := e.fsys.stateOf("big.bin")
	eventually(t, 10*time.Second, "close waiting for the held parts", func() bool {
		if st.mu.TryLock() {
			st.mu.Unlock()
			return false
		}
		return true
	})

	// These wait for the upload: the size is not final until it is done.
	listed := make(chan []string, 1)
	go func() {
		ents, err := os.ReadDir(e.dir)
		if err != nil {
			t.Errorf("readdir while finishing: %v", err)
		}
		var names []string
		for _, ent := range ents {
			names = append(names, ent.Name())
		}
		listed <- names
	}()
	readBack := make(chan []byte, 1)
	go func() {
		b, err := os.ReadFile(e.path("big.bin"))
		if err != nil {
			t.Errorf("read while finishing: %v", err)
		}
		readBack <- b
	}()
	time.Sleep(200 * time.Millisecond) // let both reach the file system

	others := make(chan error, 1)
	go func() {
		others <- func() error {
			if _, err := os.ReadDir(e.path("d2")); err != nil {
				return err
			}
			b, err := os.ReadFile(e.path("other.txt"))
			if err != nil {
				return err
			}
			if string(b) != "other" {
				return fmt.Errorf("read other.txt = %q", b)
			}
			return os.WriteFile(e.path("d2/new.txt"), []byte("new"), 0o644)
		}()
	}()
	select {
	case err := <-others:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("other files waited for an upload finishing elsewhere")
	}
	if got := e.mustGet("d2/new.txt"); string(got) != "new" {
		t.Fatalf("d2/new.txt = %q", got)
	}
	select {
	case err := <-closed:
		t.Fatalf("close returned (%v) while its parts were held back", err)
	default:
	}

	e.api.holdParts.Unlock()
	held = false
	if err := <-closed; err != nil {
		t.Fatalf("close: %v", err)
	}
	if names := <-listed; !slices.Contains(names, "big.bin") || !slices.Contains(names, "other.txt") {
		t.Fatalf("listing while finishing = %v", names)
	}
	if b := <-readBack; !bytes.Equal(b, data) {
		t.Fatalf("read while finishing: %d bytes, differs from the %d written", len(b), len(data))
	}
	if got := e.mustGet("big.bin"); !bytes.Equal(got, data) {
		t.Fatal("big.bin differs in the bucket")
	}
}
