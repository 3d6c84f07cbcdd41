package csidriver

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"rekey.dev/rekey/csidriver/mounter"
	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/csidriver/volumecontext"
	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/fuseserver/keycustody"
	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/fusebdi"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/sts"
)

var _ csi.NodeServer = (*nodeServer)(nil)

// Runner starts and stops FUSE servers: a *supervisor.Client in
// production, a *supervisor.Supervisor in process for tests.
type Runner interface {
	Start(ctx context.Context, spec supervisor.Spec, fds supervisor.Descriptors, k keys.Keys) (supervisor.Info, error)
	Stop(ctx context.Context, id string) error
	List(ctx context.Context) ([]supervisor.Info, error)
	Attach(ctx context.Context, id string, fds supervisor.Descriptors) error
	Descriptors(ctx context.Context, id string) (supervisor.Descriptors, error)
}

// republishSource is the Swap source of keys from a republish.
const republishSource = "csi-republish"

// maxRead is the largest FUSE read request the mount asks for.
const maxRead = 1 << 20

// nodeServer publishes volumes: mount /dev/fuse at the target, hand the
// descriptor and keys to the Runner, swap keys on republish.
type nodeServer struct {
	csi.UnimplementedNodeServer
	nodeID      string
	kubeletRoot string
	socketUID   int
	mounter     mounter.Interface
	runner      Runner
	precheck    func(context.Context, volumecontext.Volume) error
	exchange    func(context.Context, volumecontext.Volume) (keys.Keys, error)
	stsWindow   time.Duration
	events      *eventPoster
	metrics     *Metrics
	log         logr.Logger

	policy Policy      // what pod authors may choose
	vault  *vault      // the driver's copies of every mount's descriptors
	locks  targetLocks // one publish or unpublish per target at a time
	tokens sync.Map    // target path -> tokenSum of the token last exchanged
	gens   generations // of republish swaps
}

func (s *nodeServer) lock(target string) func() { return s.locks.lock(target) }

// targetLocks serialises the calls for one target path. A target's lock
// exists only while a call holds or waits for it (a node sees a new target
// path for every pod volume, so kept locks would grow without bound).
type targetLocks struct {
	mu sync.Mutex
	m  map[string]*targetLock
}

type targetLock struct {
	mu   sync.Mutex
	refs int // holders and waiters, under targetLocks.mu
}

// lock locks target and returns the unlock.
func (l *targetLocks) lock(target string) func() {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*targetLock{}
	}
	tl := l.m[target]
	if tl == nil {
		tl = &targetLock{}
		l.m[target] = tl
	}
	tl.refs++
	l.mu.Unlock()
	tl.mu.Lock()
	return func() {
		tl.mu.Unlock()
		l.mu.Lock()
		if tl.refs--; tl.refs == 0 {
			delete(l.m, target)
		}
		l.mu.Unlock()
	}
}

// held is how many targets have a lock now (tests).
func (l *targetLocks) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

func (s *nodeServer) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: s.nodeID}, nil
}

func (s *nodeServer) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

// getter is the part of a Runner that returns one mount (the supervisor
// Client has it): a publish then costs the same with 200 mounts as with one.
type getter interface {
	Get(ctx context.Context, id string) (supervisor.Info, bool, error)
}

// find returns the Runner's mount for target, if any.
func (s *nodeServer) find(ctx context.Context, target string) (supervisor.Info, bool, error) {
	if g, ok := s.runner.(getter); ok {
		in, found, err := g.Get(ctx, supervisor.MountID(target))
		if err == nil || !errors.Is(err, supervisor.ErrUnknownOp) {
			if err != nil {
				return supervisor.Info{}, false, fmt.Errorf("get mount: %w", err)
			}
			return in, found, nil
		}
		// A supervisor without "get" (an older version): list.
	}
	infos, err := s.runner.List(ctx)
	if err != nil {
		return supervisor.Info{}, false, fmt.Errorf("list mounts: %w", err)
	}
	id := supervisor.MountID(target)
	for _, in := range infos {
		if in.ID == id {
			return in, true, nil
		}
	}
	return supervisor.Info{}, false, nil
}

