package fuseresume

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"rekey.dev/rekey/csidriver/mounter"
	"rekey.dev/rekey/internal/fusetest"
)

// timeout bounds every wait for a positive signal: the machine may be
// small and busy, and the tests run with -race.
const timeout = 30 * time.Second

// mount is a FUSE mount the test made itself: it opened /dev/fuse,
// mounted it with fd=N (csidriver/mounter, as the node plugin does) and
// keeps the descriptor, so the connection outlives any server child.
type mount struct {
	dir     string // mountpoint
	backing string // directory the children serve
	dev     *os.File
	m       mounter.Interface

	mu    sync.Mutex
	files []*os.File // opened with open, closed by the cleanup after the abort
}

// newMount mounts a fresh directory and registers its cleanup, which
// aborts the connection first so that nothing waits on a server that
// is gone, then detaches the mount.
func newMount(t *testing.T) *mount {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root to mount FUSE")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	mt := &mount{dir: t.TempDir(), backing: t.TempDir(), m: mounter.New()}
	dev, err := mt.m.MountFUSE(mt.dir, mounter.FUSEOptions{Source: "fuseresume", Subtype: "fuseresume"})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	mt.dev = dev
	t.Cleanup(func() {
		if err := mt.m.Abort(mt.dir); err != nil {
			t.Errorf("abort: %v", err)
		}
		// Closing a file is a FLUSH that waits for a server; after
		// the abort it fails at once.
		mt.mu.Lock()
		for _, f := range mt.files {
			_ = f.Close()
		}
		mt.mu.Unlock()
		if err := mt.m.Unmount(mt.dir); err != nil {
			t.Errorf("unmount: %v", err)
		}
		_ = mt.dev.Close()
	})
	return mt
}

// open opens name below the mountpoint; the cleanup closes it if the
// test does not.
func (mt *mount) open(t *testing.T, name string, flag int) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(mt.dir, name), flag, 0o644)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	mt.mu.Lock()
	mt.files = append(mt.files, f)
	mt.mu.Unlock()
	return f
}

// child is a server process (serveChild) started by the test binary.
type child struct {
	cmd     *exec.Cmd
	control *os.File // write end of the control pipe
	stderr  *fusetest.LockedBuffer
	exited  chan struct{}

	mu      sync.Mutex
	events  []event
	changed chan struct{} // a new event arrived
}

// startChild starts a server child for mt and leaves it waiting for its
// start message. Children are started before the test opens any file on
// the mount: a child closes the parent's descriptors as it execs, and
// each close of a FUSE file is a FLUSH that waits for a server; started
// between a kill and a resume, the child would wait for itself.
// fusetest.ForkSafe keeps the vfork'd child from closing one of them
// before exec anyway.
func startChild(t *testing.T, mt *mount) *child {
	t.Helper()
	evR, evW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{
		cmd:     exec.Command(exe),
		control: ctlW,
		stderr:  &fusetest.LockedBuffer{All: true},
		exited:  make(chan struct{}),
		changed: make(chan struct{}, 1),
	}
	c.cmd.Env = append(os.Environ(), childEnv+"=1")
	c.cmd.ExtraFiles = []*os.File{mt.dev, evW, ctlR} // childFUSEFd, childEventsFd, childControlFd
	c.cmd.Stdout, c.cmd.Stderr = c.stderr, c.stderr
	if err := fusetest.ForkSafe(c.cmd).Start(); err != nil {
		t.Fatalf("start server child: %v", err)
	}
	_ = evW.Close()
	_ = ctlR.Close()
	go func() {
		sc := bufio.NewScanner(evR)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = event{Event: "bad", Error: err.Error()}
			}
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.mu.Unlock()
			select {
			case c.changed <- struct{}{}:
			default:
			}
		}
		_ = evR.Close()
	}()
	go func() {
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.exited
		_ = c.control.Close()
		if t.Failed() {
			t.Logf("server child %d output:\n%s", c.cmd.Process.Pid, c.stderr)
		}
	})
	return c
}

// start sends the start message.
func (c *child) start(t *testing.T, msg startMsg) {
	t.Helper()
	if err := json.NewEncoder(c.control).Encode(msg); err != nil {
		t.Fatalf("start message: %v", err)
	}
}

// await returns the first event (of all so far, in order) that match
// accepts, waiting for it until timeout or the child's exit.
func (c *child) await(t *testing.T, what string, match func(event) bool) event {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	exited := c.exited
	for {
		c.mu.Lock()
		for _, ev := range c.events {
			if ev.Event == "error" {
				c.mu.Unlock()
				t.Fatalf("server child: %s", ev.Error)
			}
			if match(ev) {
				c.mu.Unlock()
				return ev
			}
		}
		c.mu.Unlock()
		select {
		case <-c.changed:
		case <-exited:
			// Events written before the exit may still be in
			// the pipe: look once more, a moment later.
			exited = nil
			deadline.Reset(time.Second)
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s from server child %d; events %+v\n%s", what, c.cmd.Process.Pid, c.eventsCopy(), c.stderr)
		}
	}
}

func (c *child) eventsCopy() []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]event(nil), c.events...)
}

// kill kills the child with SIGKILL and waits until it is gone.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	select {
	case <-c.exited:
	case <-time.After(timeout):
		t.Fatalf("server child %d did not exit after SIGKILL", c.cmd.Process.Pid)
	}
}

// checkNoPanic fails the test if the child logged a panic (go-fuse
// recovers panics of handlers and logs them).
func (c *child) checkNoPanic(t *testing.T) {
	t.Helper()
	if out := c.stderr.String(); strings.Contains(out, "panic") {
		t.Errorf("server child %d panicked:\n%s", c.cmd.Process.Pid, out)
	}
}

// is matches events by name.
func is(name string) func(event) bool {
	return func(ev event) bool { return ev.Event == name }
}

// result is what a blocked read returned.
type result struct {
	n    int
	data []byte
	err  error
	at   time.Time
}

// readInBackground reads size bytes at offset 0 of f in a goroutine:
// the application whose request the server holds.
func readInBackground(f *os.File, size int) <-chan result {
	done := make(chan result, 1)
	go func() {
		buf := make([]byte, size)
		n, err := f.ReadAt(buf, 0)
		if errors.Is(err, io.EOF) {
			err = nil
		}
		done <- result{n: n, data: buf[:n], err: err, at: time.Now()}
	}()
	return done
}
