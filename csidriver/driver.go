package csidriver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"k8s.io/client-go/tools/record"
	registerv1 "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"rekey.dev/rekey/csidriver/mounter"
	"rekey.dev/rekey/csidriver/volstatus"
	"rekey.dev/rekey/csidriver/volumecontext"
	"rekey.dev/rekey/internal/contract"
)

// Options configure a Driver. Mounter and Runner are required.
type Options struct {
	// NodeID is the node's name (NodeGetInfo).
	NodeID string
	// Version is reported by GetPluginInfo.
	Version string
	// KubeletRootDir is kubelet's --root-dir (contract.DefaultKubeletRootDir).
	KubeletRootDir string
	// SocketUID owns the control sockets placed in pods (contract.SidecarUID).
	SocketUID int
	// Mounter mounts /dev/fuse; mounter.New() in production.
	Mounter mounter.Interface
	// Runner runs the FUSE servers: a *supervisor.Client in production.
	Runner Runner
	// Precheck tests a volume's keys before mounting; Precheck when nil.
	Precheck func(context.Context, volumecontext.Volume) error
	// STSDuration is the lifetime asked for temporary keys the driver gets
	// for rrsa/irsa volumes (DurationSeconds); 0 lets STS choose (1 h).
	STSDuration time.Duration
	// STSRefreshWindow: a republish exchanges the token again when the keys
	// in use expire within this window (default DefaultSTSRefreshWindow),
	// besides whenever kubelet passes a new token.
	STSRefreshWindow time.Duration
	// Recorder posts Events on pods; nil logs them only.
	Recorder record.EventRecorder
	// RefreshedEventInterval rate-limits CredentialRefreshed per volume
	// and pod (default 10 minutes).
	RefreshedEventInterval time.Duration
	// Registerer receives the metrics; nil keeps them private.
	Registerer prometheus.Registerer
	// ClusterKey keys the fingerprints in Events and status objects
	// (package clusterkey); nil: they name the access key ID only.
	ClusterKey []byte
	// Status writes the RekeyVolumeStatus objects; nil: none are written.
	Status *volstatus.Writer
	// Policy is what pod authors may choose (policy.go); nil: DefaultPolicy.
	Policy *Policy
	// Log is the driver's logger.
	Log logr.Logger
}

// DefaultSTSRefreshWindow is Options.STSRefreshWindow's default: kubelet
// republishes about every minute, so keys are renewed well before they expire.
const DefaultSTSRefreshWindow = 10 * time.Minute

// Driver is the CSI node plugin.
type Driver struct {
	opts     Options
	identity *identityServer
	node     *nodeServer
	events   *eventPoster
	metrics  *Metrics
}

// New returns a Driver.
func New(opts Options) (*Driver, error) {
	if opts.Mounter == nil || opts.Runner == nil {
		return nil, errors.New("csidriver: Mounter and Runner are required")
	}
	if opts.KubeletRootDir == "" {
		opts.KubeletRootDir = contract.DefaultKubeletRootDir
	}
	if opts.Precheck == nil {
		opts.Precheck = Precheck
	}
	if opts.STSRefreshWindow <= 0 {
		opts.STSRefreshWindow = DefaultSTSRefreshWindow
	}
	if opts.RefreshedEventInterval == 0 {
		opts.RefreshedEventInterval = 10 * time.Minute
	}
	m := NewMetrics(opts.Registerer)
	v := newVault()
	ev := &eventPoster{rec: opts.Recorder, log: opts.Log.WithName("events"), metrics: m,
		status:         newKeyStatus(opts.ClusterKey, v, opts.Status, opts.Registerer, opts.Log.WithName("status")),
		refreshedEvery: opts.RefreshedEventInterval}
	policy := DefaultPolicy
	if opts.Policy != nil {
		policy = *opts.Policy
	}
	return &Driver{
		opts:     opts,
		identity: &identityServer{version: opts.Version, runner: opts.Runner},
		node: &nodeServer{nodeID: opts.NodeID, kubeletRoot: opts.KubeletRootDir, socketUID: opts.SocketUID,
			mounter: opts.Mounter, runner: opts.Runner, precheck: opts.Precheck, events: ev, metrics: m,
			exchange: exchangeToken(opts.STSDuration), stsWindow: opts.STSRefreshWindow,
			vault: v, policy: policy, log: opts.Log.WithName("node")},
		events:  ev,
		metrics: m,
	}, nil
}

