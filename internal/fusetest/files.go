package fusetest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// RandomBytes returns n random bytes.
func RandomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// Sum is the hex SHA-256 of b.
func Sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// WriteChunks writes data to path in chunks of chunk bytes and closes it.
func WriteChunks(path string, data []byte, chunk int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	for off := 0; off < len(data); off += chunk {
		if _, err := f.Write(data[off:min(off+chunk, len(data))]); err != nil {
			_ = f.Close()
			return err
		}
	}
	return f.Close()
}

// WriteCloseFails creates path and writes data to it, and fails the test
// unless the close fails with want (an upload the server refuses, say).
func WriteCloseFails(t testing.TB, path string, data []byte, want error) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("create %s: %v", path, err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	if err := f.Close(); !errors.Is(err, want) {
		t.Fatalf("close %s: %v, want %v", path, err, want)
	}
}

// Eventually polls cond until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Unmount unmounts srv, retrying while the kernel still holds the mount
// busy (RELEASE is asynchronous).
func Unmount(t testing.TB, srv *fuse.Server) {
	t.Helper()
	var err error
	for range 50 {
		if err = srv.Unmount(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("unmount: %v", err)
}

// WriteSmallFiles creates, writes, fsyncs and closes n files of size bytes
// named f0000, f0001, ... in dir: the small-file workload of the
// benchmarks.
//
// No process is forked while a file is open: a child of a fork holds a copy
// of every open file until its exec closes them (O_CLOEXEC), and that close
// reaches the FUSE server as a FLUSH, which uploads a dirty file like any
// close. Tests that count requests run beside tests that exec mc or a
// server, and one such fork between the truncate and the write of a file
// once cost an extra PutObject (CI, TestVersityGW/SmallFileRequests).
func WriteSmallFiles(t testing.TB, dir string, n, size int) {
	t.Helper()
	data := make([]byte, size)
	for i := range n {
		writeFileNoFork(t, filepath.Join(dir, fmt.Sprintf("f%04d", i)), data)
	}
}

// writeFileNoFork creates, writes, fsyncs and closes name while holding
// syscall.ForkLock for reading, which os/exec takes for writing to fork.
func writeFileNoFork(t testing.TB, name string, data []byte) {
	t.Helper()
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// CountsSince returns, by operation, the requests counted since before
// (both as FS.RequestCounts returns them), leaving out zeros.
func CountsSince(now, before map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64)
	for op, n := range now {
		if d := n - before[op]; d > 0 {
			out[op] = d
		}
	}
	return out
}
