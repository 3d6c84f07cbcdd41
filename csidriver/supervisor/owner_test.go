package supervisor

import (
	"os"
	"os/exec"
	"testing"
)

// TestOwnerLock: an instance is alive while its lock is held, also by
// another process, and gone once it is released; IDs are checked before
// they name a file.
func TestOwnerLock(t *testing.T) {
	dir := t.TempDir()
	id := NewInstanceID()
	if ownerAlive(dir, id) {
		t.Fatal("alive before its lock exists")
	}
	lock, err := LockOwner(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	if !ownerAlive(dir, id) {
		t.Fatal("not alive while locked")
	}
	if _, err := LockOwner(dir, id); err == nil {
		t.Fatal("a second LockOwner of the same instance succeeded")
	}
	// Held by a child that inherited it (init's supervisor), after we
	// drop ours: still alive.
	cmd := exec.Command("sleep", "30")
	cmd.ExtraFiles = []*os.File{lock.File()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = lock.f.Close()
	if !ownerAlive(dir, id) {
		t.Error("not alive while a child holds the lock")
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if ownerAlive(dir, id) {
		t.Error("alive after every holder is gone")
	}
	removeStaleOwner(dir, id)
	if fileExists(ownerLockPath(dir, id)) {
		t.Error("stale lock file not removed")
	}
	for _, bad := range []string{"", "../x", "0123456789abcdeg", "0123456789ABCDEF", "0123456789abcdef0"} {
		if _, err := LockOwner(dir, bad); err == nil {
			t.Errorf("LockOwner(%q) accepted", bad)
		}
		if ownerAlive(dir, bad) {
			t.Errorf("ownerAlive(%q)", bad)
		}
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
