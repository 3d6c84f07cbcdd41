// Command rekey-csi is rekey's CSI node plugin. It has two roles, run as
// two containers of the node DaemonSet from the same image:
//
//	rekey-csi driver ...      CSI Identity+Node on --endpoint, kubelet registration, health and metrics
//	rekey-csi supervisor ...  runs one rekey-fuse per mount; receives /dev/fuse fds over --supervisor-socket
//	rekey-csi init -- /rekey-csi supervisor ...
//	                          PID 1 of the supervisor container: restarts the supervisor, reaps orphaned FUSE servers,
//	                          and on SIGTERM stops them so that each uploads its staged data (--server-stop-grace)
//
// See docs/csi-driver.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rekeyv1alpha1 "rekey.dev/rekey/api/v1alpha1"

	"rekey.dev/rekey/csidriver"
	"rekey.dev/rekey/csidriver/mounter"
	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/csidriver/volstatus"
	"rekey.dev/rekey/internal/clusterkey"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/logging"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

type config struct {
	role             string
	endpoint         string
	nodeID           string
	kubeletRoot      string
	supervisorSocket string
	stateDir         string
	fuseBinary       string
	serverMemoryMiB  int
	serverCgroups    bool
	httpAddr         string
	kubeconfig       string
	register         bool
	socketUID        int
	stsDuration      time.Duration
	stsWindow        time.Duration
	logFormat        string
	verbosity        int
	initArgv         []string
	serverStopGrace  time.Duration
	orphanWait       time.Duration
	initStateDir     string
	readyFile        string
	namespace        string
	statusQPS        float64
	statusBurst      int
	inlineVolumes    bool
	inlineEndpoints  string
	insecureSTS      bool
	stagingReserve   supervisor.StagingReserve
	maxWriteCacheMiB int
	maxStagingMiB    int
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "rekey-csi:", err)
		os.Exit(1)
	}
}

