package fuseserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/hanwen/go-fuse/v2/fuse"

	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/fuseserver/mountopts"
	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/fuseserver/s3client"
	"rekey.dev/rekey/fuseserver/s3fs"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/podusers"
)

// Config describes one FUSE server. Descriptor fields use -1 for "none".
type Config struct {
	// Endpoint, Region, Bucket and Prefix locate the data.
	Endpoint, Region, Bucket, Prefix string
	// CAFile is an optional PEM bundle for a private S3 CA.
	CAFile string
	// MountOptions is an ossfs/s3fs-style option list (see mountopts).
	MountOptions string

	// Identity is reported by the control API's Status.
	VolumeID, AuthType, SecretRef, RoleARN string

	// Mountpoint, for standalone mode: the directory to mount.
	Mountpoint string
	// FuseFD, for descriptor mode: an open /dev/fuse already mounted by the parent.
	FuseFD int

	// KeysFD is an inherited pipe carrying the initial keys; KeysFile is a
	// 0600 file holding them, removed once read. At most one is set; one is
	// needed unless KeyCustodyFD holds keys.
	KeysFD   int
	KeysFile string
	// KeyCustodyFD, optional, is an inherited key custody file (package
	// keycustody) that the supervisor holds too: every swap is saved there,
	// and a server that finds keys in it starts on them.
	KeyCustodyFD int

	// StagingDir holds written data until it is uploaded.
	StagingDir string
	// StagingReserveMiB and StagingReservePercent are free space that
	// staging leaves on StagingDir's filesystem (s3fs.Options): the node's
	// administrator sets them through the supervisor, never a pod's mount
	// options. Zero: no reserve.
	StagingReserveMiB     int
	StagingReservePercent int

	// SessionFile, for descriptor mode, records the INIT settings of the
	// connection (package session) once the server serves, so that a later
	// server can resume the connection.
	SessionFile string
	// Resume, for descriptor mode, takes over FuseFD's live connection
	// with the settings in SessionFile instead of answering an INIT, and
	// asks the kernel to resend what an earlier server left unanswered.
	Resume bool

	// ControlSocket is the path of the control API's unix socket; ControlFD
	// an inherited listening socket instead. Neither: no control API.
	ControlSocket string
	ControlFD     int
	// PodSocket is a second control socket, in the pod's rekey-sockets
	// emptyDir, for the pod's sidecar. Its directory may appear after the
	// server starts (kubelet sets up a pod's volumes concurrently): the
	// server creates the socket once it exists, waiting up to
	// PodSocketWait. A socket of its own, not a link to ControlSocket, so
	// the emptyDir may be on another filesystem (medium: Memory).
	//
	// Only the pod's sidecar may use it: its peers are checked against
	// SocketUID alone (AllowedUIDs when SocketUID is -1), so neither root
	// nor any other UID in the pod can swap keys through it.
	PodSocket     string
	PodSocketWait time.Duration
	// PodUsernsFile is kubelet's record of the pod's user namespace
	// (<kubelet root>/pods/<uid>/userns, package podusers), written when
	// kubelet creates the sandbox of a pod with hostUsers: false. While the
	// pod socket waits for its sidecar, the server watches for it; once it
	// appears, SocketUID is mapped to the host UID the sidecar runs as, and
	// the pod socket is given to that UID and serves it. Empty: not watched.
	PodUsernsFile string
	// SocketUID/SocketGID own the sockets (-1: unchanged).
	SocketUID, SocketGID int
	// AllowedUIDs may call the control API on ControlSocket (checked with
	// SO_PEERCRED). Empty means only this process's own UID.
	AllowedUIDs []uint32

	// EventsFD, optional, receives every swap outcome and report as JSON
	// lines. The control API's WatchEvents serves the same events with
	// sequence numbers; the CSI supervisor uses that.
	EventsFD int
	// ReadyFD is closed (after one byte "1" is written) once the
	// filesystem answers and the control API listens.
	ReadyFD int

	// ShutdownTimeout bounds the final upload of staged data on exit.
	ShutdownTimeout time.Duration
}

