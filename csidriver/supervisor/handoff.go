package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// Hand-off: a supervisor that starts while another instance's container
// still runs (a node pod of a new version started next to the old one by a
// DaemonSet rolling update with maxSurge) takes over that instance's mounts
// before it serves the node's supervisor socket. Over the old instance's
// hand-off socket (owner.go) it opens one session (opHandoff) and, for
// each mount, asks for it (opRelease): the old supervisor sends SIGTERM to
// its server, which uploads what it can and exits without unmounting, and
// answers with copies of the mount's /dev/fuse and key custody
// descriptors; the new supervisor starts its own rekey-fuse on them with
// --resume (the kernel resends what the old server left unanswered). A
// mount whose new server does not come up goes back (opRestore): the old
// supervisor resumes it with its own rekey-fuse. opHandoffDone ends the
// session; the old supervisor then refuses new mounts for good and its
// pod can go. A session that ends without opHandoffDone (the new
// supervisor died) leaves the old one serving what it still has.
//
// Only one session at a time; while it runs the old supervisor refuses
// Start (the CSI driver's NodePublishVolume fails and kubelet retries,
// which reaches the new supervisor once it serves).

// Errors of the hand-off.
var (
	ErrHandingOff = errors.New("supervisor: handing the node's mounts to a new supervisor; retry")
	ErrHandedOff  = errors.New("supervisor: this supervisor handed its mounts to a newer one; retry (the node's supervisor socket now reaches it)")
	ErrNotOwner   = errors.New("supervisor: the mount belongs to another supervisor instance; retry")
)

// handoffState is the part of Supervisor the hand-off adds (guarded by
// Supervisor.mu).
type handoffState struct {
	handingOff bool // a session runs
	handedOff  bool // a session ended with opHandoffDone
}

// startAllowed tells Start whether it may start a server (s.mu held).
func (s *Supervisor) startAllowedLocked() error {
	switch {
	case s.ho.handedOff:
		return ErrHandedOff
	case s.ho.handingOff:
		return ErrHandingOff
	}
	return nil
}

// serveHandoff runs one hand-off session on c (the old supervisor's side).
func (s *Supervisor) serveHandoff(ctx context.Context, c *net.UnixConn, enc *json.Encoder, log logr.Logger) {
	s.mu.Lock()
	if err := s.startAllowedLocked(); err != nil {
		s.mu.Unlock()
		_ = enc.Encode(response{Error: err.Error()})
		return
	}
	s.ho.handingOff = true
	infos := make([]Info, 0, len(s.mounts))
	for _, m := range s.mounts {
		if !m.info.Dead && !m.stopping {
			infos = append(infos, m.info)
		}
	}
	s.mu.Unlock()
	done := false
	defer func() {
		s.mu.Lock()
		s.ho.handingOff = false
		s.ho.handedOff = s.ho.handedOff || done
		s.mu.Unlock()
		if !done {
			log.Info("hand-off session ended before it was done; serving the mounts that are left")
		}
	}()
	log.Info("handing the node's mounts to a new supervisor", "mounts", len(infos))
	if err := enc.Encode(response{Infos: infos}); err != nil {
		return
	}
	for {
		req, fds, err := readRequest(c)
		if err != nil {
			fds.Close()
			return
		}
		switch req.Op {
		case opRelease:
			info, got, err := s.release(ctx, req.ID, log)
			fds.Close()
			if err != nil {
				_ = enc.Encode(response{Error: err.Error()})
				continue
			}
			err = writeReply(c, response{Infos: []Info{info}}, got)
			got.Close()
			if err != nil {
				return
			}
		case opRestore:
			if len(req.Infos) != 1 || fds.Fuse == nil || fds.Custody == nil {
				fds.Close()
				_ = enc.Encode(response{Error: "supervisor: restore needs the mount and its two descriptors"})
				continue
			}
			err := s.restore(req.Infos[0], fds, log)
			fds.Close()
			_ = enc.Encode(errResponse(err))
		case opHandoffDone:
			fds.Close()
			done = true
			s.mu.Lock()
			s.ho.handedOff = true // before the answer: the peer acts on it
			s.mu.Unlock()
			log.Info("hand-off done: this supervisor serves no mount and starts none")
			_ = enc.Encode(response{})
			s.endSubscriptions() // drivers watch the new supervisor from now on
			return
		default:
			fds.Close()
			_ = enc.Encode(response{Error: fmt.Sprintf("supervisor: op %q in a hand-off session", req.Op)})
		}
	}
}

