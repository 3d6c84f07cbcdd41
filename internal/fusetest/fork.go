package fusetest

import (
	"os/exec"

	"rekey.dev/rekey/internal/forksafe"
)

// forkSafe is forksafe.Command: see there why test processes that serve
// FUSE mounts in-process need it.
func forkSafe(cmd *exec.Cmd) *exec.Cmd { return forksafe.Command(cmd) }

// ForkSafe is forkSafe for tests in other packages. It applies to any
// test process that may start a child while it has files open on a
// FUSE mount whose server cannot answer at that moment: one it serves
// itself (a stopped world: see forksafe), or one whose server process is
// gone or not yet started (a FLUSH then waits until a server comes).
func ForkSafe(cmd *exec.Cmd) *exec.Cmd { return forkSafe(cmd) }