func parse(args []string) (config, error) {
	cfg := config{role: "driver"}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cfg.role, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("rekey-csi "+cfg.role, flag.ContinueOnError)
	fs.StringVar(&cfg.endpoint, "endpoint", "unix:///var/lib/kubelet/plugins/"+contract.DriverName+"/csi.sock", "CSI endpoint (driver)")
	fs.StringVar(&cfg.nodeID, "node-id", "", "node name, e.g. $(NODE_NAME) (driver, required)")
	fs.StringVar(&cfg.kubeletRoot, "kubelet-root-dir", contract.DefaultKubeletRootDir, "kubelet --root-dir")
	fs.StringVar(&cfg.supervisorSocket, "supervisor-socket", contract.DefaultSupervisorSocket, "node-local supervisor socket")
	fs.StringVar(&cfg.stateDir, "state-dir", "/var/lib/kubelet/plugins/"+contract.DriverName+"/mounts", "supervisor state (specs and control sockets; no keys)")
	fs.StringVar(&cfg.initStateDir, "instance-state-dir", "",
		"the supervisor's --state-dir, where init holds this container's instance lock so that the next node pod takes its mounts over (init)")
	fs.StringVar(&cfg.readyFile, "ready-file", "", "written once the supervisor serves the node's mounts, removed on exit; the readiness probe checks it (supervisor)")
	fs.StringVar(&cfg.fuseBinary, "fuse-binary", "/rekey-fuse", "rekey-fuse executable (supervisor)")
	fs.IntVar(&cfg.serverMemoryMiB, "server-memory-mib", supervisor.DefaultServerMemoryMiB,
		"memory budget of each rekey-fuse in MiB, from which its GOMEMLIMIT and read-ahead are sized (supervisor; 0: none)")
	fs.BoolVar(&cfg.serverCgroups, "server-memory-cgroup", true,
		"put each rekey-fuse in a memory cgroup of its own limited to --server-memory-mib, where the node allows it (supervisor)")
	fs.IntVar(&cfg.stagingReserve.MiB, "staging-reserve-mib", supervisor.DefaultStagingReserveMiB,
		"free space in MiB that the FUSE servers leave on the staging filesystem (--state-dir's); writes that would use it fail with ENOSPC (supervisor; 0: none)")
	fs.IntVar(&cfg.stagingReserve.Percent, "staging-reserve-percent", supervisor.DefaultStagingReservePercent,
		"free space in percent of the staging filesystem that the FUSE servers leave, the larger of the two applies; keep it above kubelet's nodefs.available eviction threshold (supervisor; 0: none)")
	fs.StringVar(&cfg.httpAddr, "http-addr", "", "address for /healthz and /metrics (driver), e.g. :9808")
	fs.StringVar(&cfg.kubeconfig, "kubeconfig", "", "kubeconfig for posting Events (default: in-cluster; none: Events are logged only)")
	fs.BoolVar(&cfg.register, "register", true, "register with kubelet through <kubelet root>/plugins_registry (driver)")
	fs.IntVar(&cfg.socketUID, "socket-uid", contract.SidecarUID, "owner of the control sockets placed in pods")
	fs.DurationVar(&cfg.stsDuration, "sts-duration", 0, "lifetime asked for the temporary keys of rrsa/irsa volumes (driver; 0: the STS default, 1h)")
	fs.DurationVar(&cfg.stsWindow, "sts-refresh-window", csidriver.DefaultSTSRefreshWindow,
		"a republish exchanges the service-account token again when the keys in use expire within this window (driver)")
	fs.DurationVar(&cfg.serverStopGrace, "server-stop-grace", supervisor.DefaultServerStopGrace,
		"how long init waits, when the container stops, for the FUSE servers to upload staged data and exit before it kills them (init; keep below terminationGracePeriodSeconds)")
	fs.DurationVar(&cfg.orphanWait, "orphan-wait", supervisor.DefaultOrphanWait,
		"how long a supervisor that finds a mount's server gone, without its descriptors, waits for the driver to attach them before it gives the mount up (supervisor)")
	fs.StringVar(&cfg.namespace, "namespace", contract.DefaultNamespace,
		"rekey's namespace, e.g. $(POD_NAMESPACE): where the fingerprint key Secret "+contract.FingerprintKeySecret+" is kept (driver)")
	fs.Float64Var(&cfg.statusQPS, "status-qps", volstatus.DefaultQPS, "RekeyVolumeStatus writes per second this node sends at most (driver)")
	fs.IntVar(&cfg.statusBurst, "status-burst", volstatus.DefaultBurst, "burst of RekeyVolumeStatus writes (driver)")
	fs.BoolVar(&cfg.inlineVolumes, "inline-volumes", true, "allow inline CSI volumes, whose endpoints pod authors choose (driver)")
	fs.StringVar(&cfg.inlineEndpoints, "inline-endpoints", "",
		"comma-separated hosts (host, host:port, *.domain) that inline volumes' url and stsEndpoint may name; empty: any (driver)")
	fs.IntVar(&cfg.maxWriteCacheMiB, "max-write-cache-mb", csidriver.DefaultMaxWriteCacheMiB,
		"largest write_cache_mb a volume may set; a publish asking for more is refused (driver)")
	fs.IntVar(&cfg.maxStagingMiB, "max-staging-mb", csidriver.DefaultMaxStagingMiB,
		"largest staging_mb (staging disk of one mount) a volume may set; a publish asking for more is refused (driver)")
	fs.BoolVar(&cfg.insecureSTS, "allow-insecure-sts", false, "allow http:// STS endpoints, which carry service-account tokens in clear (driver; test clusters)")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "text or json")
	fs.IntVar(&cfg.verbosity, "v", 0, "log verbosity")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if cfg.role == "init" {
		// rekey-csi init [flags] -- command...
		cfg.initArgv = fs.Args()
		return cfg, nil
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if _, err := csidriver.ParseEndpointPatterns(cfg.inlineEndpoints); err != nil {
		return cfg, fmt.Errorf("--inline-endpoints: %w", err)
	}
	if err := cfg.stagingReserve.Validate(); err != nil {
		return cfg, fmt.Errorf("--staging-reserve-mib/--staging-reserve-percent: %w", err)
	}
	if err := (csidriver.Policy{MaxWriteCacheMiB: cfg.maxWriteCacheMiB, MaxStagingMiB: cfg.maxStagingMiB}).ValidateLimits(); err != nil {
		return cfg, err
	}
	if cfg.serverMemoryMiB != 0 && cfg.serverMemoryMiB < supervisor.MinServerMemoryMiB {
		return cfg, fmt.Errorf("--server-memory-mib=%d: want 0 (no budget) or at least %d", cfg.serverMemoryMiB, supervisor.MinServerMemoryMiB)
	}
	return cfg, nil
}

