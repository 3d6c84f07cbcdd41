package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"rekey.dev/rekey/internal/keys"
)

// The supervisor's API is one JSON request per connection on a node-local
// unix socket, newline terminated. Start and Attach carry the /dev/fuse
// and key custody descriptors as SCM_RIGHTS on the request's first byte;
// the reply to Descriptors carries them on its first byte. Only root peers
// are served (SO_PEERCRED). Watch keeps the connection open and streams
// Events.
//
// ProtocolVersion is sent in every request ("v"). A request without one
// comes from a driver of version 0.1 (Start with the /dev/fuse descriptor
// only); a request of a newer version than this supervisor knows is refused
// with an error naming both versions, so a driver and a supervisor of
// different releases (an upgrade in progress) never misread each other.
const (
	opStart       = "start"
	opStop        = "stop"
	opList        = "list"
	opWatch       = "watch"
	opAttach      = "attach"
	opDescriptors = "descriptors"
	// Version 3: the hand-off session (handoff.go).
	opHandoff     = "handoff"
	opRelease     = "release"
	opRestore     = "restore"
	opHandoffDone = "handoff-done"
	opGet         = "get" // one mount by ID
)

// ProtocolVersion is the version of the supervisor's API this build speaks:
// 1 (no "v": rekey 0.1) start with /dev/fuse only; 2 the key custody
// descriptor, attach and descriptors; 3 the hand-off session.
const ProtocolVersion = 3

type request struct {
	Version int             `json:"v,omitempty"`
	Op      string          `json:"op"`
	Spec    Spec            `json:"spec,omitzero"`
	ID      string          `json:"id,omitempty"`
	Keys    json.RawMessage `json:"keys,omitempty"`  // keys.Encode wire format
	Infos   []Info          `json:"infos,omitempty"` // opRestore: the mount
}

type response struct {
	Error string `json:"error,omitempty"`
	Infos []Info `json:"infos,omitempty"`
}

// Listen creates the supervisor socket at path (replacing a stale one),
// mode 0600, in a directory created 0700 if missing. The socket is bound
// in a private temporary directory, made 0600 there and renamed into
// place, so it never exists at path with a looser mode.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("supervisor: socket dir: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("supervisor: listen %s: a %s is in the way, not a socket", path, fi.Mode().Type())
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".rekey-sup-")
	if err != nil {
		return nil, fmt.Errorf("supervisor: listen: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	name := filepath.Join(tmp, "s")
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("supervisor: listen: %w", err)
	}
	// Closing the listener leaves the path alone: during a hand-off the
	// same path is bound by the supervisor of the new node pod, and the
	// old one's exit must not unlink it. A stale socket is replaced by the
	// next Listen.
	lis.SetUnlinkOnClose(false)
	if err := os.Chmod(name, 0o600); err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("supervisor: chmod socket: %w", err)
	}
	if err := os.Rename(name, path); err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("supervisor: listen %s: %w", path, err)
	}
	return lis, nil
}

// answers reports whether a supervisor serves the socket at path.
func answers(ctx context.Context, path string) bool {
	if path == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := (&Client{Path: path}).List(ctx)
	return err == nil
}

// Serve answers the API on lis until ctx ends.
func (s *Supervisor) Serve(ctx context.Context, lis *net.UnixListener) error {
	go func() { <-ctx.Done(); _ = lis.Close() }()
	for {
		c, err := lis.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil //nolint:nilerr // closed by the shutdown above
			}
			return fmt.Errorf("supervisor: accept: %w", err)
		}
		go s.handle(ctx, c)
	}
}

func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return cred.Uid, nil
}