// DefaultPodSocketWait is how long a server waits for its pod socket's
// directory by default.
const DefaultPodSocketWait = 10 * time.Minute

// DefaultConfig returns a Config with every descriptor unset.
func DefaultConfig() Config {
	return Config{FuseFD: -1, KeysFD: -1, KeyCustodyFD: -1, ControlFD: -1, EventsFD: -1, ReadyFD: -1,
		SocketUID: -1, SocketGID: -1, ShutdownTimeout: 30 * time.Second, PodSocketWait: DefaultPodSocketWait}
}

func (c Config) validate() error {
	var errs []error
	if c.Bucket == "" {
		errs = append(errs, errors.New("bucket is required"))
	}
	if (c.Mountpoint == "") == (c.FuseFD < 0) {
		errs = append(errs, errors.New("exactly one of mountpoint and fuse fd is required"))
	}
	if c.KeysFile != "" && c.KeysFD >= 0 {
		errs = append(errs, errors.New("keys fd and keys file are exclusive"))
	}
	if c.KeysFile == "" && c.KeysFD < 0 && c.KeyCustodyFD < 0 {
		errs = append(errs, errors.New("one of keys fd, keys file and key custody fd is required"))
	}
	if c.StagingDir == "" {
		errs = append(errs, errors.New("staging dir is required"))
	}
	if c.StagingReserveMiB < 0 || c.StagingReservePercent < 0 || c.StagingReservePercent > 90 {
		errs = append(errs, errors.New("staging reserve must be at least 0 MiB and between 0 and 90 percent"))
	}
	if c.Resume && (c.FuseFD < 0 || c.SessionFile == "") {
		errs = append(errs, errors.New("resume needs a fuse fd and a session file"))
	}
	if c.ControlSocket != "" && c.ControlFD >= 0 {
		errs = append(errs, errors.New("control socket and control fd are exclusive"))
	}
	if len(c.Prefix) > 900 || strings.Contains(c.Prefix, "..") {
		errs = append(errs, errors.New("prefix must be under 900 bytes and must not contain '..'"))
	}
	return errors.Join(errs...)
}

