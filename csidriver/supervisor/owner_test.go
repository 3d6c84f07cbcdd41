package supervisor

import (
	"net"
	"os"
	"os/exec"
	"testing"

	"rekey.dev/rekey/internal/sockettest"
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

// TestListenNoLooseWindow: the supervisor socket appears at its path with
// mode 0600 (bound elsewhere and renamed), replaces a stale socket, refuses
// to replace anything else, and closing it leaves the path to whoever
// bound it since.
func TestListenNoLooseWindow(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/sup.sock"
	var lis net.Listener
	// Bound under another name and renamed: never at its path with the
	// mode bind(2) gives.
	sockettest.AppearsByRename(t, path, func() {
		var err error
		if lis, err = Listen(path); err != nil {
			t.Fatal(err)
		}
	})
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v, %v; want a 0600 socket", fi, err)
	}
	again, err := Listen(path) // a stale socket (or a new node pod's turn)
	if err != nil {
		t.Fatal(err)
	}
	_ = lis.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("closing the earlier listener removed the later one's socket: %v", err)
	}
	_ = again.Close()
	if err := os.WriteFile(dir+"/file", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(dir + "/file"); err == nil {
		t.Error("Listen replaced a regular file")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("left in the directory: %v", ents)
	}
}
