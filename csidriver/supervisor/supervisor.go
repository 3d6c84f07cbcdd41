package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
	mountutils "k8s.io/mount-utils"

	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/fuseserver/keycustody"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/podusers"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// Errors of the Supervisor.
var (
	ErrNotFound = errors.New("supervisor: no such mount")
	ErrNotReady = errors.New("supervisor: FUSE server did not become ready")
)

// Aborter aborts a FUSE connection by its fusectl number (mounter.Interface).
type Aborter interface {
	AbortConnection(id uint32) error
}

// Config configures a Supervisor.
type Config struct {
	// FuseBinary is the rekey-fuse executable.
	FuseBinary string
	// StateDir holds one <id>.json Spec and one <id>.sock control socket per
	// mount, plus staging directories. It must be private to root.
	StateDir string
	// ReadyTimeout bounds the wait for a new server (default 30s).
	ReadyTimeout time.Duration
	// StopTimeout bounds a server's flush on Stop before SIGKILL (default 60s).
	StopTimeout time.Duration
	// Aborter aborts the connection of a server that died.
	Aborter Aborter
	// Log is the supervisor's logger.
	Log logr.Logger
	// ServerOutput receives the FUSE servers' stdout and stderr (default
	// os.Stderr). A file, so the servers inherit it and outlive us.
	ServerOutput *os.File
	// OrphanWait bounds the wait for the driver to attach the descriptors
	// of a mount whose server is gone (default DefaultOrphanWait).
	OrphanWait time.Duration
	// ExtraArgs are added to every rekey-fuse command line (tests: -v).
	ExtraArgs []string
	// Memory is the memory budget of each FUSE server (memory.go); zero: none.
	Memory ServerMemory
	// StagingReserve is the free space every FUSE server leaves on the
	// filesystem of the staging directories (staging.go); zero: none.
	StagingReserve StagingReserve
	// Instance is the ID of this supervisor container (owner.go), from
	// init (InstanceEnv). Empty: New makes one and holds its lock itself.
	Instance string
	// Version is this build's rekey version, recorded with every server.
	Version string
	// NodeSocket is the node's supervisor socket (served by whichever
	// supervisor runs the mounts). New asks it before adopting mounts
	// recorded without an owner: if another supervisor answers there, it
	// is one from before hand-off existed, still running them.
	NodeSocket string
}

// Supervisor runs FUSE servers. Its methods are safe for concurrent use.
type Supervisor struct {
	cfg Config
	ctx context.Context // New's: ends the event followers

	stateMu sync.Mutex // one writer of the state directory at a time

	mu      sync.Mutex
	mounts  map[string]*mount
	subs    map[chan Event]struct{}
	pending []pendingEvent // published while nobody subscribed
	ho      handoffState

	ownLock  *OwnerLock      // the instance lock when New took it itself
	handoffs []HandoffReport // what New took over
}

// pendingEvent waits for the first subscriber; ack records it as handled.
type pendingEvent struct {
	ev  Event
	ack func()
}

// maxPending bounds the events kept for a subscriber that is not there yet.
const maxPending = 1024

type mount struct {
	info     Info
	fuse     *os.File      // our dup of the /dev/fuse descriptor; nil if not reclaimed on adoption
	custody  *os.File      // the key custody file; nil if not reclaimed on adoption
	resumed  []time.Time   // when the connection was resumed, within resumeWindow
	attached chan struct{} // closed by Attach, for a server gone without descriptors here
	stopping bool
	exited   chan struct{}
	cancel   context.CancelFunc // stops the event follower
}

// New returns a Supervisor and adopts the servers recorded in the state
// directory that are still running. Servers recorded there that are gone
// are reported as died.
func New(ctx context.Context, cfg Config) (*Supervisor, error) {
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 60 * time.Second
	}
	if cfg.OrphanWait <= 0 {
		cfg.OrphanWait = DefaultOrphanWait
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("supervisor: state dir: %w", err)
	}
	s := &Supervisor{cfg: cfg, ctx: ctx, mounts: map[string]*mount{}, subs: map[chan Event]struct{}{}}
	if s.cfg.Instance == "" {
		lock, err := LockOwner(cfg.StateDir, NewInstanceID())
		if err != nil {
			return nil, err
		}
		s.ownLock, s.cfg.Instance = lock, lock.ID
		// Without init (tests, the demo) the instance is this
		// supervisor's life: the next one adopts its mounts.
		go func() { <-ctx.Done(); _ = lock.Close() }()
	} else if !validInstance(s.cfg.Instance) {
		return nil, fmt.Errorf("supervisor: bad instance id %q", s.cfg.Instance)
	}
	if err := s.adoptAll(ctx); err != nil {
		return nil, err
	}
	s.reportOrphanStaging()
	return s, nil
}

