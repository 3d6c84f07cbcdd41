// Package sockettest checks, for tests, how a socket file comes into
// being: a socket created at its final path is connectable with the mode
// bind(2) gave it until a chmod or chown follows, a window a listener that
// binds elsewhere and renames into place does not have.
package sockettest

import (
	"encoding/binary"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Events runs create and returns the inotify events (masks, in order) that
// the directory of path saw for path's name meanwhile: creation, attribute
// changes and renames into place. A listener without a window shows
// exactly one IN_MOVED_TO. The test is skipped where inotify is missing.
func Events(t *testing.T, path string, create func()) []uint32 {
	t.Helper()
	in, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Skipf("inotify: %v", err)
	}
	defer func() { _ = unix.Close(in) }()
	if _, err := unix.InotifyAddWatch(in, filepath.Dir(path), unix.IN_CREATE|unix.IN_ATTRIB|unix.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	create()
	buf := make([]byte, 64<<10)
	n, err := unix.Read(in, buf)
	if err != nil {
		t.Fatalf("no inotify events in %s: %v", filepath.Dir(path), err)
	}
	var masks []uint32
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		mask, size := binary.NativeEndian.Uint32(buf[off+4:]), int(binary.NativeEndian.Uint32(buf[off+12:]))
		name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+size]), "\x00")
		if name == filepath.Base(path) {
			masks = append(masks, mask)
		}
		off += unix.SizeofInotifyEvent + size
	}
	return masks
}

// AppearsByRename fails the test unless create makes path appear by one
// rename and nothing else.
func AppearsByRename(t *testing.T, path string, create func()) {
	t.Helper()
	if masks := Events(t, path, create); len(masks) != 1 || masks[0] != unix.IN_MOVED_TO {
		t.Errorf("events on %s: %#x, want one IN_MOVED_TO (%#x)", filepath.Base(path), masks, unix.IN_MOVED_TO)
	}
}
