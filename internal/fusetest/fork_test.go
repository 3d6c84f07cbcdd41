package fusetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// gatedFile is a FUSE file whose FLUSH, while a gate is set, reports
// itself and waits until the gate is closed.
type gatedFile struct {
	fs.Inode
	mu      sync.Mutex
	gate    chan struct{}
	flushed chan struct{}
}

func (f *gatedFile) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *gatedFile) Flush(context.Context, fs.FileHandle) syscall.Errno {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate == nil {
		return 0
	}
	select {
	case f.flushed <- struct{}{}:
	default:
	}
	<-gate
	return 0
}

func (f *gatedFile) setGate(g chan struct{}) {
	f.mu.Lock()
	f.gate = g
	f.mu.Unlock()
}

type gatedRoot struct {
	fs.Inode
	file *gatedFile
}

func (r *gatedRoot) OnAdd(ctx context.Context) {
	r.AddChild("f", r.NewPersistentInode(ctx, r.file, fs.StableAttr{Mode: syscall.S_IFREG}), false)
}

// TestForkSafe: the vfork'd child of os/exec must not close a FUSE file
// of the parent before exec (forkSafe). The file is put at the fd number
// above the highest one the command passes, where Go's child moves its
// error pipe; its FLUSH waits while gated, and the test looks whether the
// parent's forking thread is still held by vfork at that moment.
func TestForkSafe(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for a FUSE mount")
	}
	file := &gatedFile{flushed: make(chan struct{}, 1)}
	dir := t.TempDir()
	srv, err := fs.Mount(dir, &gatedRoot{file: file}, &fs.Options{MountOptions: fuse.MountOptions{DirectMount: true}})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() { _ = srv.Unmount() })

	// closedBeforeExec starts cmd with the FUSE file at fd target and
	// reports whether the child closed it before exec.
	closedBeforeExec := func(cmd *exec.Cmd, target int) bool {
		t.Helper()
		f, err := os.OpenFile(filepath.Join(dir, "f"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Dup3(int(f.Fd()), target, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
		defer func() { _ = unix.Close(target) }()
		gate := make(chan struct{})
		file.setGate(gate)
		var opened sync.Once
		openGate := func() { opened.Do(func() { file.setGate(nil); close(gate) }) }
		defer openGate() // also on t.Fatal: a waiting FLUSH would keep the mount busy
		started := make(chan error, 1)
		tids := make(chan int, 1)
		go func() {
			runtime.LockOSThread() // os/exec forks on this thread
			defer runtime.UnlockOSThread()
			tids <- unix.Gettid()
			started <- cmd.Start()
		}()
		tid := <-tids
		before, flushed := false, false
		select {
		case err := <-started:
			if err != nil {
				t.Fatal(err)
			}
		case <-file.flushed:
			// A vfork parent waits in state D until its child execs
			// or exits; after that, closes at exec do not hold it.
			stat, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
			if err != nil {
				t.Fatal(err)
			}
			_, rest, _ := strings.Cut(string(stat), ") ")
			before, flushed = strings.HasPrefix(rest, "D"), true
		case <-time.After(30 * time.Second):
			t.Fatal("Start neither returned nor flushed")
		}
		openGate()
		if flushed {
			if err := <-started; err != nil {
				t.Fatal(err)
			}
		}
		_ = cmd.Wait()
		return before
	}

	// The first start of a process also clones a child that exits at
	// once (os checks pidfd support); keep it out of the cases below.
	if err := exec.Command("true").Run(); err != nil {
		t.Fatal(err)
	}

	// Stdout and stderr at fd 5000, the FUSE file at 5001: without
	// forkSafe, stdin is /dev/null at a low number, so Go's child moves
	// its error pipe onto 5001, closing the FUSE file.
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = null.Close() }()
	fd, err := unix.FcntlInt(null.Fd(), unix.F_DUPFD_CLOEXEC, 5000)
	if err != nil {
		t.Fatal(err)
	}
	out := os.NewFile(uintptr(fd), os.DevNull)
	defer func() { _ = out.Close() }()
	command := func() *exec.Cmd {
		c := exec.Command("true")
		c.Stdout, c.Stderr = out, out
		return c
	}
	if !closedBeforeExec(command(), fd+1) {
		t.Fatal("without forkSafe no FUSE file was closed before exec: the test no longer shows the hazard")
	}
	if closedBeforeExec(forkSafe(command()), fd+1) {
		t.Fatal("the child of a forkSafe command closed a FUSE file before exec")
	}
}