func (s *Supervisor) handle(ctx context.Context, c *net.UnixConn) {
	defer func() { _ = c.Close() }()
	log := s.cfg.Log.WithName("api")
	if uid, err := peerUID(c); err != nil || uid != 0 {
		log.Info("refused supervisor connection from a non-root peer", "peerUid", uid)
		return
	}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(2*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		log.Error(err, "reading request failed")
		return
	}
	var fds Descriptors
	if oobn > 0 {
		if fds, err = parseRights(oob[:oobn]); err != nil {
			log.Error(err, "bad descriptor in request")
			return
		}
		defer fds.Close()
	}
	var req request
	dec := json.NewDecoder(io.MultiReader(bytes.NewReader(buf[:n]), c))
	if err := dec.Decode(&req); err != nil {
		log.Error(err, "malformed request")
		return
	}
	enc := json.NewEncoder(c)
	reply := func(infos []Info, err error) {
		r := response{Infos: infos}
		if err != nil {
			r.Error = err.Error()
		}
		_ = enc.Encode(r)
	}
	if req.Version > ProtocolVersion {
		reply(nil, fmt.Errorf("supervisor: request of protocol version %d, this supervisor speaks %d (upgrade it)", req.Version, ProtocolVersion))
		return
	}
	switch req.Op {
	case opStart:
		if fds.Fuse == nil {
			reply(nil, errors.New("supervisor: start without a /dev/fuse descriptor"))
			return
		}
		k, err := keys.Decode(bytes.NewReader(req.Keys))
		if err != nil {
			reply(nil, err)
			return
		}
		info, err := s.Start(ctx, req.Spec, fds, k)
		reply([]Info{info}, err)
	case opAttach:
		reply(nil, s.Attach(ctx, req.ID, fds))
	case opDescriptors:
		got, err := s.Descriptors(ctx, req.ID)
		if err != nil {
			reply(nil, err)
			return
		}
		defer got.Close()
		b, _ := json.Marshal(response{})
		_, _, _ = c.WriteMsgUnix(append(b, '\n'), unix.UnixRights(int(got.Fuse.Fd()), int(got.Custody.Fd())), nil)
	case opStop:
		reply(nil, s.Stop(ctx, req.ID))
	case opList:
		infos, err := s.List(ctx)
		reply(infos, err)
	case opGet:
		in, ok := s.Get(req.ID)
		if !ok {
			reply(nil, nil)
			return
		}
		reply([]Info{in}, nil)
	case opHandoff:
		s.serveHandoff(ctx, c, enc, log.WithName("handoff"))
	case opWatch:
		if s.Superseded() {
			// Drivers are to follow the newer supervisor, which serves the
			// node's socket (or is about to): they retry the path.
			reply(nil, ErrHandedOff)
			return
		}
		ch, cancel := s.Subscribe()
		defer cancel()
		go func() { _, _ = io.Copy(io.Discard, c); cancel() }() // client gone
		reply(nil, nil)
		for ev := range ch {
			if err := enc.Encode(ev); err != nil {
				return
			}
		}
	default:
		reply(nil, fmt.Errorf("%w %q", ErrUnknownOp, req.Op))
	}
}

// ErrUnknownOp answers an op this supervisor does not have (an older
// version); Client.Get's error wraps it then.
var ErrUnknownOp = errors.New("supervisor: unknown op")

// Get returns mount id (ok false if there is none).
func (s *Supervisor) Get(id string) (Info, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.mounts[id]
	if !ok {
		return Info{}, false
	}
	return m.info, true
}

// parseRights returns the descriptors of a control message: the first is
// /dev/fuse, the second (if any) the key custody file; more are closed.
func parseRights(oob []byte) (Descriptors, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return Descriptors{}, fmt.Errorf("supervisor: control message: %w", err)
	}
	var all []int
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		all = append(all, fds...)
	}
	if len(all) == 0 {
		return Descriptors{}, errors.New("supervisor: no descriptor in control message")
	}
	for _, fd := range all[min(len(all), 2):] {
		_ = unix.Close(fd)
	}
	unix.CloseOnExec(all[0])
	d := Descriptors{Fuse: os.NewFile(uintptr(all[0]), "/dev/fuse")}
	if len(all) > 1 {
		unix.CloseOnExec(all[1])
		d.Custody = os.NewFile(uintptr(all[1]), "key-custody")
	}
	return d, nil
}

// Client talks to a supervisor over its socket. It implements the same
// Start/Stop/List methods as *Supervisor.
type Client struct {
	// Path is the supervisor socket.
	Path string
	// Timeout bounds each call but Watch (default 90s: Stop waits for a flush).
	Timeout time.Duration
}

func (c *Client) call(ctx context.Context, req request, fds Descriptors) (response, error) {
	resp, _, err := c.exchange(ctx, req, fds, false)
	return resp, err
}

// exchange sends req with fds and reads the reply, with the descriptors it
// carries when wantFDs.
func (c *Client) exchange(ctx context.Context, req request, fds Descriptors, wantFDs bool) (response, Descriptors, error) {
	req.Version = ProtocolVersion
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := c.dial(ctx)
	if err != nil {
		return response{}, Descriptors{}, err
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if err := send(conn, req, fds); err != nil {
		return response{}, Descriptors{}, err
	}
	var got Descriptors
	var first io.Reader = bytes.NewReader(nil)
	if wantFDs {
		buf := make([]byte, 64<<10)
		oob := make([]byte, unix.CmsgSpace(2*4))
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return response{}, Descriptors{}, fmt.Errorf("supervisor: read reply: %w", err)
		}
		if oobn > 0 {
			if got, err = parseRights(oob[:oobn]); err != nil {
				return response{}, Descriptors{}, err
			}
		}
		first = bytes.NewReader(buf[:n])
	}
	var resp response
	if err := json.NewDecoder(io.MultiReader(first, conn)).Decode(&resp); err != nil {
		got.Close()
		return response{}, Descriptors{}, fmt.Errorf("supervisor: read reply: %w", err)
	}
	if resp.Error != "" {
		got.Close()
		return resp, Descriptors{}, errors.New(resp.Error)
	}
	return resp, got, nil
}