func errResponse(err error) response {
	if err == nil {
		return response{}
	}
	return response{Error: err.Error()}
}

// release stops the server of mount id without unmounting (SIGTERM: it
// uploads what it can and exits; SIGKILL after StopTimeout) and returns the
// mount and duplicates of its descriptors, forgetting it: its state files
// and staging now belong to whoever takes it.
func (s *Supervisor) release(ctx context.Context, id string, log logr.Logger) (Info, Descriptors, error) {
	s.mu.Lock()
	m, ok := s.mounts[id]
	switch {
	case !ok:
		s.mu.Unlock()
		return Info{}, Descriptors{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	case m.info.Dead || m.stopping:
		s.mu.Unlock()
		return Info{}, Descriptors{}, fmt.Errorf("supervisor: mount %s is stopping or dead", id)
	case m.fuse == nil || m.custody == nil:
		s.mu.Unlock()
		return Info{}, Descriptors{}, fmt.Errorf("supervisor: mount %s: no descriptors held (a server adopted from rekey 0.1); it stays here", id)
	}
	fds, err := (Descriptors{Fuse: m.fuse, Custody: m.custody}).dup()
	if err != nil {
		s.mu.Unlock()
		return Info{}, Descriptors{}, err
	}
	m.stopping = true // its watcher neither resumes nor removes anything
	info, cancel := m.info, m.cancel
	s.mu.Unlock()
	began := time.Now()
	s.stopServer(ctx, m, info, "FUSE server did not stop in time for the hand-off; killing it (the next server uploads its staged data)")
	if cancel != nil {
		cancel()
	}
	m.closeFiles()
	s.releaseServer(id) // its memory cgroup
	s.mu.Lock()
	delete(s.mounts, id)
	s.mu.Unlock()
	log.Info("mount released for the hand-off", "mountId", id, "pid", info.PID, "stopped", time.Since(began).String())
	return info, fds, nil
}

// restore takes back a mount whose hand-off failed: a server of this
// supervisor's version resumes it.
func (s *Supervisor) restore(info Info, fds Descriptors, log logr.Logger) error {
	dups, err := fds.dup()
	if err != nil {
		return err
	}
	info.Owner, info.Version = s.cfg.Instance, s.cfg.Version
	info.Dead, info.Adopted = false, false
	m, err := s.launchResumed(info, dups, "restoring the mount after a failed hand-off failed", log)
	if err != nil {
		dups.Close()
		return fmt.Errorf("supervisor: restore %s: %w", info.ID, err)
	}
	m.info.Started = time.Now()
	if err := s.saveState(m.info); err != nil {
		log.Error(err, "state not saved", "mountId", info.ID)
	}
	s.mu.Lock()
	s.mounts[info.ID] = m
	s.mu.Unlock()
	s.watch(m, log.WithValues("mountId", info.ID))
	log.Info("mount restored after a failed hand-off", "mountId", info.ID, "pid", m.info.PID)
	return nil
}

// readRequest reads one request line and the descriptors on it.
func readRequest(c *net.UnixConn) (request, Descriptors, error) {
	line, fds, err := readLine(c)
	if err != nil {
		return request{}, fds, err
	}
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		return request{}, fds, fmt.Errorf("supervisor: malformed request: %w", err)
	}
	return req, fds, nil
}

// readLine reads up to a newline from c, with the descriptors of the
// control messages on the way (the peer sends one line and waits for the
// answer, so nothing of a next line is read).
func readLine(c *net.UnixConn) ([]byte, Descriptors, error) {
	var (
		line []byte
		fds  Descriptors
		buf  = make([]byte, 64<<10)
		oob  = make([]byte, unix.CmsgSpace(2*4))
	)
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if oobn > 0 && fds.Fuse == nil {
			if got, perr := parseRights(oob[:oobn]); perr == nil {
				fds = got
			}
		}
		line = append(line, buf[:n]...)
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			return line[:i], fds, nil
		}
		if err != nil {
			return nil, fds, fmt.Errorf("supervisor: read: %w", err)
		}
		if n == 0 {
			return nil, fds, fmt.Errorf("supervisor: read: %w", net.ErrClosed)
		}
		if len(line) > 1<<20 {
			return nil, fds, errors.New("supervisor: message too long")
		}
	}
}