func run(args []string) error {
	cfg, err := parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	log, err := logging.New(os.Stderr, cfg.logFormat, cfg.verbosity)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	m := mounter.New()
	switch cfg.role {
	case "init":
		return supervisor.RunInit(ctx, cfg.initArgv, cfg.serverStopGrace, cfg.initStateDir, log.WithName("init"))
	case "supervisor":
		return runSupervisor(ctx, cfg, m, log)
	case "driver":
		return runDriver(ctx, cfg, m, log)
	case "ready":
		// The supervisor container's readiness probe: its supervisor
		// serves the node's mounts (after taking them over from the node
		// pod it replaces, if any).
		return probeReady(cfg.readyFile)
	}
	return fmt.Errorf("unknown role %q, want driver, supervisor, init or ready", cfg.role)
}

func runDriver(ctx context.Context, cfg config, m mounter.Interface, log logr.Logger) error {
	if cfg.nodeID == "" {
		return errors.New("--node-id is required")
	}
	reg := prometheus.NewRegistry()
	opts := csidriver.Options{NodeID: cfg.nodeID, Version: version, KubeletRootDir: cfg.kubeletRoot,
		SocketUID: cfg.socketUID, Mounter: m, Runner: &supervisor.Client{Path: cfg.supervisorSocket},
		Registerer: reg, Log: log, STSDuration: cfg.stsDuration, STSRefreshWindow: cfg.stsWindow}
	patterns, _ := csidriver.ParseEndpointPatterns(cfg.inlineEndpoints) // checked in parse
	opts.Policy = &csidriver.Policy{InlineVolumes: cfg.inlineVolumes, InlineEndpoints: patterns, InsecureSTS: cfg.insecureSTS,
		MaxWriteCacheMiB: cfg.maxWriteCacheMiB, MaxStagingMiB: cfg.maxStagingMiB}
	if rc, err := restConfig(cfg.kubeconfig); err != nil {
		log.Info("no Kubernetes API access; Events are logged only", "why", err.Error())
	} else {
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return err
		}
		rec, stopRec := csidriver.NewEventRecorder(cs, cfg.nodeID)
		defer stopRec()
		opts.Recorder = rec
		if opts.ClusterKey, err = ensureClusterKey(ctx, cs, cfg.namespace); err != nil {
			log.Error(err, "no fingerprint key: Events and statuses name the access key ID only", "namespace", cfg.namespace)
		}
		if opts.Status, err = statusWriter(rc, cfg, reg, log.WithName("status")); err != nil {
			return err
		}
	}
	d, err := csidriver.New(opts)
	if err != nil {
		return err
	}
	path := strings.TrimPrefix(cfg.endpoint, "unix://")
	lis, err := csidriver.ListenUnix(path)
	if err != nil {
		return err
	}
	if cfg.register {
		go func() {
			if err := d.ServeRegistration(ctx, path); err != nil {
				log.Error(err, "kubelet registration stopped")
			}
		}()
	}
	if cfg.httpAddr != "" {
		hs := &http.Server{Addr: cfg.httpAddr, Handler: d.HTTPHandler(reg), ReadHeaderTimeout: 5 * time.Second}
		go serveHTTP(ctx, hs, log)
		defer hs.Close()
	}
	log.Info("driver serving", "endpoint", path, "nodeId", cfg.nodeID, "supervisor", cfg.supervisorSocket)
	return d.Serve(ctx, lis)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}