// Run serves until ctx ends or the filesystem is unmounted, then uploads
// what is staged and stops.
func Run(ctx context.Context, cfg Config, log logr.Logger) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("fuseserver: invalid config: %w", err)
	}
	opts, err := mountopts.Parse(cfg.MountOptions)
	if err != nil {
		return fmt.Errorf("fuseserver: %w", err)
	}
	start, err := loadStartKeys(cfg)
	if err != nil {
		return fmt.Errorf("fuseserver: initial keys: %w", err)
	}
	initial := start.keys

	client, err := s3client.New(s3client.Config{
		Endpoint: cfg.Endpoint, Region: cfg.Region, Bucket: cfg.Bucket, Prefix: normPrefix(cfg.Prefix),
		PathStyle: opts.PathStyle, CAFile: cfg.CAFile,
	}, initial)
	if err != nil {
		return fmt.Errorf("fuseserver: %w", err)
	}
	if err := client.Validate(ctx, initial); err != nil {
		if !start.fromCustody {
			return fmt.Errorf("fuseserver: initial keys refused: %w", err)
		}
		// A resumed mount is served whatever its keys: the sidecar or the
		// next republish delivers newer ones, and refusing to serve would
		// end the mount.
		log.Error(err, "the newest keys of this mount are refused now; serving on them until new keys arrive",
			"fingerprint", initial.Fingerprint())
	}

	retained := &retainedEvents{}
	fo := fsOptions(cfg, opts, log)
	fo.OnRetained = retained.add // staged data kept on the node, as events
	fsys, err := s3fs.New(client.API(), fo)
	if err != nil {
		return fmt.Errorf("fuseserver: %w", err)
	}
	srv, err := serve(cfg, fsys, opts)
	if err != nil {
		return err
	}
	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()
	if err := srv.WaitMount(); err != nil {
		return fmt.Errorf("fuseserver: mount did not come up: %w", err)
	}
	if err := afterServing(cfg, srv, log); err != nil {
		return err
	}
	log.Info("serving", "bucket", cfg.Bucket, "prefix", cfg.Prefix, "mountpoint", cfg.Mountpoint,
		"fuseFd", cfg.FuseFD, "volumeId", cfg.VolumeID, "fingerprint", initial.Fingerprint())

	mgr := rotation.New(rotation.Identity{VolumeID: cfg.VolumeID, Bucket: cfg.Bucket, Prefix: cfg.Prefix,
		AuthType: cfg.AuthType, SecretRef: cfg.SecretRef, RoleARN: cfg.RoleARN}, initial, client, applier(start, client, log),
		rotation.Options{Ledger: start.ledger})
	done := make(chan struct{})
	defer close(done)
	var events *os.File
	if cfg.EventsFD >= 0 {
		events = os.NewFile(uintptr(cfg.EventsFD), "events")
		defer events.Close()
	}
	go forwardEvents(mgr.Events(), done, writerOrNil(events), log.WithName("events"))
	retained.attach(mgr)

	stopControl, err := startControl(ctx, cfg, mgr, log.WithName("control"))
	if err != nil {
		unmount(srv, cfg, log)
		return err
	}
	defer stopControl()
	if cfg.PodSocket != "" {
		stopPod := startPodSocket(ctx, cfg, mgr, log.WithName("control"))
		defer stopPod()
	}

	signalReady(cfg.ReadyFD, log)

	unmounted := false
	select {
	case <-ctx.Done():
		log.Info("stopping", "why", context.Cause(ctx))
	case <-served:
		// Unmounted from outside (umount): nothing left to unmount.
		unmounted = true
		log.Info("filesystem was unmounted")
	}
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	flushErr := fsys.FlushAll(flushCtx)
	if flushErr != nil {
		log.Error(flushErr, "staged data could not be uploaded; it stays on local disk",
			"stagingDir", cfg.StagingDir, "pending", fsys.Pending())
	}
	if !unmounted {
		unmount(srv, cfg, log)
	}
	// Stops background retries and removes the write cache's copies of
	// uploaded files; data not uploaded stays staged. Not while the mount
	// lives on a descriptor someone else holds: until this process exits
	// it still answers requests (reads of cached copies, uploads of stream
	// parts), and cancelling them would answer the application with
	// errors instead of leaving them to the next server (the kernel
	// resends what is unanswered). The next server, or the supervisor's
	// prune after the unmount, removes the copies the journal marks as
	// uploaded.
	if cfg.FuseFD < 0 || unmounted {
		if err := fsys.Close(); err != nil {
			log.Error(err, "close the filesystem")
		}
	}
	return flushErr
}

// applier is the S3 client, saving to custody first when there is one.
func applier(start startKeys, client rotation.Applier, log logr.Logger) rotation.Applier {
	if start.custody == nil {
		return client
	}
	return custodyApplier{store: start.custody, next: client, log: log.WithName("custody")}
}

func allowedUIDs(cfg Config) []uint32 {
	if len(cfg.AllowedUIDs) == 0 {
		return []uint32{uint32(os.Geteuid())}
	}
	return cfg.AllowedUIDs
}

func listenControl(cfg Config, path string, log logr.Logger) (net.Listener, error) {
	opts := control.ListenOptions{Path: path, AllowedUIDs: allowedUIDs(cfg), Log: log}
	if cfg.SocketUID >= 0 || cfg.SocketGID >= 0 {
		opts.Chown = true
		opts.OwnerUID, opts.OwnerGID = ownerOrSelf(cfg.SocketUID, os.Geteuid()), ownerOrSelf(cfg.SocketGID, os.Getegid())
	}
	lis, err := control.Listen(opts)
	if err != nil {
		return nil, fmt.Errorf("fuseserver: control socket: %w", err)
	}
	return lis, nil
}

