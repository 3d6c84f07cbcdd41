package fuseresume

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"rekey.dev/rekey/internal/fusetest"
)

// backingFiles writes the files the tests serve and returns their
// contents by path.
func backingFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{
		"a":    fusetest.RandomBytes(t, 64<<10),
		"slow": fusetest.RandomBytes(t, 64<<10),
		"gone": fusetest.RandomBytes(t, 100),
		"d/b":  fusetest.RandomBytes(t, 4<<10),
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// serveFirst mounts a directory with the files of backingFiles, starts
// two server children (both before any file on the mount is open, see
// startChild) and lets the first one serve, holding every read of
// "slow", with file handle epoch 0. It returns what that server
// negotiated at INIT.
func serveFirst(t *testing.T) (mt *mount, files map[string][]byte, first, second *child, state *fuse.InitState) {
	t.Helper()
	mt = newMount(t)
	files = backingFiles(t, mt.backing)
	first = startChild(t, mt)
	second = startChild(t, mt)
	first.start(t, startMsg{Dir: mt.backing, Epoch: 0, Gate: "slow"})
	return mt, files, first, second, first.await(t, "ready", is("ready")).State
}

func stat(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return &st
}

func readAt(t *testing.T, f *os.File, size int) []byte {
	t.Helper()
	buf := make([]byte, size)
	n, err := f.ReadAt(buf, 0)
	if err != nil && n != size {
		t.Fatalf("read %s: %v", f.Name(), err)
	}
	return buf[:n]
}

// TestResume kills the server of a mount while it holds a read and lets a
// second server process take the connection over: the held read is sent
// again and completes, descriptors opened before the kill keep working
// (their handles are opened again), paths looked up before the kill
// resolve (their node IDs are looked up again), new files can be opened,
// and FORGETs for more references than the second server counted, or
// for nodes it never saw, do no harm.
func TestResume(t *testing.T) {
	mt, files, first, second, state := serveFirst(t)
	if !state.SupportsResend() {
		t.Skipf("the kernel (protocol 7.%d) does not offer FUSE_NOTIFY_RESEND (Linux 6.9)", state.Kernel.Minor)
	}
	t.Logf("INIT: kernel 7.%d flags %#x, negotiated 7.%d flags %#x, max_write %d, max_pages %d",
		state.Kernel.Minor, state.Kernel.Flags64(), state.Reply.Minor, state.NegotiatedFlags(), state.Reply.MaxWrite, state.Reply.MaxPages)

	// With the first server: look paths up (a directory listing adds
	// a lookup reference to each), open files, and start a read that
	// the server holds.
	inoA := stat(t, filepath.Join(mt.dir, "a")).Ino
	inoB := stat(t, filepath.Join(mt.dir, "d/b")).Ino
	inoGone := stat(t, filepath.Join(mt.dir, "gone")).Ino
	if _, err := os.ReadDir(mt.dir); err != nil {
		t.Fatal(err)
	}
	fa := mt.open(t, "a", os.O_RDONLY)
	fb := mt.open(t, "d/b", os.O_RDWR)
	dd := mt.open(t, "d", os.O_RDONLY)
	fslow := mt.open(t, "slow", os.O_RDONLY)
	held := readInBackground(fslow, len(files["slow"]))
	first.await(t, "the held read", is("blocked"))
	select {
	case r := <-held:
		t.Fatalf("the held read returned: %d bytes, %v", r.n, r.err)
	default:
	}

	killed := time.Now()
	first.kill(t)
	second.start(t, startMsg{Dir: mt.backing, Resume: state, Epoch: 1})
	second.await(t, "ready", is("ready"))
	if st := second.await(t, "resend", is("resend")).Status; st != 0 {
		t.Fatalf("NotifyResend: %v", fuse.Status(st))
	}

	// The held read was sent again, with FUSE_UNIQUE_RESEND.
	select {
	case r := <-held:
		if r.err != nil {
			t.Fatalf("held read: %v", r.err)
		}
		if !bytes.Equal(r.data, files["slow"]) {
			t.Fatalf("held read returned %d bytes, not the file's %d", r.n, len(files["slow"]))
		}
		t.Logf("held read completed %v after SIGKILL", r.at.Sub(killed).Round(time.Millisecond))
	case <-time.After(timeout):
		t.Fatalf("the held read did not complete after the resume; events %+v", second.eventsCopy())
	}
	resent := second.await(t, "the resent READ", is("resent"))
	t.Logf("resent READ: unique %#x, node %d", resent.Unique, resent.Ino)
	if reopen := second.await(t, "reopen of slow", reopenOf("slow")); reopen.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		t.Errorf("reopen of slow with flags %#o, want O_RDONLY", reopen.Flags)
	}

	// Descriptors of the first server: their handles are opened again
	// with the flags the requests carry.
	if got := readAt(t, fa, len(files["a"])); !bytes.Equal(got, files["a"]) {
		t.Errorf("read through a descriptor opened before the kill: %d bytes differ from the file", len(got))
	}
	if reopen := second.await(t, "reopen of a", reopenOf("a")); reopen.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		t.Errorf("reopen of a with flags %#o, want O_RDONLY", reopen.Flags)
	}
	newB := fusetest.RandomBytes(t, len(files["d/b"]))
	if _, err := fb.WriteAt(newB, 0); err != nil {
		t.Fatalf("write through a descriptor opened before the kill: %v", err)
	}
	if reopen := second.await(t, "reopen of d/b", reopenOf("d/b")); reopen.Flags&syscall.O_ACCMODE != syscall.O_RDWR {
		t.Errorf("reopen of d/b with flags %#o, want O_RDWR", reopen.Flags)
	}
	if got := readAt(t, fb, len(newB)); !bytes.Equal(got, newB) {
		t.Errorf("read back through the same descriptor differs")
	}
	if got, err := os.ReadFile(filepath.Join(mt.backing, "d/b")); err != nil || !bytes.Equal(got, newB) {
		t.Errorf("backing file after the write: %v", err)
	}
	if fi, err := fa.Stat(); err != nil || fi.Size() != int64(len(files["a"])) {
		t.Errorf("fstat of a descriptor opened before the kill: %v", err)
	}
	names, err := dd.Readdirnames(-1)
	if err != nil || !slices.Contains(names, "b") {
		t.Errorf("listing through a directory opened before the kill: %v, %v", names, err)
	}
	second.await(t, "reopen of d", reopenOf("d"))

	// Paths looked up before the kill: the kernel still uses the
	// first server's node IDs.
	if st := stat(t, filepath.Join(mt.dir, "a")); st.Ino != inoA || st.Size != int64(len(files["a"])) {
		t.Errorf("stat a: ino %d size %d, want %d and %d", st.Ino, st.Size, inoA, len(files["a"]))
	}
	if st := stat(t, filepath.Join(mt.dir, "d/b")); st.Ino != inoB {
		t.Errorf("stat d/b: ino %d, want %d", st.Ino, inoB)
	}
	second.await(t, "LookupNode of a", func(ev event) bool { return ev.Event == "lookupnode" && ev.Ino == inoA && ev.Errno == 0 })

	// New opens and files.
	if got, err := os.ReadFile(filepath.Join(mt.dir, "a")); err != nil || !bytes.Equal(got, files["a"]) {
		t.Errorf("read a with a new descriptor: %v", err)
	}
	fresh := fusetest.RandomBytes(t, 10<<10)
	if err := os.WriteFile(filepath.Join(mt.dir, "new"), fresh, 0o644); err != nil {
		t.Fatalf("create a file: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mt.dir, "new")); err != nil || !bytes.Equal(got, fresh) {
		t.Errorf("read back a new file: %v", err)
	}

	// FORGETs: a, which the kernel looked up twice with the first
	// server (stat and listing) and the second server only resolved
	// once; gone, which the second server never saw.
	for _, f := range []*os.File{fa, fb, dd, fslow} {
		if err := f.Close(); err != nil {
			t.Errorf("close %s: %v", f.Name(), err)
		}
	}
	for _, name := range []string{"a", "gone"} {
		if err := os.Remove(filepath.Join(mt.dir, name)); err != nil {
			t.Fatalf("remove %s: %v", name, err)
		}
	}
	forgetA := second.await(t, "FORGET of a", forgetOf(inoA))
	forgetGone := second.await(t, "FORGET of gone", forgetOf(inoGone))
	t.Logf("FORGET a: nlookup %d; gone (never seen by the second server): nlookup %d", forgetA.Nlookup, forgetGone.Nlookup)
	if _, err := os.Stat(filepath.Join(mt.dir, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat a after remove: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mt.dir, "new")); err != nil || !bytes.Equal(got, fresh) {
		t.Errorf("read after the FORGETs: %v", err)
	}
	second.checkNoPanic(t)
}