func runSupervisor(ctx context.Context, cfg config, m mounter.Interface, log logr.Logger) error {
	if cfg.readyFile != "" {
		_ = os.Remove(cfg.readyFile) // from a supervisor process before this one
	}
	// New takes over the mounts of a running older node pod, if any, before
	// this one serves the node's socket (supervisor/handoff.go).
	sup, err := supervisor.New(ctx, supervisor.Config{FuseBinary: cfg.fuseBinary, StateDir: cfg.stateDir,
		Aborter: m, Log: log.WithName("supervisor"), OrphanWait: cfg.orphanWait,
		Memory:         supervisor.ServerMemory{BudgetMiB: cfg.serverMemoryMiB, Cgroups: cfg.serverCgroups},
		StagingReserve: cfg.stagingReserve,
		Instance:       os.Getenv(supervisor.InstanceEnv), Version: version, NodeSocket: cfg.supervisorSocket})
	if err != nil {
		// Why this node pod is not Ready (a takeover that failed): the
		// readiness probe prints it, and kubelet puts it in the pod's
		// Unhealthy Event.
		if cfg.readyFile != "" {
			_ = os.WriteFile(cfg.readyFile+errorSuffix, []byte(err.Error()+"\n"), 0o600) //nolint:gosec // G703: our own flag
		}
		return err
	}
	if cfg.readyFile != "" {
		_ = os.Remove(cfg.readyFile + errorSuffix) //nolint:gosec // G703: our own flag
	}
	for _, rep := range sup.HandOffs() {
		log.Info("took over the mounts of the previous supervisor", "fromInstance", rep.From, "mounts", len(rep.Mounts))
	}
	hlis, err := supervisor.Listen(supervisor.HandoffSocketPath(cfg.stateDir, sup.Instance()))
	if err != nil {
		return err
	}
	if sup.Superseded() {
		// The old node pod's supervisor restarted after its mounts went to
		// a newer one: it must not take the node's socket back. It serves
		// what it still runs (a hand-off cut short) on its hand-off socket.
		log.Info("superseded by a newer node pod's supervisor; not serving the node's socket", "instance", sup.Instance())
		return sup.Serve(ctx, hlis)
	}
	go func() {
		if err := sup.Serve(ctx, hlis); err != nil {
			log.Error(err, "hand-off socket stopped")
		}
	}()
	lis, err := supervisor.Listen(cfg.supervisorSocket)
	if err != nil {
		return err
	}
	if cfg.readyFile != "" {
		if err := os.WriteFile(cfg.readyFile, []byte(sup.Instance()+"\n"), 0o600); err != nil {
			return fmt.Errorf("ready file: %w", err)
		}
		defer func() { _ = os.Remove(cfg.readyFile) }() //nolint:gosec // G703: our own flag, a path in this container
	}
	log.Info("supervisor serving", "socket", cfg.supervisorSocket, "stateDir", cfg.stateDir, "instance", sup.Instance(), "version", version)
	// The FUSE servers keep running when the supervisor stops.
	return sup.Serve(ctx, lis)
}

// serveHTTP serves hs until ctx ends. A port in use is retried: with
// hostNetwork, the node pod being replaced in a rolling update holds it
// until it goes.
func serveHTTP(ctx context.Context, hs *http.Server, log logr.Logger) {
	for {
		err := hs.ListenAndServe()
		if err == nil || errors.Is(err, http.ErrServerClosed) || ctx.Err() != nil {
			return
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			log.Error(err, "health and metrics endpoint stopped")
			return
		}
		log.Info("health and metrics port in use (the node pod this one replaces still runs); retrying", "addr", hs.Addr)
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// ensureClusterKey reads or creates the fingerprint key, retrying for ten
// seconds while the API server is not reachable (it delays the driver's start).
func ensureClusterKey(ctx context.Context, cs kubernetes.Interface, namespace string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		key, err := clusterkey.Ensure(ctx, cs, namespace)
		if err == nil || apierrors.IsForbidden(err) || errors.Is(err, clusterkey.ErrInvalid) {
			return key, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(2 * time.Second):
		}
	}
}

// statusWriter returns the RekeyVolumeStatus writer, on a client of its
// own whose client-side limit is the writer's.
func statusWriter(rc *rest.Config, cfg config, reg prometheus.Registerer, log logr.Logger) (*volstatus.Writer, error) {
	sc := rest.CopyConfig(rc)
	sc.QPS, sc.Burst = float32(cfg.statusQPS)*2, cfg.statusBurst*2 // the writer paces itself; reads for seeding come on top
	s := runtime.NewScheme()
	if err := rekeyv1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	c, err := client.New(sc, client.Options{Scheme: s})
	if err != nil {
		return nil, fmt.Errorf("status client: %w", err)
	}
	writes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rekey_csi_status_writes_total",
		Help: "RekeyVolumeStatus writes by result (ok, error)."}, []string{"result"})
	reg.MustRegister(writes)
	return volstatus.New(volstatus.Config{Client: c, Node: cfg.nodeID, Version: version, QPS: float32(cfg.statusQPS),
		Burst: cfg.statusBurst, Writes: writes, Log: log}), nil
}

// errorSuffix names the file beside --ready-file with why the supervisor
// could not start (for the readiness probe).
const errorSuffix = ".error"

// probeReady is the supervisor container's readiness probe: its supervisor
// serves the node's mounts (after taking them over from the node pod it
// replaces, if any). Not ready, it says why if the supervisor left a reason.
func probeReady(readyFile string) error {
	if readyFile == "" {
		return errors.New("ready: --ready-file is required")
	}
	if _, err := os.Stat(readyFile); err == nil {
		return nil
	}
	if b, err := os.ReadFile(readyFile + errorSuffix); err == nil && len(b) > 0 {
		msg := strings.TrimSpace(string(b))
		if len(msg) > 1024 {
			msg = msg[:1024] + "…"
		}
		return fmt.Errorf("supervisor not serving: %s", msg)
	}
	return errors.New("supervisor not serving yet (taking over the node's mounts, or starting)")
}