// writeReply writes resp with fds (if set) on its first byte.
func writeReply(c *net.UnixConn, resp response, fds Descriptors) error {
	b, err := json.Marshal(resp)
	if err != nil {
		return fmt.Errorf("supervisor: encode reply: %w", err)
	}
	return writeMsg(c, append(b, '\n'), fds)
}

func writeMsg(c *net.UnixConn, b []byte, fds Descriptors) error {
	var oob []byte
	switch {
	case fds.Fuse != nil && fds.Custody != nil:
		oob = unix.UnixRights(int(fds.Fuse.Fd()), int(fds.Custody.Fd()))
	case fds.Fuse != nil:
		oob = unix.UnixRights(int(fds.Fuse.Fd()))
	}
	n, _, err := c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("supervisor: write: %w", err)
	}
	if n < len(b) {
		if _, err := c.Write(b[n:]); err != nil {
			return fmt.Errorf("supervisor: write: %w", err)
		}
	}
	return nil
}

// handoffSession is the new supervisor's side of a session.
type handoffSession struct {
	c *net.UnixConn
}

// openHandoff dials the hand-off socket at path and opens a session; it
// returns the mounts the old supervisor serves.
func openHandoff(ctx context.Context, path string) (*handoffSession, []Info, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, nil, fmt.Errorf("supervisor: dial %s: %w", path, err)
	}
	h := &handoffSession{c: conn.(*net.UnixConn)}
	resp, _, err := h.call(request{Op: opHandoff}, Descriptors{})
	if err != nil {
		_ = h.c.Close()
		return nil, nil, err
	}
	return h, resp.Infos, nil
}

func (h *handoffSession) call(req request, fds Descriptors) (response, Descriptors, error) {
	req.Version = ProtocolVersion
	b, err := json.Marshal(req)
	if err != nil {
		return response{}, Descriptors{}, fmt.Errorf("supervisor: encode request: %w", err)
	}
	if err := writeMsg(h.c, append(b, '\n'), fds); err != nil {
		return response{}, Descriptors{}, err
	}
	line, got, err := readLine(h.c)
	if err != nil {
		got.Close()
		return response{}, Descriptors{}, err
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		got.Close()
		return response{}, Descriptors{}, fmt.Errorf("supervisor: malformed reply: %w", err)
	}
	if resp.Error != "" {
		got.Close()
		return resp, Descriptors{}, errors.New(resp.Error)
	}
	return resp, got, nil
}

// release asks for mount id: its Info and descriptors (the caller closes
// them).
func (h *handoffSession) release(id string) (Info, Descriptors, error) {
	resp, fds, err := h.call(request{Op: opRelease, ID: id}, Descriptors{})
	if err != nil {
		return Info{}, Descriptors{}, err
	}
	if len(resp.Infos) != 1 || fds.Fuse == nil || fds.Custody == nil {
		fds.Close()
		return Info{}, Descriptors{}, errors.New("supervisor: release: the reply lacks the mount or its descriptors")
	}
	return resp.Infos[0], fds, nil
}

func (h *handoffSession) restore(info Info, fds Descriptors) error {
	_, _, err := h.call(request{Op: opRestore, Infos: []Info{info}}, fds)
	return err
}

func (h *handoffSession) done() error {
	_, _, err := h.call(request{Op: opHandoffDone}, Descriptors{})
	return err
}

func (h *handoffSession) close() { _ = h.c.Close() }

// HandoffReport says what a takeover did.
type HandoffReport struct {
	// From is the instance the mounts came from.
	From string
	// Mounts were taken over, in this many milliseconds each (from the
	// release request to the new server serving).
	Mounts []HandedMount
	// Failed mounts stayed with (or went back to) the old supervisor.
	Failed map[string]string
}

// HandedMount is one mount taken over.
type HandedMount struct {
	ID   string
	Took time.Duration
}