// GRPCServer returns a gRPC server with the Identity and Node services and
// the secret-stripping logging interceptor.
func (d *Driver) GRPCServer() *grpc.Server {
	srv := grpc.NewServer(grpc.UnaryInterceptor(LoggingInterceptor(d.opts.Log.WithName("grpc"))))
	csi.RegisterIdentityServer(srv, d.identity)
	csi.RegisterNodeServer(srv, d.node)
	return srv
}

// Serve serves CSI on lis and turns FUSE server outcomes into Events,
// until ctx ends.
func (d *Driver) Serve(ctx context.Context, lis net.Listener) error {
	srv := d.GRPCServer()
	if d.opts.Status != nil {
		go d.opts.Status.Run(ctx)
	}
	go d.events.watchEvents(ctx, d.opts.Runner, func() { d.node.vault.sync(ctx, d.opts.Runner, d.node.log.WithName("vault")) })
	go func() { <-ctx.Done(); srv.GracefulStop() }()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("csidriver: serve: %w", err)
	}
	return nil
}

// ListenUnix removes a stale socket at path and listens there.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("csidriver: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("csidriver: listen %s: %w", path, err)
	}
	// Closing leaves the path alone: during an upgrade the node pod of the
	// new version binds the same path, and the old pod's exit must not
	// unlink the new pod's socket.
	lis.SetUnlinkOnClose(false)
	return lis, nil
}

// removeIfSame removes path if it is still the file made (the socket this
// process bound), not one a newer node pod bound there since.
func removeIfSame(path string, made os.FileInfo) {
	if now, err := os.Lstat(path); err == nil && made != nil && os.SameFile(made, now) {
		_ = os.Remove(path)
	}
}

// registration is kubelet's plugin watcher API: kubelet finds the socket in
// <root>/plugins_registry/, asks GetInfo, and reports the outcome.
type registration struct {
	registerv1.UnimplementedRegistrationServer
	endpoint string
	log      logr.Logger
}

func (r *registration) GetInfo(context.Context, *registerv1.InfoRequest) (*registerv1.PluginInfo, error) {
	return &registerv1.PluginInfo{Type: registerv1.CSIPlugin, Name: contract.DriverName, Endpoint: r.endpoint,
		SupportedVersions: []string{"1.0.0"}}, nil
}

func (r *registration) NotifyRegistrationStatus(_ context.Context, st *registerv1.RegistrationStatus) (*registerv1.RegistrationStatusResponse, error) {
	if st.GetPluginRegistered() {
		r.log.Info("registered with kubelet")
	} else {
		r.log.Error(errors.New(st.GetError()), "kubelet refused the registration")
	}
	return &registerv1.RegistrationStatusResponse{}, nil
}

// ServeRegistration serves kubelet's plugin registration on
// <kubelet root>/plugins_registry/<driver>-reg.sock, pointing kubelet at
// csiEndpoint, until ctx ends.
func (d *Driver) ServeRegistration(ctx context.Context, csiEndpoint string) error {
	path := filepath.Join(d.opts.KubeletRootDir, "plugins_registry", contract.DriverName+"-reg.sock")
	lis, err := ListenUnix(path)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	registerv1.RegisterRegistrationServer(srv, &registration{endpoint: csiEndpoint, log: d.opts.Log.WithName("registration")})
	made, _ := os.Lstat(path)
	go func() { <-ctx.Done(); srv.Stop(); removeIfSame(path, made) }()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("csidriver: registration: %w", err)
	}
	return nil
}

// HTTPHandler serves /healthz (the supervisor answers) and /metrics.
func (d *Driver) HTTPHandler(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := d.opts.Runner.List(r.Context()); err != nil {
			http.Error(w, "supervisor: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if gatherer != nil {
		mux.Handle("/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if infos, err := d.opts.Runner.List(r.Context()); err == nil {
				d.metrics.mounts.Set(float64(len(infos)))
				versions := make([]string, 0, len(infos))
				for _, in := range infos {
					if !in.Dead {
						versions = append(versions, in.Version)
					}
				}
				d.metrics.setServers(versions)
			}
			d.metrics.refreshKeyAge()
			promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}).ServeHTTP(w, r)
		}))
	}
	return mux
}

// NodeServer returns the Node service, for embedding it in another gRPC
// server (the sanity tests pair it with a test-only controller).
func (d *Driver) NodeServer() csi.NodeServer { return d.node }
