package supervisor

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Owners. Every supervisor container has an instance ID, made by its init
// (or by the supervisor itself when it runs without one) and kept for the
// container's life, across restarts of the supervisor process. The
// instance holds an exclusive flock on <state>/owners/<instance>.lock for
// as long as the container runs, and its supervisor serves the hand-off
// socket <state>/owners/<instance>.sock. Each mount's state file names the
// instance that runs its server (Info.Owner). A supervisor that starts on
// the state directory (handoff.go) adopts the mounts of its own instance
// (its process restarted), takes over those of a live other instance
// through that instance's hand-off socket (a node pod of a new version
// starting next to the old one), and treats those of an instance whose
// lock is free as its own to adopt (that container is gone: a node reboot,
// or the old pod was deleted).
//
// Hand-offs go one way only, from an older instance to a newer one (by the
// start time init writes into its lock file): the supervisor of an old
// pod that restarts after handing its mounts over must not take them back.
// It finds a newer live instance, is superseded, refuses to start mounts
// and leaves the node's socket to the newer one.

// InstanceEnv passes the instance ID from init to the supervisor it runs.
const InstanceEnv = "REKEY_SUPERVISOR_INSTANCE"

// ownersDir is the directory of the owners' locks and hand-off sockets.
const ownersDir = "owners"

var instanceRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// NewInstanceID returns a fresh instance ID.
func NewInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// validInstance reports whether id is an instance ID (state files are
// read from disk: an ID is never used in a path unchecked).
func validInstance(id string) bool { return instanceRE.MatchString(id) }

func ownerLockPath(stateDir, id string) string {
	return filepath.Join(stateDir, ownersDir, id+".lock")
}

// HandoffSocketPath is the hand-off socket of instance id.
func HandoffSocketPath(stateDir, id string) string {
	return filepath.Join(stateDir, ownersDir, id+".sock")
}

// OwnerLock is an instance's lock, held until Close.
type OwnerLock struct {
	ID string
	f  *os.File
}

// LockOwner takes the lock of a new instance id in stateDir (created if
// missing). The lock lasts until Close or the end of the process and of
// every child that inherited it.
func LockOwner(stateDir, id string) (*OwnerLock, error) {
	if !validInstance(id) {
		return nil, fmt.Errorf("supervisor: bad instance id %q", id)
	}
	if err := os.MkdirAll(filepath.Join(stateDir, ownersDir), 0o700); err != nil {
		return nil, fmt.Errorf("supervisor: owners dir: %w", err)
	}
	f, err := os.OpenFile(ownerLockPath(stateDir, id), os.O_RDWR|os.O_CREATE, 0o600) //nolint:gosec // in the state dir
	if err != nil {
		return nil, fmt.Errorf("supervisor: owner lock: %w", err)
	}
	// The start time first, then the lock: whoever sees the lock held
	// reads the time. (IDs are random: no one else writes this file.)
	if _, err := f.WriteAt([]byte(strconv.FormatInt(time.Now().UnixNano(), 10)+"\n"), 0); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("supervisor: owner lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("supervisor: owner lock %s: %w", id, err)
	}
	return &OwnerLock{ID: id, f: f}, nil
}

// File is the lock's open file, for a child process to inherit (init
// passes it to the supervisor so the lock outlives init only with it).
func (l *OwnerLock) File() *os.File { return l.f }

// Close releases the lock and removes its file.
func (l *OwnerLock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = os.Remove(l.f.Name())
	return l.f.Close()
}

// ownerAlive reports whether instance id's container still runs: its lock
// is held. A missing lock file is a gone owner.
func ownerAlive(stateDir, id string) bool {
	if !validInstance(id) {
		return false
	}
	f, err := os.Open(ownerLockPath(stateDir, id)) //nolint:gosec // in the state dir
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		return true // cannot tell: never take a live owner's mounts
	}
	defer func() { _ = f.Close() }()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

// ownerStarted returns when instance id started (its lock file); ok is
// false if that cannot be read.
func ownerStarted(stateDir, id string) (time.Time, bool) {
	if !validInstance(id) {
		return time.Time{}, false
	}
	b, err := os.ReadFile(ownerLockPath(stateDir, id)) //nolint:gosec // in the state dir
	if err != nil {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// olderThan reports whether instance id started before instance self. An
// instance whose start cannot be read counts as older unless it is self.
func olderThan(stateDir, id, self string) bool {
	if id == self {
		return false
	}
	them, ok := ownerStarted(stateDir, id)
	if !ok {
		return true
	}
	me, ok := ownerStarted(stateDir, self)
	return !ok || them.Before(me)
}

// newerLive returns a live instance that started after self, if any.
func newerLive(stateDir, self string) (string, bool) {
	paths, err := filepath.Glob(filepath.Join(stateDir, ownersDir, "*.lock"))
	if err != nil {
		return "", false
	}
	for _, p := range paths {
		id := strings.TrimSuffix(filepath.Base(p), ".lock")
		if id != self && validInstance(id) && !olderThan(stateDir, id, self) && ownerAlive(stateDir, id) {
			return id, true
		}
	}
	return "", false
}

// removeStaleOwner removes the lock file and hand-off socket of a gone
// instance.
func removeStaleOwner(stateDir, id string) {
	if !validInstance(id) || ownerAlive(stateDir, id) {
		return
	}
	_ = os.Remove(ownerLockPath(stateDir, id))
	removeSocket(HandoffSocketPath(stateDir, id))
}
