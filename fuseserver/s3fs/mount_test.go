package s3fs

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func mountWith(dir string, f *FS, opts *fs.Options) (*fuse.Server, error) {
	return fs.Mount(dir, f.Root(), opts)
}

func renameat2(oldpath, newpath string, flags uint) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, flags)
	if err != nil {
		return &os.LinkError{Op: "renameat2", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

// TestServeFD plays the parent (csidriver): it opens /dev/fuse, mounts it
// with mount(2), and hands the fd to Serve.
func TestServeFD(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, false)
	dir := t.TempDir()
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/fuse: %v", err)
	}
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,max_read=%d,default_permissions", fd, maxWrite)
	if err := syscall.Mount("rekey:"+testBucket, dir, "fuse.rekey", syscall.MS_NOSUID|syscall.MS_NODEV, data); err != nil {
		_ = syscall.Close(fd)
		t.Fatalf("mount: %v", err)
	}
	srv, err := Serve(fd, e.fsys, false)
	if err != nil {
		_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() {
		// The kernel may still hold the mount busy for a moment after the
		// last close (RELEASE is asynchronous).
		var err error
		for range 50 {
			if err = syscall.Unmount(dir, 0); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("unmount: %v", err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("server did not stop after unmount")
		}
	})
	// This process reads and writes its own fd-mode mount: switch poll off
	// first (Mount does that itself; Serve cannot).
	if err := DisablePoll(dir); err != nil {
		t.Fatal(err)
	}
	if err := srv.Unmount(); err == nil {
		t.Fatalf("Unmount of an fd-mode server should fail (it does not know the mountpoint)")
	}
	if err := os.WriteFile(dir+"/hello.txt", []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := e.mustGet("hello.txt"); string(got) != "hi" {
		t.Fatalf("bucket: %q", got)
	}
	if _, err := Serve(0, e.fsys, false); err == nil {
		t.Fatalf("Serve(0) succeeded")
	}
}

// TestKernelReadahead: Mount raises the mount's kernel read-ahead.
func TestKernelReadahead(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	var st unix.Stat_t
	if err := unix.Stat(e.dir, &st); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev)))
	if err != nil {
		t.Skipf("no sysfs: %v", err)
	}
	if want := fmt.Sprint(KernelReadaheadKB); strings.TrimSpace(string(got)) != want {
		t.Fatalf("read_ahead_kb = %s, want %s", got, want)
	}
}

// TestReaddirPlus: by default every listed entry comes with attributes
// (READDIRPLUS); with ReaddirPlusAuto a plain listing (readdir without stat)
// gets them with its first page only, so go-fuse makes no inode for most
// entries.
func TestReaddirPlus(t *testing.T) {
	t.Parallel()
	const n = 300
	for _, tc := range []struct {
		auto    bool
		wantAll bool
	}{{auto: false, wantAll: true}, {auto: true, wantAll: false}} {
		t.Run(fmt.Sprintf("auto=%v", tc.auto), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, Options{ReaddirPlusAuto: tc.auto}, false)
			for i := range n {
				e.put(fmt.Sprintf("d/entry-with-a-longish-name-%04d", i), []byte("x"))
			}
			e.dir = t.TempDir()
			srv, err := Mount(e.dir, e.fsys, false)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unmount(t, srv) })
			d, err := os.Open(e.path("d"))
			if err != nil {
				t.Fatal(err)
			}
			names, err := d.Readdirnames(-1)
			_ = d.Close()
			if err != nil || len(names) != n {
				t.Fatalf("readdir: %d names, %v", len(names), err)
			}
			dir := e.fsys.root.GetChild("d")
			if dir == nil {
				t.Fatal("no inode for d")
			}
			got := len(dir.Children())
			t.Logf("auto=%v: %d of %d entries got an inode from the listing", tc.auto, got, n)
			if tc.wantAll && got != n {
				t.Fatalf("%d inodes, want %d (READDIRPLUS for every page)", got, n)
			}
			if !tc.wantAll && got >= n/2 {
				t.Fatalf("%d inodes for a plain listing of %d, want only the first page's", got, n)
			}
		})
	}
}