func (c *Client) dial(ctx context.Context) (*net.UnixConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Path)
	if err != nil {
		return nil, fmt.Errorf("supervisor: dial %s: %w", c.Path, err)
	}
	return conn.(*net.UnixConn), nil
}

func send(conn *net.UnixConn, req request, fds Descriptors) error {
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("supervisor: encode request: %w", err)
	}
	return writeMsg(conn, append(b, '\n'), fds)
}

// Start sends the descriptors and keys to the supervisor, which starts the
// server (see Supervisor.Start).
func (c *Client) Start(ctx context.Context, spec Spec, fds Descriptors, k keys.Keys) (Info, error) {
	var wire bytes.Buffer
	if err := keys.Encode(&wire, k); err != nil {
		return Info{}, err
	}
	resp, err := c.call(ctx, request{Op: opStart, Spec: spec, Keys: bytes.TrimSpace(wire.Bytes())}, fds)
	if err != nil {
		return Info{}, err
	}
	if len(resp.Infos) != 1 {
		return Info{}, errors.New("supervisor: start: no mount in reply")
	}
	return resp.Infos[0], nil
}

// Stop stops the server of mount id (see Supervisor.Stop).
func (c *Client) Stop(ctx context.Context, id string) error {
	_, err := c.call(ctx, request{Op: opStop, ID: id}, Descriptors{})
	return err
}

// Get returns mount id, if the supervisor runs it. Against a supervisor of
// an older version the error wraps ErrUnknownOp.
func (c *Client) Get(ctx context.Context, id string) (Info, bool, error) {
	resp, err := c.call(ctx, request{Op: opGet, ID: id}, Descriptors{})
	if err != nil {
		if strings.Contains(err.Error(), ErrUnknownOp.Error()) {
			return Info{}, false, fmt.Errorf("%w (%w)", ErrUnknownOp, err)
		}
		return Info{}, false, err
	}
	if len(resp.Infos) == 0 {
		return Info{}, false, nil
	}
	return resp.Infos[0], true, nil
}

// List returns the supervisor's mounts.
func (c *Client) List(ctx context.Context) ([]Info, error) {
	resp, err := c.call(ctx, request{Op: opList}, Descriptors{})
	return resp.Infos, err
}

// Attach gives the supervisor copies of mount id's descriptors (see
// Supervisor.Attach).
func (c *Client) Attach(ctx context.Context, id string, fds Descriptors) error {
	_, err := c.call(ctx, request{Op: opAttach, ID: id}, fds)
	return err
}

// Descriptors returns copies of mount id's descriptors (see
// Supervisor.Descriptors); the caller closes them.
func (c *Client) Descriptors(ctx context.Context, id string) (Descriptors, error) {
	_, fds, err := c.exchange(ctx, request{Op: opDescriptors, ID: id}, Descriptors{}, true)
	if err == nil && (fds.Fuse == nil || fds.Custody == nil) {
		fds.Close()
		return Descriptors{}, errors.New("supervisor: descriptors: the reply carried none")
	}
	return fds, err
}

// Watch streams Events to fn until ctx ends or the connection breaks; it
// returns why it stopped. Callers reconnect (the supervisor may restart).
func (c *Client) Watch(ctx context.Context, fn func(Event)) error {
	return c.watch(ctx, fn, nil)
}

func (c *Client) watch(ctx context.Context, fn func(Event), connected func()) error {
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	go func() { <-ctx.Done(); _ = conn.Close() }()
	if err := send(conn, request{Version: ProtocolVersion, Op: opWatch}, Descriptors{}); err != nil {
		return err
	}
	dec := json.NewDecoder(bufio.NewReader(conn))
	var first response
	if err := dec.Decode(&first); err != nil {
		return fmt.Errorf("supervisor: watch: %w", err)
	}
	if first.Error != "" {
		return fmt.Errorf("supervisor: watch: %s", first.Error)
	}
	if connected != nil {
		go connected()
	}
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("supervisor: watch: %w", err)
		}
		fn(ev)
	}
}

// WatchForever calls Watch again after every disconnect, until ctx ends.
// connected (optional) runs, in its own goroutine, each time the stream
// is established: the supervisor may have restarted.
func (c *Client) WatchForever(ctx context.Context, fn func(Event), connected func(), log logr.Logger) {
	for ctx.Err() == nil {
		if err := c.watch(ctx, fn, connected); err != nil && ctx.Err() == nil {
			log.V(1).Info("supervisor event stream ended; reconnecting", "error", err.Error())
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}
