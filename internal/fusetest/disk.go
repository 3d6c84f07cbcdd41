package fusetest

import (
	"math"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// MountTmpfs mounts a tmpfs of sizeMiB at dir (created if missing) until
// the test ends: a real, small filesystem to fill. It skips without root.
func MountTmpfs(t testing.TB, dir string, sizeMiB int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0700,size="+strconv.Itoa(sizeMiB)+"m"); err != nil {
		t.Fatalf("mount tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
}

// FreeBytes is the space an unprivileged writer has left on dir's
// filesystem.
func FreeBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	return int64(min(fs.Bavail, uint64(math.MaxInt64/max(fs.Bsize, 1)))) * fs.Bsize
}