// Instance is this supervisor's instance ID (owner.go).
func (s *Supervisor) Instance() string { return s.cfg.Instance }

// Superseded reports whether a newer supervisor instance took (or takes)
// this one's mounts: it starts none and must not serve the node's socket.
func (s *Supervisor) Superseded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ho.handedOff
}

// HandOffs returns what New took over from other instances.
func (s *Supervisor) HandOffs() []HandoffReport { return s.handoffs }

// Subscribe returns a channel receiving every Event until cancel is called.
// Events published while nobody subscribed (up to maxPending, e.g. what
// adopted servers recorded while no supervisor ran) go to the first
// subscriber.
func (s *Supervisor) Subscribe() (<-chan Event, func()) {
	s.mu.Lock()
	pending := s.pending
	s.pending = nil
	ch := make(chan Event, 64+len(pending))
	for _, p := range pending {
		ch <- p.ev
	}
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	for _, p := range pending {
		if p.ack != nil {
			p.ack()
		}
	}
	return ch, func() {
		s.mu.Lock()
		if _, ok := s.subs[ch]; ok {
			delete(s.subs, ch)
			close(ch)
		}
		s.mu.Unlock()
	}
}

// publish hands ev to every subscriber, or keeps it for the first one;
// ack (if set) runs once ev reached a subscriber.
func (s *Supervisor) publish(ev Event, ack func()) {
	s.mu.Lock()
	if len(s.subs) == 0 {
		if len(s.pending) == maxPending {
			s.cfg.Log.Info("no event subscriber; oldest pending event dropped", "kind", s.pending[0].ev.Kind, "mountId", s.pending[0].ev.MountID)
			s.pending = s.pending[1:]
		}
		s.pending = append(s.pending, pendingEvent{ev: ev, ack: ack})
		s.mu.Unlock()
		return
	}
	for ch := range s.subs {
		select {
		case ch <- ev:
		default:
			s.cfg.Log.Info("event subscriber is slow; event dropped", "kind", ev.Kind, "mountId", ev.MountID)
		}
	}
	s.mu.Unlock()
	if ack != nil {
		ack()
	}
}

// List returns every mount, sorted by nothing in particular.
func (s *Supervisor) List(context.Context) ([]Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Info, 0, len(s.mounts))
	for _, m := range s.mounts {
		out = append(out, m.info)
	}
	return out, nil
}

func (s *Supervisor) statePath(id, ext string) string { return filepath.Join(s.cfg.StateDir, id+ext) }

// Start runs a FUSE server for spec on fds.Fuse (an open /dev/fuse already
// mounted at spec.Target) with the initial keys k, and returns once it
// serves. Start takes its own duplicates of fds; the caller keeps (or
// closes) its copies. Without fds.Custody it makes the key custody file
// itself. A target that already has a live server is returned as is.
func (s *Supervisor) Start(ctx context.Context, spec Spec, fds Descriptors, k keys.Keys) (Info, error) {
	id := MountID(spec.Target)
	log := s.cfg.Log.WithValues("mountId", id, "volumeId", spec.VolumeID, "target", spec.Target)
	s.mu.Lock()
	if m, ok := s.mounts[id]; ok && !m.info.Dead {
		info := m.info
		s.mu.Unlock()
		return info, nil
	}
	if err := s.startAllowedLocked(); err != nil {
		s.mu.Unlock()
		return Info{}, err
	}
	delete(s.mounts, id)
	s.mu.Unlock()

	if fds.Fuse == nil {
		return Info{}, errors.New("supervisor: start without a /dev/fuse descriptor")
	}
	fuse, err := dupFile(fds.Fuse, "/dev/fuse")
	if err != nil {
		return Info{}, err
	}
	var custody *os.File
	if fds.Custody != nil {
		custody, err = dupFile(fds.Custody, "key-custody")
	} else { // a driver of an earlier version
		custody, err = keycustody.Create("rekey-keys")
	}
	if err != nil {
		_ = fuse.Close()
		return Info{}, fmt.Errorf("supervisor: %w", err)
	}
	info := Info{Spec: spec, ID: id, ControlSocket: s.statePath(id, ".sock"), Owner: s.cfg.Instance, Version: s.cfg.Version}
	m, err := s.launch(ctx, info, launch{fuse: fuse, custody: custody, keys: &k})
	if err != nil {
		_ = fuse.Close()
		_ = custody.Close()
		return Info{}, err
	}
	m.info.Started = time.Now()
	if err := s.saveState(m.info); err != nil {
		log.Error(err, "state not saved: a restarted supervisor will not adopt this server")
	}
	started := m.info
	s.mu.Lock()
	s.mounts[id] = m
	s.mu.Unlock()
	s.watch(m, log)
	log.Info("FUSE server started", "pid", started.PID)
	return started, nil
}

