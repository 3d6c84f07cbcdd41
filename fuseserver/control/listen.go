package control

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"sync"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/peer"
)

// DefaultSocketMode is the mode Listen gives a socket unless told otherwise.
const DefaultSocketMode fs.FileMode = 0o600

// Errors of Listen and NewListener.
var (
	ErrNoAllowedUIDs = errors.New("control: no allowed peer UIDs")
	ErrNotSocket     = errors.New("control: path exists and is not a socket")
	ErrReplaced      = errors.New("control: another file has replaced the socket")
	ErrUnsupported   = errors.New("control: unix socket peer credentials are not supported on this platform")
)

// ListenOptions describe the control socket.
type ListenOptions struct {
	// Path is where the socket appears. Any length is fine: paths longer
	// than the 108-byte sun_path limit are bound through /proc/self/fd. A
	// stale socket there is replaced; any other kind of file is an error.
	Path string
	// Mode is the socket's permission bits; 0 means DefaultSocketMode.
	// The socket never exists with wider permissions at Path.
	Mode fs.FileMode
	// Chown makes OwnerUID:OwnerGID the socket's owner, before it appears
	// at Path (the sidecar's UID, contract.SidecarUID).
	Chown              bool
	OwnerUID, OwnerGID uint32
	// AllowedUIDs are the peer UIDs whose connections are served; every
	// other connection is closed right after accept. Required.
	AllowedUIDs []uint32
	// Log receives a line per refused connection. The zero value discards.
	Log logr.Logger
}

// Listen creates the control socket described by opts and returns a
// listener that serves only connections from opts.AllowedUIDs. Closing it
// removes the socket file, unless another socket has replaced it since.
//
// The socket is bound inside a fresh private (0700) directory next to
// Path, given its mode and owner there, and then renamed onto Path, so at
// no time can anyone reach it with wider permissions, and a stale socket
// is replaced atomically. No process-wide umask is touched.
func Listen(opts ListenOptions) (net.Listener, error) {
	if len(opts.AllowedUIDs) == 0 {
		return nil, ErrNoAllowedUIDs
	}
	if opts.Mode == 0 {
		opts.Mode = DefaultSocketMode
	}
	lis, err := listenSocket(opts)
	if err != nil {
		return nil, err
	}
	return NewListener(lis, opts.AllowedUIDs, opts.Log)
}

// NewListener wraps an already-open unix listener (for example one
// inherited as a file descriptor) so that every accepted connection is
// checked with SO_PEERCRED: connections from UIDs outside allowedUIDs, or
// whose credentials cannot be read, are closed and logged with the peer's
// UID and PID, and Accept goes on to the next one. Accepted connections
// carry the peer's credentials; see PeerFromContext.
func NewListener(lis net.Listener, allowedUIDs []uint32, log logr.Logger) (net.Listener, error) {
	if len(allowedUIDs) == 0 {
		return nil, ErrNoAllowedUIDs
	}
	return &peerListener{Listener: lis, allowed: slices.Clone(allowedUIDs), log: log}, nil
}

// Peer is the identity of the process at the other end of a connection,
// as the kernel saw it when the connection was made.
type Peer struct {
	UID, GID uint32
	PID      int32
}

// PeerFromContext returns the credentials of the peer of an RPC served
// from a listener made by Listen or NewListener.
func PeerFromContext(ctx context.Context) (Peer, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Peer{}, false
	}
	a, ok := p.Addr.(PeerAddr)
	if !ok {
		return Peer{}, false
	}
	return a.Peer, true
}

// PeerAddr is the remote address of an accepted connection: the peer's
// credentials (unix sockets have no useful peer address).
type PeerAddr struct {
	Peer
}

// Network implements net.Addr.
func (PeerAddr) Network() string { return "unix" }

// String implements net.Addr.
func (a PeerAddr) String() string { return fmt.Sprintf("uid=%d,gid=%d,pid=%d", a.UID, a.GID, a.PID) }

// Admitter is implemented by the listeners Listen and NewListener return.
// Admit serves connections of one more peer UID from then on and, for a
// socket Listen created, makes uid:gid the socket's owner (its mode stays:
// the new owner takes the old one's place). The FUSE server uses it when it
// learns the host UID of a sidecar in a user namespace (package podusers).
type Admitter interface {
	Admit(uid, gid uint32) error
}

// owned is a listener whose socket file can be given to another owner.
type owned interface {
	chown(uid, gid uint32) error
}

type peerListener struct {
	net.Listener
	mu      sync.RWMutex
	allowed []uint32
	log     logr.Logger
}

// Admit implements Admitter.
func (l *peerListener) Admit(uid, gid uint32) error {
	if o, ok := l.Listener.(owned); ok {
		if err := o.chown(uid, gid); err != nil {
			return err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !slices.Contains(l.allowed, uid) {
		l.allowed = append(l.allowed, uid)
	}
	return nil
}

func (l *peerListener) allows(uid uint32) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return slices.Contains(l.allowed, uid)
}

// Accept returns the next connection from an allowed peer.
func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p, err := peerCredentials(c)
		if err != nil {
			l.log.Error(err, "Refused control connection: cannot read peer credentials")
			_ = c.Close()
			continue
		}
		if !l.allows(p.UID) {
			l.log.Info("Refused control connection from a UID that is not allowed", "peerUid", p.UID, "peerGid", p.GID, "peerPid", p.PID)
			_ = c.Close()
			continue
		}
		return &peerConn{Conn: c, addr: PeerAddr{p}}, nil
	}
}

// peerConn reports the peer's credentials as its remote address, which is
// how gRPC hands them to interceptors (peer.Peer.Addr).
type peerConn struct {
	net.Conn
	addr PeerAddr
}

func (c *peerConn) RemoteAddr() net.Addr { return c.addr }
