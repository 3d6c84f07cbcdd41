// Package forksafe starts child processes safely from a process that has
// files open on a FUSE mount whose server cannot answer at that moment:
// one it serves itself, or one whose server process is gone or not yet
// started.
package forksafe

import (
	"os"
	"os/exec"
	"sync"

	"golang.org/x/sys/unix"
)

// Command prepares cmd to be started by a process that has files open on a
// FUSE mount that may not answer (see the package comment).
//
// os/exec starts children with vfork: the parent's thread stays in the
// kernel until the child calls exec, and the Go runtime cannot stop that
// thread, so a garbage collection (stop the world) waits for the child.
// Before exec, Go's child moves its error pipe to the fd number above the
// highest one it passes (attr.Files), closing whatever the parent had
// open there. If that was a file on an in-process FUSE mount, the close is
// a FLUSH the child waits for, which the parent's FUSE server cannot
// answer while the world is stopped: the test hangs (seen in
// TestVersityGW/Rotation, with load running). Passing /dev/null as stdin
// at a high fd number moves that slot to a number nothing uses. Closes at
// exec itself (O_CLOEXEC) come after the parent is released, so they are
// answered like any other close.
func Command(cmd *exec.Cmd) *exec.Cmd {
	if cmd.Stdin == nil {
		if f := highDevNull(); f != nil {
			cmd.Stdin = f
		}
	}
	return cmd
}

// highDevNull is /dev/null open at a high fd number (once per process;
// nil if that is not possible). The number stays well below RLIMIT_NOFILE
// so that the fd above it is valid too.
var highDevNull = sync.OnceValue(func() *os.File {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < 4096 {
		return nil
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil
	}
	defer func() { _ = null.Close() }()
	fd, err := unix.FcntlInt(null.Fd(), unix.F_DUPFD_CLOEXEC, int(min(lim.Cur/2, 1<<16)))
	if err != nil {
		return nil
	}
	return os.NewFile(uintptr(fd), os.DevNull)
})