// launch is what a FUSE server process is started with.
type launch struct {
	fuse    *os.File   // the mounted /dev/fuse descriptor
	custody *os.File   // the mount's key custody file
	keys    *keys.Keys // initial keys; nil on resume (custody has them)
	resume  bool       // take over the live connection (session file)
}

// Descriptor numbers of a FUSE server: fixed, so that a restarted
// supervisor can take its copies back from a running server (pidfd_getfd).
const (
	serverFuseFD    = 3
	serverReadyFD   = 4
	serverCustodyFD = 5
	serverKeysFD    = 6
)

func (s *Supervisor) command(spec Spec, info Info, l launch) (*exec.Cmd, *os.File, error) {
	staging := s.statePath(info.ID, ".staging")
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return nil, nil, fmt.Errorf("supervisor: staging dir: %w", err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("supervisor: ready pipe: %w", err)
	}
	files := []*os.File{l.fuse, readyW, l.custody}
	args := []string{
		"--fuse-fd=" + strconv.Itoa(serverFuseFD), "--ready-fd=" + strconv.Itoa(serverReadyFD),
		"--key-custody-fd=" + strconv.Itoa(serverCustodyFD), "--session-file=" + s.statePath(info.ID, ".session"),
		"--endpoint=" + spec.Endpoint, "--bucket=" + spec.Bucket,
		"--staging-dir=" + staging, "--control-socket=" + info.ControlSocket,
		// The private control socket is the node plugin's alone; the pod
		// socket serves the sidecar's UID alone (--socket-uid).
		"--allowed-uids=0",
		"--volume-id=" + spec.VolumeID, "--auth-type=" + orDefault(spec.AuthType, "secret"),
	}
	if l.resume {
		args = append(args, "--resume")
	}
	if l.keys != nil {
		keysR, keysW, err := os.Pipe()
		if err != nil {
			_ = readyR.Close()
			_ = readyW.Close()
			return nil, nil, fmt.Errorf("supervisor: keys pipe: %w", err)
		}
		// The pipe buffer (64 KiB) holds the largest keys; write before start.
		err = keys.Encode(keysW, *l.keys)
		_ = keysW.Close()
		if err != nil {
			_ = keysR.Close()
			_ = readyR.Close()
			_ = readyW.Close()
			return nil, nil, err
		}
		files = append(files, keysR)
		args = append(args, "--keys-fd="+strconv.Itoa(serverKeysFD))
	}
	if spec.SocketUID > 0 {
		args = append(args, "--socket-uid="+strconv.Itoa(spec.SocketUID), "--socket-gid="+strconv.Itoa(spec.SocketUID))
		if spec.PodSocket != "" {
			args = append(args, "--pod-userns-file="+podUsernsFile(spec.PodSocket))
		}
	}
	for flag, v := range map[string]string{"region": spec.Region, "prefix": spec.Prefix, "o": s.serverOptions(spec.Options),
		"secret-ref": spec.SecretRef, "role-arn": spec.RoleARN, "pod-socket": spec.PodSocket} {
		if v != "" {
			args = append(args, "--"+flag+"="+v)
		}
	}
	args = append(args, s.cfg.StagingReserve.args()...)
	args = append(args, s.cfg.ExtraArgs...)
	cmd := exec.Command(s.cfg.FuseBinary, args...)
	cmd.ExtraFiles = files
	out := s.cfg.ServerOutput
	if out == nil {
		out = os.Stderr
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Own session: the server outlives the supervisor and its signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Env = s.serverEnv() // GOMEMLIMIT under a budget, nothing else
	return cmd, readyR, nil
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

func waitReady(ctx context.Context, ready *os.File, exited <-chan struct{}, timeout time.Duration) error {
	defer ready.Close()
	got := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := io.ReadFull(ready, b)
		got <- err
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-got:
		if err != nil {
			return fmt.Errorf("%w: it exited before serving", ErrNotReady)
		}
		return nil
	case <-exited:
		return fmt.Errorf("%w: it exited before serving", ErrNotReady)
	case <-timer.C:
		return fmt.Errorf("%w within %s", ErrNotReady, timeout)
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
	}
}

// watch handles the server's exit and follows its events.
func (s *Supervisor) watch(m *mount, log logr.Logger) {
	ctx, cancel := context.WithCancel(s.ctx)
	s.mu.Lock()
	m.cancel = cancel
	s.mu.Unlock()
	go s.followEvents(ctx, m, log)
	go func() {
		<-m.exited
		cancel()
		if s.ctx.Err() != nil {
			// This supervisor is stopping; the next one adopts the mount
			// (and resumes it, or reports it).
			return
		}
		s.mu.Lock()
		stopping := m.stopping
		s.mu.Unlock()
		if stopping {
			return
		}
		if !mountedAt(m.info.Spec.Target) {
			// The mount went away first (unmounted while the supervisor
			// was unreachable): the server exited as it should.
			log.Info("FUSE server exited after its mount was removed", "pid", m.info.PID)
			m.closeFiles()
			s.removeState(m.info.ID)
			// Forgotten last: whoever sees the mount gone from List finds
			// its state gone too.
			s.mu.Lock()
			delete(s.mounts, m.info.ID)
			s.mu.Unlock()
			return
		}
		status := exitStatus(m.info.PID)
		s.awaitDescriptors(m)
		err := s.resume(m, status, log)
		if err == nil {
			return
		}
		// Dead only now: while a resume is tried the mount is not dead
		// (a republish in that window must not replace the mount).
		s.mu.Lock()
		m.info.Dead = true
		s.mu.Unlock()
		status += "; not resumed: " + err.Error()
		log.Info("FUSE server died while mounted; aborting its FUSE connection", "pid", m.info.PID, "status", status)
		if s.cfg.Aborter != nil {
			if err := s.cfg.Aborter.AbortConnection(m.info.Spec.ConnectionID); err != nil {
				log.Error(err, "aborting the FUSE connection failed")
			}
		}
		m.closeFiles()
		s.publish(Event{Kind: EventDied, MountID: m.info.ID, Spec: m.info.Spec, Reason: status, Time: time.Now()}, nil)
	}()
}

func exitStatus(pid int) string { return "process " + strconv.Itoa(pid) + " exited" }

// Stop asks the server of mount id to flush and exit (SIGTERM), kills it
// after StopTimeout, and forgets the mount. It does not unmount: the
// caller does, after Stop returns. An unknown id is not an error.
func (s *Supervisor) Stop(ctx context.Context, id string) error {
	s.mu.Lock()
	m, ok := s.mounts[id]
	var info Info
	var cancel context.CancelFunc
	if ok {
		m.stopping = true
		info, cancel = m.info, m.cancel
		if m.attached != nil { // wake a wait for descriptors: no resume now
			close(m.attached)
			m.attached = nil
		}
	}
	handedOff := s.ho.handedOff
	s.mu.Unlock()
	if !ok {
		// A mount this supervisor does not run: its state goes only if no
		// live supervisor instance owns it (a hand-off moved it).
		if owner := s.stateOwner(id); handedOff || (owner != "" && owner != s.cfg.Instance && ownerAlive(s.cfg.StateDir, owner)) {
			return fmt.Errorf("%w: %s", ErrNotOwner, id)
		}
		s.removeState(id)
		return nil
	}
	if !info.Dead {
		s.stopServer(ctx, m, info, "FUSE server did not stop in time; killing it")
	}
	if cancel != nil {
		cancel()
	}
	m.closeFiles()
	if p := info.Spec.PodSocket; p != "" {
		removeSocket(p) // left behind by a server that was killed
	}
	s.mu.Lock()
	delete(s.mounts, id)
	s.mu.Unlock()
	s.removeState(id)
	return nil
}

// stopServer sends the server of m SIGTERM (it uploads what it staged and
// exits) and SIGKILL after StopTimeout or when ctx ends, logging late, and
// waits for its exit.
func (s *Supervisor) stopServer(ctx context.Context, m *mount, info Info, late string) {
	_ = syscall.Kill(info.PID, syscall.SIGTERM)
	timer := time.NewTimer(s.cfg.StopTimeout)
	defer timer.Stop()
	select {
	case <-m.exited:
	case <-timer.C:
		s.cfg.Log.Info(late, "mountId", info.ID, "pid", info.PID)
		_ = syscall.Kill(info.PID, syscall.SIGKILL)
		<-m.exited
	case <-ctx.Done():
		_ = syscall.Kill(info.PID, syscall.SIGKILL)
		<-m.exited
	}
}

// closeFiles closes the supervisor's copies of the mount's descriptors.
func (m *mount) closeFiles() {
	for _, f := range []*os.File{m.fuse, m.custody} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// removeSocket removes path if it is a socket.
func removeSocket(path string) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
		_ = os.Remove(path)
	}
}

