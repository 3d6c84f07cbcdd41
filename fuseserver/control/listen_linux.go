package control

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxSunPath is the size of sockaddr_un.sun_path on Linux, terminating NUL
// included.
const maxSunPath = 108

func listenSocket(opts ListenOptions) (net.Listener, error) {
	path := filepath.Clean(opts.Path)
	if err := checkReplaceable(path); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".rekey-sock-")
	if err != nil {
		return nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	name := filepath.Join(tmp, "s")

	bind := name
	if len(bind) >= maxSunPath {
		// Too long for sun_path: name the directory through a descriptor.
		fd, err := unix.Open(tmp, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("control: listen %s: open %s: %w", path, tmp, err)
		}
		defer unix.Close(fd)
		bind = fmt.Sprintf("/proc/self/fd/%d/s", fd)
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: bind, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	// The bound name may be a /proc/self/fd path that means nothing once
	// fd is closed: Close removes the file by its real path instead.
	ul.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		_ = ul.Close()
		return nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	if err := os.Chmod(name, opts.Mode.Perm()); err != nil {
		return fail(err)
	}
	if opts.Chown {
		if err := os.Lchown(name, int(opts.OwnerUID), int(opts.OwnerGID)); err != nil {
			return fail(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(name, &st); err != nil {
		return fail(&os.PathError{Op: "lstat", Path: name, Err: err})
	}
	if err := os.Rename(name, path); err != nil {
		return fail(err)
	}
	return &socketListener{UnixListener: ul, path: path, dev: st.Dev, ino: st.Ino}, nil
}

// checkReplaceable allows only a missing file or a socket at path.
func checkReplaceable(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("control: listen %s: %w", path, err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("%w: %s (%s)", ErrNotSocket, path, fi.Mode().Type())
	}
	return nil
}

// socketListener removes its socket file on Close if it is still the one
// it created.
type socketListener struct {
	*net.UnixListener
	path     string
	dev, ino uint64
	once     sync.Once
}

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		var st unix.Stat_t
		if unix.Lstat(l.path, &st) == nil && st.Dev == l.dev && st.Ino == l.ino {
			_ = os.Remove(l.path)
		}
	})
	return err
}

// chown gives the socket file to uid:gid if it is still the one the
// listener created. The directory may be writable by a pod, so nothing is
// done by name: the file is opened without following a symbolic link, its
// identity checked, and changed through the descriptor.
func (l *socketListener) chown(uid, gid uint32) error {
	fd, err := unix.Open(l.path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("control: chown %s: %w", l.path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("control: chown %s: %w", l.path, err)
	}
	if st.Dev != l.dev || st.Ino != l.ino || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("control: chown %s: %w", l.path, ErrReplaced)
	}
	if err := unix.Fchownat(fd, "", int(uid), int(gid), unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("control: chown %s: %w", l.path, err)
	}
	return nil
}

// peerCredentials reads SO_PEERCRED of a unix socket connection.
func peerCredentials(c net.Conn) (Peer, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return Peer{}, fmt.Errorf("control: peer credentials: %T is not a socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("control: peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, fmt.Errorf("control: peer credentials: %w", err)
	}
	if credErr != nil {
		return Peer{}, fmt.Errorf("control: peer credentials: SO_PEERCRED: %w", credErr)
	}
	return Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}, nil
}
