//go:build integration

package s3fssuite

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"rekey.dev/rekey/internal/fusetest"
	"rekey.dev/rekey/internal/fusetest/rekeyfuse"
)

// TestCrossTool: what s3fs (Debian's 1.90) writes through its mount, rekey
// reads through its own mount of the same bucket, and the other way round:
// content, mode, owner, mtime, symlinks, directory modes and extended
// attributes, on MinIO and versitygw.
func TestCrossTool(t *testing.T) {
	needS3fs(t)
	for _, start := range []func(testing.TB) *fusetest.Server{fusetest.StartMinIO, fusetest.StartVersityGW} {
		srv := start(t)
		t.Run(srv.Name, func(t *testing.T) {
			s3fs := mountS3fs(t, srv, fusetest.Bucket)
			rk := rekeyfuse.RunWith(t, srv, srv.Admin, rekeyfuse.Options{MountOptions: "stat_cache_expire=1"})
			for _, d := range []struct{ name, from, to string }{
				{"s3fs-to-rekey", s3fs.mp, rk.Dir},
				{"rekey-to-s3fs", rk.Dir, s3fs.mp},
			} {
				t.Run(d.name, func(t *testing.T) {
					writeTree(t, filepath.Join(d.from, d.name))
					checkTree(t, filepath.Join(d.to, d.name))
				})
			}
		})
	}
}

var crossMtime = time.Unix(1_000_000_000, 0).UTC()

func writeTree(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "f.txt")
	if err := os.WriteFile(f, []byte("shared data"), 0o644); err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { return os.Chmod(f, 0o600) },
		func() error { return os.Chown(f, 1234, 5678) },
		func() error { return unix.Setxattr(f, "user.origin", []byte("cross"), 0) },
		func() error { return os.Chtimes(f, crossMtime, crossMtime) },
		func() error { return os.Symlink("f.txt", filepath.Join(dir, "link")) },
		func() error { return os.Mkdir(filepath.Join(dir, "sub"), 0o700) },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
}

func checkTree(t *testing.T, dir string) {
	t.Helper()
	f := filepath.Join(dir, "f.txt")
	if got, err := os.ReadFile(f); err != nil || string(got) != "shared data" {
		t.Fatalf("read: %q %v", got, err)
	}
	// s3fs may send a metadata change after the call returned (its
	// cache holds it while the file is in use); both stat caches last 1s.
	var got string
	want := fmt.Sprintf("mode -rw------- uid 1234 gid 5678 mtime %v", crossMtime)
	deadline := time.Now().Add(10 * time.Second)
	for got != want && time.Now().Before(deadline) {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		got = fmt.Sprintf("mode %v uid %d gid %d mtime %v", fi.Mode(), st.Uid, st.Gid, fi.ModTime().UTC())
		if got != want {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if got != want {
		t.Errorf("f.txt: %s; want %s", got, want)
	}
	buf := make([]byte, 64)
	if n, err := unix.Getxattr(f, "user.origin", buf); err != nil || string(buf[:n]) != "cross" {
		t.Errorf("xattr user.origin: %q %v", buf[:max(n, 0)], err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "link")); err != nil || target != "f.txt" {
		t.Errorf("readlink: %q %v", target, err)
	}
	if sub, err := os.Stat(filepath.Join(dir, "sub")); err != nil || !sub.IsDir() || sub.Mode().Perm() != 0o700 {
		t.Errorf("sub: %v %v, want a directory 0700", sub, err)
	}
}