// removeState forgets mount id. Its staging directory goes only as far as
// its journal says the data is uploaded: whatever else is in it stays and
// is reported (pruneStaging).
func (s *Supervisor) removeState(id string) {
	s.releaseServer(id) // its memory cgroup (cgroup_linux.go)
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	spec := s.stateSpec(id)
	for _, ext := range []string{".json", ".sock", ".session"} {
		_ = os.Remove(s.statePath(id, ext))
	}
	s.pruneStaging(id, spec)
}

type state struct {
	Info Info `json:"info"`
}

func (s *Supervisor) saveState(info Info) error {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.writeState(info)
}

func (s *Supervisor) writeState(info Info) error {
	b, err := json.Marshal(state{Info: info})
	if err != nil {
		return fmt.Errorf("supervisor: state: %w", err)
	}
	tmp := s.statePath(info.ID, ".json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("supervisor: state: %w", err)
	}
	if err := os.Rename(tmp, s.statePath(info.ID, ".json")); err != nil {
		return fmt.Errorf("supervisor: state: %w", err)
	}
	return nil
}

// adoptAll takes the mounts of the state directory: those of a live other
// instance through a hand-off (handoff.go), the rest (this instance's,
// a gone instance's, or of state from before owners) by adoption.
func (s *Supervisor) adoptAll(ctx context.Context) error {
	infos, err := s.readStates()
	if err != nil {
		return err
	}
	if newer, ok := newerLive(s.cfg.StateDir, s.cfg.Instance); ok {
		// This container's mounts went (or go) to a newer node pod: leave
		// them and the node's socket to it.
		s.ho.handedOff = true
		s.cfg.Log.Info("a newer supervisor instance runs on this node; this one is superseded and starts no mounts", "newer", newer)
	}
	live := map[string]bool{}
	for _, in := range infos {
		if in.Owner != "" && in.Owner != s.cfg.Instance && !live[in.Owner] && !s.ho.handedOff &&
			olderThan(s.cfg.StateDir, in.Owner, s.cfg.Instance) && ownerAlive(s.cfg.StateDir, in.Owner) {
			live[in.Owner] = true
		}
	}
	for owner := range live {
		rep, err := s.takeOver(ctx, owner)
		if len(rep.Mounts) > 0 || err == nil {
			s.handoffs = append(s.handoffs, rep)
		}
		if errors.Is(err, errOwnerGone) {
			s.cfg.Log.Info("the instance went away; adopting its mounts", "instance", owner)
			continue
		}
		if err != nil {
			return err
		}
	}
	if infos, err = s.readStates(); err != nil {
		return err
	}
	superseded := s.Superseded()
	for _, in := range infos {
		if in.Owner == "" && !superseded && answers(ctx, s.cfg.NodeSocket) {
			return fmt.Errorf("supervisor: a supervisor that cannot hand off its mounts (rekey before hand-off, protocol 2 or older) "+
				"still runs them on %s; this node finishes the upgrade once that node pod is deleted (docs/install.md, \"Upgrade\")", s.cfg.NodeSocket)
		}
	}
	gone := map[string]bool{}
	for _, in := range infos {
		s.mu.Lock()
		_, have := s.mounts[in.ID]
		s.mu.Unlock()
		if have || (in.Owner != "" && in.Owner != s.cfg.Instance && ownerAlive(s.cfg.StateDir, in.Owner)) ||
			(superseded && in.Owner != s.cfg.Instance) { // orphans go to the newer instance
			continue
		}
		if in.Owner != "" && in.Owner != s.cfg.Instance {
			gone[in.Owner] = true
		}
		s.adopt(ctx, in)
	}
	for owner := range gone {
		removeStaleOwner(s.cfg.StateDir, owner)
	}
	return nil
}