// TestResumeWithoutResend resumes as on a kernel without
// FUSE_NOTIFY_RESEND (CAP_HAS_RESEND masked in the saved INIT): the
// second server serves new requests, NotifyResend fails cleanly with
// ENOSYS, and the read the first server held stays unanswered until the
// caller falls back to aborting the connection, which fails it at once.
func TestResumeWithoutResend(t *testing.T) {
	mt, files, first, second, saved := serveFirst(t)
	state := *saved
	state.Kernel.Flags2 &^= uint32(fuse.CAP_HAS_RESEND >> 32)
	if state.SupportsResend() {
		t.Fatal("CAP_HAS_RESEND is still set")
	}

	fslow := mt.open(t, "slow", os.O_RDONLY)
	held := readInBackground(fslow, len(files["slow"]))
	first.await(t, "the held read", is("blocked"))
	first.kill(t)
	second.start(t, startMsg{Dir: mt.backing, Resume: &state, Epoch: 1})
	second.await(t, "ready", is("ready"))
	if st := fuse.Status(second.await(t, "resend", is("resend")).Status); st != fuse.ENOSYS {
		t.Fatalf("NotifyResend: %v, want ENOSYS", st)
	}

	if got, err := os.ReadFile(filepath.Join(mt.dir, "a")); err != nil || !bytes.Equal(got, files["a"]) {
		t.Fatalf("read with the resumed server: %v", err)
	}
	select {
	case r := <-held:
		t.Fatalf("the held read returned without a resend: %d bytes, %v", r.n, r.err)
	default:
	}

	// The fallback: abort the connection.
	if err := mt.m.Abort(mt.dir); err != nil {
		t.Fatalf("abort: %v", err)
	}
	select {
	case r := <-held:
		// The kernel ends the requests it still has with
		// ECONNABORTED; new ones fail with ENOTCONN.
		if !errors.Is(r.err, syscall.ECONNABORTED) && !errors.Is(r.err, syscall.ENOTCONN) {
			t.Errorf("held read after the abort: %d bytes, %v, want ECONNABORTED", r.n, r.err)
		}
	case <-time.After(timeout):
		t.Fatal("the held read still waits after the abort")
	}
	second.checkNoPanic(t)
}

func reopenOf(name string) func(event) bool {
	return func(ev event) bool { return ev.Event == "reopen" && ev.Name == name }
}

func forgetOf(ino uint64) func(event) bool {
	return func(ev event) bool { return ev.Event == "forget" && ev.Ino == ino }
}