func startControl(ctx context.Context, cfg Config, mgr *rotation.Manager, log logr.Logger) (func(), error) {
	var lis net.Listener
	var err error
	switch {
	case cfg.ControlSocket != "":
		lis, err = listenControl(cfg, cfg.ControlSocket, log)
	case cfg.ControlFD >= 0:
		var raw net.Listener
		if raw, err = net.FileListener(os.NewFile(uintptr(cfg.ControlFD), "control")); err == nil {
			lis, err = control.NewListener(raw, allowedUIDs(cfg), log)
		}
	default:
		log.Info("no control socket configured; keys cannot be swapped")
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fuseserver: control socket: %w", err)
	}
	return serveControl(ctx, lis, mgr, log), nil
}

// serveControl serves the control API on lis until the returned stop is
// called (after ctx ends, RPCs in flight finish first).
func serveControl(ctx context.Context, lis net.Listener, mgr *rotation.Manager, log logr.Logger) func() {
	srv := control.NewServer(mgr, control.Options{Log: log})
	serveCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := srv.Serve(serveCtx, lis); err != nil {
			log.Error(err, "control API stopped")
		}
	}()
	return func() { cancel(); <-stopped }
}

// podSocketPoll is how often the pod socket's directory is looked for.
const podSocketPoll = 250 * time.Millisecond

// startPodSocket serves the control API on cfg.PodSocket too, once its
// directory exists. A missing directory is not an error: the pod then has
// no sidecar, and rotation happens through republish. Closing the
// listener on stop removes the socket.
func startPodSocket(ctx context.Context, cfg Config, mgr *rotation.Manager, log logr.Logger) func() {
	log = log.WithValues("podSocket", cfg.PodSocket)
	waitCtx, cancelWait := context.WithCancel(ctx)
	var stopServe func()
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(cfg.PodSocketWait)
		dir := filepath.Dir(cfg.PodSocket)
		for {
			if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
				break
			}
			if time.Now().After(deadline) {
				log.Info("the pod has no socket directory; its keys rotate through republish only", "waited", cfg.PodSocketWait)
				return
			}
			select {
			case <-waitCtx.Done():
				return
			case <-time.After(podSocketPoll):
			}
		}
		podCfg := cfg
		if cfg.SocketUID >= 0 {
			podCfg.AllowedUIDs = []uint32{uint32(cfg.SocketUID)}
		}
		lis, err := listenControl(podCfg, cfg.PodSocket, log)
		if err != nil {
			log.Error(err, "the control socket could not be created in the pod; its sidecar cannot reach this volume")
			return
		}
		log.V(1).Info("control socket created in the pod")
		stopServe = serveControl(ctx, lis, mgr, log)
		if cfg.PodUsernsFile != "" && cfg.SocketUID >= 0 {
			followPodUserns(waitCtx, cfg, lis, deadline, log)
		}
	}()
	return func() {
		cancelWait()
		<-done
		if stopServe != nil {
			stopServe()
		}
	}
}

// followPodUserns waits, until deadline, for kubelet to record the pod's
// user namespace, then admits the host UID the sidecar runs as on the pod
// socket. A pod without a user namespace never gets the file; its sidecar's
// UID is the same on the node, admitted from the start.
func followPodUserns(ctx context.Context, cfg Config, lis net.Listener, deadline time.Time, log logr.Logger) {
	adm, ok := lis.(control.Admitter)
	if !ok {
		return
	}
	for {
		m, err := podusers.Read(cfg.PodUsernsFile)
		switch {
		case err == nil:
			uid, okU := m.HostUID(uint32(cfg.SocketUID))
			gid, okG := m.HostGID(ownerOrSelf(cfg.SocketGID, cfg.SocketUID))
			if !okU || !okG {
				log.Error(nil, "the pod's user namespace does not map the sidecar's UID; its sidecar cannot reach this volume",
					"sidecarUid", cfg.SocketUID)
				return
			}
			if err := adm.Admit(uid, gid); err != nil {
				log.Error(err, "the pod socket could not be given to the sidecar's host UID; its sidecar cannot reach this volume")
				return
			}
			log.Info("the pod runs in a user namespace; its sidecar is admitted by its host UID",
				"sidecarUid", cfg.SocketUID, "hostUid", uid)
			return
		case !errors.Is(err, fs.ErrNotExist):
			log.Error(err, "kubelet's record of the pod's user namespace is unreadable; a sidecar in a user namespace cannot reach this volume")
			return
		}
		if time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(podSocketPoll):
		}
	}
}