// readStates reads every state file.
func (s *Supervisor) readStates() ([]Info, error) {
	paths, err := filepath.Glob(filepath.Join(s.cfg.StateDir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	var out []Info
	for _, p := range paths {
		b, err := os.ReadFile(p) //nolint:gosec // in the state dir
		if errors.Is(err, os.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("supervisor: state: %w", err)
		}
		var st state
		if err := json.Unmarshal(b, &st); err != nil {
			s.cfg.Log.Error(err, "unreadable state file skipped", "path", p)
			continue
		}
		out = append(out, st.Info)
	}
	return out, nil
}

// stateOwner returns the owner recorded for mount id, or "".
func (s *Supervisor) stateOwner(id string) string {
	b, err := os.ReadFile(s.statePath(id, ".json"))
	if err != nil {
		return ""
	}
	var st state
	if json.Unmarshal(b, &st) != nil {
		return ""
	}
	return st.Info.Owner
}

func (s *Supervisor) adopt(ctx context.Context, info Info) {
	log := s.cfg.Log.WithValues("mountId", info.ID, "volumeId", info.Spec.VolumeID, "target", info.Spec.Target, "pid", info.PID)
	info.Adopted = true
	if info.Owner != s.cfg.Instance { // a gone instance's, or from before owners
		info.Owner = s.cfg.Instance
		if err := s.saveState(info); err != nil {
			log.Error(err, "state not saved")
		}
	}
	m := &mount{info: info, exited: make(chan struct{})}
	pidfd, err := openServer(info)
	if err != nil {
		log.Info("recorded FUSE server is gone", "why", err.Error())
		close(m.exited)
	} else {
		// Before the watcher below owns (and closes) pidfd.
		var rerr error
		if m.fuse, m.custody, rerr = reclaim(pidfd, info); rerr != nil {
			log.Info("the adopted server's connection cannot be resumed if it dies", "why", rerr.Error())
		}
		go func() {
			defer func() { _ = unix.Close(pidfd) }()
			fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
			for {
				if _, err := unix.Poll(fds, -1); err != nil && errors.Is(err, unix.EINTR) {
					continue
				}
				break
			}
			close(m.exited)
		}()
		if err := checkControl(ctx, info.ControlSocket); err != nil {
			log.Error(err, "adopted FUSE server does not answer on its control socket")
		}
	}
	s.mu.Lock()
	s.mounts[info.ID] = m
	s.mu.Unlock()
	s.watch(m, log)
	log.Info("FUSE server adopted")
}

// openServer returns a pidfd of the recorded server after checking that
// the PID still runs rekey-fuse for this mount (PIDs are reused).
func openServer(info Info) (int, error) {
	pidfd, err := unix.PidfdOpen(info.PID, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open: %w", err)
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(info.PID) + "/cmdline")
	if err != nil || !strings.Contains(string(cmdline), "--control-socket="+info.ControlSocket+"\x00") {
		_ = unix.Close(pidfd)
		return -1, errors.New("the PID now runs another program")
	}
	return pidfd, nil
}

func checkControl(ctx context.Context, sock string) error {
	c, closer, err := control.Dial(sock)
	if err != nil {
		return err
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Status(ctx, &credentialsv1.StatusRequest{}); err != nil {
		return fmt.Errorf("supervisor: status: %w", err)
	}
	return nil
}

// followEvents follows the server's WatchEvents stream, from the sequence
// after the last one handled (kept in the state file, so a restarted
// supervisor resumes where the previous one stopped), and publishes each
// event. It reconnects until ctx ends (the server exited or the
// supervisor stops).
func (s *Supervisor) followEvents(ctx context.Context, m *mount, log logr.Logger) {
	s.mu.Lock()
	info := m.info
	s.mu.Unlock()
	after := info.EventSequence
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		n, last, err := s.streamEvents(ctx, info, after)
		after = last
		if n > 0 {
			backoff = 100 * time.Millisecond
		}
		if ctx.Err() != nil {
			return
		}
		log.V(1).Info("event stream ended; reconnecting", "error", err, "afterSequence", after, "retryIn", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// streamEvents publishes the events of one WatchEvents stream; it returns
// how many it got and the last sequence handled.
func (s *Supervisor) streamEvents(ctx context.Context, info Info, after uint64) (int, uint64, error) {
	c, closer, err := control.Dial(info.ControlSocket)
	if err != nil {
		return 0, after, err
	}
	defer func() { _ = closer.Close() }()
	stream, err := c.WatchEvents(ctx, &credentialsv1.WatchEventsRequest{AfterSequence: after})
	if err != nil {
		return 0, after, fmt.Errorf("supervisor: watch events: %w", err)
	}
	n := 0
	for {
		resp, err := stream.Recv()
		if err != nil {
			return n, after, fmt.Errorf("supervisor: watch events: %w", err)
		}
		ev := resp.GetEvent()
		seq := ev.GetSequence()
		if after > 0 && seq > after+1 {
			s.cfg.Log.Info("events of the FUSE server were lost (more than it retains happened unwatched)",
				"mountId", info.ID, "from", after+1, "to", seq-1)
		}
		after = seq
		n++
		kind := eventKind(ev.GetKind())
		if kind == "" {
			continue
		}
		s.publish(Event{Kind: kind, MountID: info.ID, Spec: info.Spec, Reason: ev.GetReason(), Fingerprint: ev.GetFingerprint(),
			Source: ev.GetSource(), Time: ev.GetTime().AsTime(), Keys: ev.GetObjectKeys()}, func() { s.ackEvent(info.ID, seq) })
	}
}

func eventKind(k credentialsv1.EventKind) string {
	switch k {
	case credentialsv1.EventKind_EVENT_KIND_APPLIED:
		return "applied"
	case credentialsv1.EventKind_EVENT_KIND_REFUSED:
		return "refused"
	case credentialsv1.EventKind_EVENT_KIND_REPORTED:
		return "reported"
	case credentialsv1.EventKind_EVENT_KIND_STAGED_DATA_RETAINED:
		return EventStagedDataRetained
	}
	return ""
}

// ackEvent records that the events of mount id up to seq reached a
// subscriber, in the state file, so a restarted supervisor does not
// publish them again. A crash between the two publishes an event twice,
// never loses one.
func (s *Supervisor) ackEvent(id string, seq uint64) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.mu.Lock()
	m, ok := s.mounts[id]
	if !ok || m.stopping || m.info.EventSequence >= seq {
		s.mu.Unlock()
		return
	}
	m.info.EventSequence = seq
	info := m.info
	s.mu.Unlock()
	if err := s.writeState(info); err != nil {
		s.cfg.Log.Error(err, "event sequence not saved: a restarted supervisor may post the event again", "mountId", id)
	}
}

// mountedAt reports whether target is in this process's mount table.
func mountedAt(target string) bool {
	infos, err := mountutils.ParseMountInfo("/proc/self/mountinfo")
	if err != nil {
		return true // cannot tell: assume the worst
	}
	clean := filepath.Clean(target)
	for _, in := range infos {
		if in.MountPoint == clean {
			return true
		}
	}
	return false
}

// podUsernsFile is kubelet's record of the user namespace of the pod whose
// rekey-sockets emptyDir holds podSocket:
// <kubelet root>/pods/<uid>/volumes/kubernetes.io~empty-dir/rekey-sockets/<id>.sock
// → <kubelet root>/pods/<uid>/userns.
func podUsernsFile(podSocket string) string {
	return filepath.Join(filepath.Dir(podSocket), "..", "..", "..", podusers.FileName)
}