func (s *nodeServer) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	start := time.Now()
	target := req.GetTargetPath()
	switch {
	case req.GetVolumeId() == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	case target == "":
		return nil, status.Error(codes.InvalidArgument, "target_path is required")
	case req.GetVolumeCapability() == nil:
		return nil, status.Error(codes.InvalidArgument, "volume_capability is required")
	case req.GetVolumeCapability().GetBlock() != nil:
		return nil, status.Error(codes.InvalidArgument, "volume_capability: block access is not supported, use a filesystem (mount) volume")
	case req.GetStagingTargetPath() != "":
		// We do not offer STAGE_UNSTAGE_VOLUME; kubelet never sends one.
	}
	vol, err := volumecontext.Parse(req.GetVolumeId(), req.GetVolumeContext(), req.GetSecrets())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.policy.Check(vol, req.GetVolumeContext()[contract.PodInfoEphemeral] == "true"); err != nil {
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	if vol.Options, err = s.policy.Limit(vol.Options); err != nil {
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	log := s.log.WithValues("volumeId", vol.ID, "target", target, "pod", vol.SecretRef())
	if ign := volumecontext.IgnoredAttributes(req.GetVolumeContext()); len(ign) > 0 {
		log.V(1).Info("volume attributes ignored", "attributes", ign)
	}
	readOnly := req.GetReadonly() || vol.Options.ReadOnly ||
		req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY ||
		req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY

	defer s.lock(target)()

	info, found, err := s.find(ctx, target)
	if err != nil {
		return nil, status.Error(codes.Unavailable, "FUSE supervisor not reachable: "+err.Error())
	}
	mounted, corrupted, err := s.mounter.IsMountPoint(target)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if d := publishDecision(found, info.Dead, mounted, corrupted); d != publishMount {
		switch d {
		case publishRepublish:
			if corrupted {
				log.Info("the mount did not answer a stat in time, but its FUSE server runs; republishing, not remounting")
			}
			s.republish(ctx, log, vol, info)
			return &csi.NodePublishVolumeResponse{}, nil
		default: // publishRetry
			return nil, status.Error(codes.Unavailable, "the target is a live FUSE mount that the supervisor does not list "+
				"(a node plugin upgrade is handing it to the new node pod); retry")
		}
	}
	if found {
		_ = s.runner.Stop(ctx, info.ID)
	}
	if mounted {
		log.Info("cleaning up a stale mount before publishing")
		if err := s.mounter.Unmount(target); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	if !vol.Token.IsZero() {
		k, err := s.exchange(ctx, vol)
		if err != nil {
			code := codes.Unavailable // an STS outage: kubelet retries
			if sts.IsRefusal(err) {
				code = codes.FailedPrecondition
			}
			return nil, status.Errorf(code, "authType %s: exchanging the service-account token (audience %s) at STS: %v",
				vol.AuthType, vol.Token.Audience, err)
		}
		vol.Keys = k
	}
	if vol.Keys.IsZero() {
		aud := vol.TokenAudience()
		return nil, status.Errorf(codes.FailedPrecondition,
			"authType %s: kubelet passed no service-account token for audience %q and the Secret holds no keys: "+
				"add tokenRequests [{audience: %q}] and requiresRepublish: true to the CSIDriver %s, or put keys in nodePublishSecretRef",
			vol.AuthType, aud, aud, contract.DriverName)
	}
	if err := s.precheck(ctx, vol); err != nil {
		var pe *PrecheckError
		if errors.As(err, &pe) && pe.Kind == PrecheckUnreachable {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "create target: %v", err)
	}
	if err := s.mount(ctx, log, vol, target, readOnly); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	s.rememberToken(target, vol.Token)
	s.metrics.publishSeconds.Observe(time.Since(start).Seconds())
	log.Info("volume published", "readOnly", readOnly, "duration", time.Since(start).String())
	return &csi.NodePublishVolumeResponse{}, nil
}

// What NodePublishVolume does with a target (publishDecision).
type publishAction int

const (
	publishMount     publishAction = iota // (clean up and) mount anew
	publishRepublish                      // a live mount: new keys only
	publishRetry                          // a live mount some other supervisor serves now: retry
)

// publishDecision decides from what the supervisor lists (found, dead) and
// what the mount table says (mounted; corrupted: the stat failed or took
// more than its timeout). A mount whose server the supervisor runs is never
// torn down on a slow stat alone; a live mount the supervisor does not list
// is being handed over between node pods (docs/upgrade.md) and is never
// unmounted for it.
func publishDecision(found, dead, mounted, corrupted bool) publishAction {
	switch {
	case found && !dead && mounted:
		return publishRepublish
	case !found && mounted && !corrupted:
		return publishRetry
	}
	return publishMount
}

func (s *nodeServer) mount(ctx context.Context, log logr.Logger, vol volumecontext.Volume, target string, readOnly bool) error {
	fuse, err := s.mounter.MountFUSE(target, mounter.FUSEOptions{Source: "rekey:" + vol.Bucket, Subtype: "rekey",
		AllowOther: true, ReadOnly: readOnly, MaxRead: maxRead})
	if err != nil {
		return err
	}
	connID, err := s.mounter.ConnectionID(target)
	if err != nil {
		_ = fuse.Close()
		_ = s.mounter.Unmount(target)
		return err
	}
	opts := vol.Options
	opts.ReadOnly = readOnly
	opts.AllowOther = true
	spec := supervisor.Spec{Target: target, VolumeID: vol.ID, Endpoint: vol.Endpoint, Region: vol.Region,
		Bucket: vol.Bucket, Prefix: vol.Prefix, Options: opts.String(), AuthType: vol.AuthType, SecretRef: vol.SecretRef(),
		RoleARN: vol.RoleARN, PodName: vol.Pod.Name, PodNamespace: vol.Pod.Namespace, PodUID: vol.Pod.UID,
		SocketUID: s.socketUID, ConnectionID: connID}
	if vol.Pod.UID != "" {
		spec.PodSocket = filepath.Join(s.kubeletRoot, "pods", vol.Pod.UID, "volumes", "kubernetes.io~empty-dir",
			contract.SocketVolumeName, supervisor.MountID(target)+contract.SocketSuffix)
	}
	custody, err := keycustody.Create("rekey-keys")
	if err != nil {
		_ = fuse.Close()
		_ = s.mounter.Unmount(target)
		return fmt.Errorf("start FUSE server: %w", err)
	}
	fds := supervisor.Descriptors{Fuse: fuse, Custody: custody}
	info, err := s.runner.Start(ctx, spec, fds, vol.Keys)
	if err != nil {
		fds.Close()
		_ = s.mounter.Unmount(target)
		return fmt.Errorf("start FUSE server: %w", err)
	}
	// The supervisor holds its own copies; ours keep the connection alive
	// if the supervisor's container dies.
	s.vault.put(info.ID, fds)
	s.events.status.mounted(info, vol.Keys)
	// The server answered INIT, which set the read-ahead to at most 128 KiB;
	// one FUSE read request's worth lets the kernel ask for the next MiB
	// while the reader copies the last one.
	if err := fusebdi.SetReadahead(target, maxRead>>10); err != nil {
		log.V(1).Info("kernel read-ahead left at its default", "error", err.Error())
	}
	s.metrics.keySet(vol.ID)
	return nil
}

// republish swaps the Secret's current keys into a live mount or, for an
// rrsa/irsa volume with a service-account token, exchanges the token for
// new temporary keys when the token changed or the keys in use expire
// within the refresh window. It never fails the call (older kubelets
// remove the target on a republish error); problems become Events.
func (s *nodeServer) republish(ctx context.Context, log logr.Logger, vol volumecontext.Volume, info supervisor.Info) {
	useToken := !vol.Token.IsZero()
	if vol.Keys.IsZero() && !useToken {
		return
	}
	// Kubelet read the Secret (or the token) just before calling: now is
	// when this sender observed the keys, the generation they carry.
	gen := s.gens.next(time.Now())
	s.events.status.secretSeen(info.Spec, vol.Keys)
	start := time.Now()
	c, err := control.NewClient(info.ControlSocket)
	if err != nil {
		s.events.refreshFailed(info.Spec, "FUSE server control socket: "+err.Error())
		return
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	k, source := vol.Keys, republishSource
	if useToken {
		st, err := c.Status(ctx)
		if err != nil {
			log.Error(err, "republish could not reach the FUSE server")
			s.events.refreshFailed(info.Spec, "FUSE server unreachable: "+status.Convert(err).Message())
			return
		}
		expiring := !st.Expiration.IsZero() && time.Until(st.Expiration) < s.stsWindow
		if s.sameToken(info.Spec.Target, vol.Token) && !expiring {
			return
		}
		if k, err = s.exchange(ctx, vol); err != nil {
			log.Error(err, "republish: STS exchange failed; the keys in use stay", "audience", vol.Token.Audience)
			s.metrics.swaps.WithLabelValues("sts_error").Inc()
			s.events.refreshFailed(info.Spec, "STS exchange of the service-account token failed: "+err.Error())
			return
		}
		source = stsSource(vol.AuthType)
	}
	out, err := c.Swap(ctx, rotation.Request{Keys: k, Source: source, Generation: gen})
	if err != nil {
		log.Error(err, "republish could not reach the FUSE server")
		s.metrics.swaps.WithLabelValues("error").Inc()
		s.events.refreshFailed(info.Spec, "FUSE server unreachable: "+status.Convert(err).Message())
		return
	}
	// The same result names as the sidecar's rekey_sidecar_swaps_total.
	s.metrics.swaps.WithLabelValues(out.Result.String()).Inc()
	switch out.Result {
	case rotation.ResultApplied:
		s.metrics.swapSeconds.Observe(time.Since(start).Seconds())
		s.metrics.keySet(vol.ID)
		s.rememberToken(info.Spec.Target, vol.Token)
		log.Info("keys swapped on republish", "fingerprint", out.Fingerprint, "source", source, "generation", out.Generation)
	case rotation.ResultUnchanged:
		s.rememberToken(info.Spec.Target, vol.Token)
	case rotation.ResultStale:
		// The sidecar pushed keys it observed later, or these are keys
		// the mount replaced: the server keeps its newer keys.
		log.Info("republish keys not applied: the mount runs newer keys", "message", out.Message)
	case rotation.ResultRefused:
		// Posted here, with the republish's own wording; the event stream
		// skips refusals of the driver's own swaps (sources csi-*).
		log.Info("republish keys not applied", "result", out.Result.String(), "reason", out.Reason.String())
		reason := out.Message
		if reason == "" {
			reason = out.Reason.String()
		}
		s.events.refreshFailed(info.Spec, reason)
	}
}

// generations hands out the generations of republish swaps: the instant
// the node plugin observed the keys on the node's clock (which the FUSE
// servers and sidecars share), raised if needed to stay above the last one
// given, so a clock stepping back does not reorder this process's swaps.
type generations struct {
	mu   sync.Mutex
	last uint64
}

func (g *generations) next(now time.Time) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.last = max(uint64(max(now.UnixNano(), 0)), g.last+1)
	return g.last
}

// stsSource is the Swap source of keys the driver exchanged a token for.
func stsSource(authType string) string { return "csi-" + authType }

// tokenSum identifies a token without keeping it.
type tokenSum [sha256.Size]byte

// rememberToken records which token the keys of target came from; a zero
// token forgets.
func (s *nodeServer) rememberToken(target string, t volumecontext.Token) {
	if t.IsZero() {
		s.tokens.Delete(target)
		return
	}
	s.tokens.Store(target, tokenSum(sha256.Sum256([]byte(t.Value))))
}

// sameToken reports whether the keys of target came from t. After a driver
// restart nothing is known, and the first republish exchanges again.
func (s *nodeServer) sameToken(target string, t volumecontext.Token) bool {
	v, ok := s.tokens.Load(target)
	return ok && v.(tokenSum) == tokenSum(sha256.Sum256([]byte(t.Value)))
}

// exchangeToken exchanges the volume's service-account token at its STS
// (AssumeRoleWithOIDC for rrsa, AssumeRoleWithWebIdentity for irsa).
func exchangeToken(duration time.Duration) func(context.Context, volumecontext.Volume) (keys.Keys, error) {
	return func(ctx context.Context, vol volumecontext.Volume) (keys.Keys, error) {
		a, err := sts.New(sts.Config{Kind: vol.AuthType, Endpoint: vol.STSEndpoint, Region: vol.Region,
			RoleARN: vol.RoleARN, OIDCProviderARN: vol.OIDCProviderARN, SessionName: stsSessionName, Duration: duration})
		if err != nil {
			return keys.Keys{}, fmt.Errorf("csidriver: %w", err)
		}
		k, err := a.Assume(ctx, vol.Token.Value)
		if err != nil {
			return keys.Keys{}, fmt.Errorf("csidriver: %w", err)
		}
		return k, nil
	}
}

// stsSessionName is the RoleSessionName of the driver's exchanges.
const stsSessionName = "rekey-csi"

func (s *nodeServer) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target := req.GetTargetPath()
	switch {
	case req.GetVolumeId() == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	case target == "":
		return nil, status.Error(codes.InvalidArgument, "target_path is required")
	}
	log := s.log.WithValues("volumeId", req.GetVolumeId(), "target", target)
	defer s.lock(target)()
	info, found, err := s.find(ctx, target)
	if err != nil {
		// Unmounting alone also stops the server (it exits when its mount goes).
		log.Error(err, "supervisor not reachable; unmounting anyway")
	}
	if found {
		if err := s.runner.Stop(ctx, info.ID); err != nil {
			log.Error(err, "stopping the FUSE server failed; unmounting anyway")
		}
		s.metrics.keyForget(req.GetVolumeId())
	}
	s.events.status.forget(supervisor.MountID(target))
	s.vault.drop(supervisor.MountID(target))
	s.tokens.Delete(target)
	if err := s.mounter.Unmount(target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "remove target: %v", err)
	}
	log.Info("volume unpublished")
	return &csi.NodeUnpublishVolumeResponse{}, nil
}