func ownerOrSelf(id, self int) uint32 {
	if id >= 0 {
		return uint32(id)
	}
	return uint32(self)
}

func fsOptions(cfg Config, o mountopts.Options, log logr.Logger) s3fs.Options {
	fo := s3fs.Options{
		Bucket: cfg.Bucket, Prefix: cfg.Prefix,
		UID: o.UID, GID: o.GID, Umask: o.Umask, MountUmask: o.MountUmask, ReadOnly: o.ReadOnly,
		ForceUID: o.UIDSet, ForceGID: o.GIDSet, ForceUmask: o.UmaskSet,
		StatCacheTTL: o.StatCacheTTL, StatCacheSize: o.StatCacheSize,
		StagingDir: cfg.StagingDir, PartSize: int64(o.PartSizeMiB) << 20,
		MultipartThreshold: int64(o.ThresholdMiB) << 20,
		ReaddirPlusAuto:    o.ReaddirPlusAuto,
		StagingLimit:       int64(o.StagingMiB) << 20,
		Logger:             log.WithName("fs"),
	}
	fo.StagingReserve, fo.StagingReservePercent = int64(cfg.StagingReserveMiB)<<20, cfg.StagingReservePercent
	if o.WriteCacheMiB == 0 {
		fo.WriteCacheSize = -1
	} else {
		fo.WriteCacheSize = int64(o.WriteCacheMiB) << 20
	}
	if o.ReadAheadMiB == 0 {
		fo.ReadAheadMemory = -1
	} else {
		fo.ReadAheadMemory = int64(o.ReadAheadMiB) << 20
	}
	// mountopts uses 0 for "no masking" / "no caching"; s3fs uses 0 for defaults.
	if fo.Umask == 0 {
		fo.Umask = s3fs.UmaskNone
	}
	if fo.MountUmask == 0 {
		fo.MountUmask = s3fs.UmaskNone
	}
	if fo.StatCacheTTL == 0 {
		fo.StatCacheTTL = -1
	}
	if fo.StatCacheSize == 0 {
		fo.StatCacheTTL = -1
	}
	return fo
}

func readInitialKeys(cfg Config) (keys.Keys, error) {
	if cfg.KeysFile != "" {
		return keys.ReadFile(cfg.KeysFile)
	}
	f := os.NewFile(uintptr(cfg.KeysFD), "keys")
	if f == nil {
		return keys.Keys{}, fmt.Errorf("keys fd %d is not open", cfg.KeysFD)
	}
	defer f.Close()
	return keys.Decode(f)
}

func normPrefix(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return ""
	}
	return p + "/"
}

// signalReady tells the parent that the mount answers and the control API
// listens: one byte, then EOF.
func signalReady(fd int, log logr.Logger) {
	if fd < 0 {
		return
	}
	f := os.NewFile(uintptr(fd), "ready")
	if _, err := f.Write([]byte("1")); err != nil {
		log.Error(err, "signalling readiness failed")
	}
	_ = f.Close()
}

func unmount(srv *fuse.Server, cfg Config, log logr.Logger) {
	if cfg.FuseFD >= 0 {
		// The parent mounted; it unmounts. Stop serving the descriptor.
		return
	}
	for i := 0; i < 10; i++ {
		if err := srv.Unmount(); err == nil {
			return
		} else if i == 9 {
			log.Error(err, "unmount failed", "mountpoint", cfg.Mountpoint)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func writerOrNil(f *os.File) interface{ Write([]byte) (int, error) } {
	if f == nil {
		return nil
	}
	return f
}
