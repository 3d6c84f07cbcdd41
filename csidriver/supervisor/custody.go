package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultOrphanWait is how long a supervisor that finds a mount whose
// server is gone, and holds no copy of its descriptors (the supervisor's
// container was restarted), waits for the driver to attach them before it
// gives the mount up.
const DefaultOrphanWait = 60 * time.Second

// dupFile returns a close-on-exec duplicate of f.
func dupFile(f *os.File, name string) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("supervisor: dup %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// dup returns close-on-exec duplicates of both descriptors of d.
func (d Descriptors) dup() (Descriptors, error) {
	fuse, err := dupFile(d.Fuse, "/dev/fuse")
	if err != nil {
		return Descriptors{}, err
	}
	custody, err := dupFile(d.Custody, "key-custody")
	if err != nil {
		_ = fuse.Close()
		return Descriptors{}, err
	}
	return Descriptors{Fuse: fuse, Custody: custody}, nil
}

// Attach gives the supervisor copies of mount id's descriptors, which the
// driver kept. A mount that lacks them takes duplicates (a server adopted
// without them, or one whose server is gone: that one is resumed now);
// a mount that has them ignores the call. The caller keeps its copies.
func (s *Supervisor) Attach(_ context.Context, id string, fds Descriptors) error {
	if fds.Fuse == nil || fds.Custody == nil {
		return errors.New("supervisor: attach needs the /dev/fuse and the key custody descriptors")
	}
	s.mu.Lock()
	m, ok := s.mounts[id]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if m.fuse != nil && m.custody != nil {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	dups, err := fds.dup()
	if err != nil {
		return err
	}
	fuse, custody := dups.Fuse, dups.Custody
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.fuse != nil || m.custody != nil || s.mounts[id] != m {
		_ = fuse.Close()
		_ = custody.Close()
		return nil
	}
	m.fuse, m.custody = fuse, custody
	if m.attached != nil {
		close(m.attached)
		m.attached = nil
	}
	s.cfg.Log.Info("descriptors attached", "mountId", id)
	return nil
}

// Descriptors returns duplicates of mount id's descriptors, for a driver
// that restarted and lost its copies. The caller closes them.
func (s *Supervisor) Descriptors(_ context.Context, id string) (Descriptors, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.mounts[id]
	if !ok {
		return Descriptors{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if m.fuse == nil || m.custody == nil {
		return Descriptors{}, fmt.Errorf("supervisor: mount %s: no descriptors held", id)
	}
	return (Descriptors{Fuse: m.fuse, Custody: m.custody}).dup()
}

// awaitDescriptors waits, for a mount whose server died while the
// supervisor held none of its descriptors, until the driver attaches them
// or OrphanWait passes. It reports whether they came.
func (s *Supervisor) awaitDescriptors(m *mount) bool {
	s.mu.Lock()
	if m.fuse != nil && m.custody != nil {
		s.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	m.attached = ch
	s.mu.Unlock()
	s.cfg.Log.Info("FUSE server is gone and its descriptors are not here; waiting for the driver to attach them",
		"mountId", m.info.ID, "wait", s.cfg.OrphanWait.String())
	timer := time.NewTimer(s.cfg.OrphanWait)
	defer timer.Stop()
	select {
	case <-ch:
		return true
	case <-timer.C:
	case <-s.ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.attached == ch {
		m.attached = nil
	}
	return m.fuse != nil && m.custody != nil
}