// takeOver takes every mount of the live instance owner (the new
// supervisor's side). It retries the dial while the owner's lock is held
// and its supervisor does not answer (its process restarting), for up to
// handoffDialWait.
func (s *Supervisor) takeOver(ctx context.Context, owner string) (HandoffReport, error) {
	rep := HandoffReport{From: owner, Failed: map[string]string{}}
	path := HandoffSocketPath(s.cfg.StateDir, owner)
	log := s.cfg.Log.WithValues("from", owner)
	var (
		h     *handoffSession
		infos []Info
		err   error
	)
	deadline := time.Now().Add(handoffDialWait)
	for {
		h, infos, err = openHandoff(ctx, path)
		if err == nil {
			break
		}
		if !ownerAlive(s.cfg.StateDir, owner) {
			return rep, fmt.Errorf("supervisor: instance %s went away before the hand-off: %w", owner, errOwnerGone)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return rep, fmt.Errorf("supervisor: take over from instance %s: %w", owner, err)
		}
		log.Info("the running supervisor does not answer on its hand-off socket yet; retrying", "error", err.Error())
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	defer h.close()
	log.Info("taking over the mounts of the running supervisor", "mounts", len(infos))
	for _, in := range infos {
		began := time.Now()
		if err := s.takeOne(h, in.ID, log); err != nil {
			if strings.Contains(err.Error(), ErrNotFound.Error()) {
				log.Info("mount stopped during the hand-off (unpublished)", "mountId", in.ID)
				continue
			}
			rep.Failed[in.ID] = err.Error()
			log.Error(err, "mount not taken over; it stays with the running supervisor", "mountId", in.ID)
			continue
		}
		rep.Mounts = append(rep.Mounts, HandedMount{ID: in.ID, Took: time.Since(began)})
	}
	if len(rep.Failed) > 0 {
		return rep, fmt.Errorf("supervisor: %d of %d mounts not taken over from instance %s", len(rep.Failed), len(infos), owner)
	}
	if err := h.done(); err != nil {
		return rep, fmt.Errorf("supervisor: end the hand-off: %w", err)
	}
	removeStaleOwner(s.cfg.StateDir, owner)
	return rep, nil
}

// errOwnerGone: the instance's container ended during the takeover; its
// mounts are adopted like those of any gone instance.
var errOwnerGone = errors.New("owner gone")

// handoffDialWait bounds the wait for a live owner's supervisor to answer.
const handoffDialWait = 2 * time.Minute

// takeOne takes mount id over through h: release, then a server of this
// version resumes the connection; on failure the mount goes back.
func (s *Supervisor) takeOne(h *handoffSession, id string, log logr.Logger) error {
	began := time.Now()
	info, fds, err := h.release(id)
	if err != nil {
		return err
	}
	defer fds.Close()
	log = log.WithValues("mountId", id, "volumeId", info.Spec.VolumeID, "target", info.Spec.Target)
	dups, err := fds.dup()
	if err != nil {
		return s.giveBack(h, info, fds, err, log)
	}
	from, oldPID, oldVersion := info.Owner, info.PID, info.Version
	info.Owner, info.Version = s.cfg.Instance, s.cfg.Version
	info.Dead, info.Adopted = false, false
	info.HandOffs++
	m, err := s.launchResumed(info, dups, "starting the server that takes the mount over failed", log)
	if err != nil {
		dups.Close()
		return s.giveBack(h, info, fds, err, log)
	}
	m.info.Started = time.Now()
	if err := s.saveState(m.info); err != nil {
		log.Error(err, "state not saved: a restarted supervisor will not adopt this server")
	}
	s.mu.Lock()
	s.mounts[id] = m
	s.mu.Unlock()
	s.watch(m, log)
	log.Info("mount taken over", "fromInstance", from, "fromVersion", oldVersion, "oldPid", oldPID, "pid", m.info.PID, "version", s.cfg.Version,
		"took", time.Since(began).String())
	s.publish(Event{Kind: EventHandedOver, MountID: id, Spec: m.info.Spec, Time: time.Now(),
		Reason: fmt.Sprintf("taken over from rekey %s (process %d) by rekey %s (process %d)", orDefault(oldVersion, "unknown"), oldPID,
			orDefault(s.cfg.Version, "unknown"), m.info.PID)}, nil)
	return nil
}

// giveBack returns a mount whose new server did not start to the old
// supervisor; it returns why the takeover failed.
func (s *Supervisor) giveBack(h *handoffSession, info Info, fds Descriptors, why error, log logr.Logger) error {
	if err := h.restore(info, fds); err != nil {
		log.Error(err, "giving the mount back failed too; its connection has no server now")
		return fmt.Errorf("%w; giving it back failed: %w", why, err)
	}
	return fmt.Errorf("the new server did not start (%w); the mount went back", why)
}

// endSubscriptions closes every event subscription: their Watch streams
// end and the drivers reconnect to the node's socket.
func (s *Supervisor) endSubscriptions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.subs {
		delete(s.subs, ch)
		close(ch)
	}
}
