// Command rekey-controller provisions s3.rekey.dev volumes: it watches
// PersistentVolumeClaims of StorageClasses whose provisioner is
// s3.rekey.dev and creates a prefix in a shared bucket, or a bucket, for
// each, through rekey's CSI Controller service, and deletes it again under
// the Delete reclaim policy. Replicas elect one leader (a Lease); only the
// leader provisions.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"rekey.dev/rekey/csidriver"
	"rekey.dev/rekey/internal/logging"
	"rekey.dev/rekey/provisioner"
)

// version is set by the build (-X main.version).
var version = "dev"

// Config is everything the flags set.
type Config struct {
	Kubeconfig    string
	Namespace     string
	LeaderElect   bool
	LeaseName     string
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	HealthAddr    string
	Identity      string
	Threads       int
	MaxDeletes    int
	RetryStart    time.Duration
	RetryMax      time.Duration
	LogFormat     string
	Verbosity     int
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := parseFlags(flag.NewFlagSet("rekey-controller", flag.ContinueOnError), os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err == nil {
		// The library also logs through klog's global logger (HandleError);
		// set it once, before anything runs.
		var log logr.Logger
		if log, err = logging.New(os.Stderr, cfg.LogFormat, cfg.Verbosity); err == nil {
			klog.SetLogger(log.WithName("provision-controller"))
			err = run(ctx, cfg)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rekey-controller:", err)
		os.Exit(1)
	}
}

func parseFlags(fs *flag.FlagSet, args []string) (Config, error) {
	var cfg Config
	host, _ := os.Hostname()
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster)")
	fs.StringVar(&cfg.Namespace, "namespace", "", "namespace of the leader election Lease, e.g. $(POD_NAMESPACE) (required with --leader-elect)")
	fs.BoolVar(&cfg.LeaderElect, "leader-elect", true, "elect a leader among the replicas; only the leader provisions")
	fs.StringVar(&cfg.LeaseName, "leader-election-id", "rekey-controller", "name of the leader election Lease")
	fs.DurationVar(&cfg.LeaseDuration, "leader-election-lease-duration", 15*time.Second, "how long a leader's Lease lasts without renewal")
	fs.DurationVar(&cfg.RenewDeadline, "leader-election-renew-deadline", 10*time.Second, "how long the leader tries to renew before it gives up")
	fs.DurationVar(&cfg.RetryPeriod, "leader-election-retry-period", 2*time.Second, "how often candidates try to take the Lease")
	fs.StringVar(&cfg.Identity, "identity", host, "this replica's name in the Lease, e.g. $(POD_NAME)")
	fs.StringVar(&cfg.HealthAddr, "health-addr", ":8081", `address of /healthz ("" disables)`)
	fs.IntVar(&cfg.Threads, "threads", 4, "claims and volumes handled in parallel")
	fs.IntVar(&cfg.MaxDeletes, "max-deletes-per-call", csidriver.DefaultMaxDeletesPerCall, "objects one DeleteVolume call removes before it answers 'more remain'")
	fs.DurationVar(&cfg.RetryStart, "retry-interval-start", time.Second, "first retry delay after a failed provisioning or deletion (doubles)")
	fs.DurationVar(&cfg.RetryMax, "retry-interval-max", 5*time.Minute, "longest retry delay")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "text or json")
	fs.IntVar(&cfg.Verbosity, "v", 0, "log verbosity")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	switch {
	case fs.NArg() > 0:
		return Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	case cfg.LeaderElect && cfg.Namespace == "":
		return Config{}, errors.New("--namespace is required with --leader-elect")
	case cfg.Threads < 1 || cfg.MaxDeletes < 1:
		return Config{}, errors.New("--threads and --max-deletes-per-call must be at least 1")
	case cfg.Identity == "":
		return Config{}, errors.New("--identity is required (no hostname)")
	}
	return cfg, nil
}

func run(ctx context.Context, cfg Config) error {
	log, err := logging.New(os.Stderr, cfg.LogFormat, cfg.Verbosity)
	if err != nil {
		return err
	}
	ctx = klog.NewContext(ctx, log) // the library logs through the context's logger
	rc, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	rc.UserAgent = "rekey-controller/" + version
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if cfg.HealthAddr != "" {
		if err := serveHealth(ctx, cfg.HealthAddr); err != nil {
			return err
		}
	}
	// Built before the election: the library registers types in client-go's
	// global scheme when it is created, which must not happen while the
	// elector's requests use it.
	rec, stopEvents := csidriver.NewEventRecorder(cs, cfg.Identity)
	defer stopEvents()
	ctrl := csidriver.NewControllerServer(csidriver.ControllerOptions{MaxDeletesPerCall: cfg.MaxDeletes, Log: log.WithName("controller")})
	pc := provisioner.NewController(ctx, cs, provisioner.New(cs, ctrl, rec, log.WithName("provisioner")),
		provisioner.Options{Threads: cfg.Threads, RetryIntervalStart: cfg.RetryStart, RetryIntervalMax: cfg.RetryMax})
	provision := pc.Run
	if !cfg.LeaderElect {
		provision(ctx)
		return nil
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, cfg.Namespace, cfg.LeaseName, cs.CoreV1(), cs.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: cfg.Identity})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	lost := make(chan struct{})
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: cfg.LeaseDuration, RenewDeadline: cfg.RenewDeadline, RetryPeriod: cfg.RetryPeriod,
		ReleaseOnCancel: true, Name: cfg.LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) { log.Info("leading", "identity", cfg.Identity); provision(ctx) },
			OnStoppedLeading: func() { close(lost) },
			OnNewLeader:      func(id string) { log.Info("leader", "identity", id) },
		},
	})
	<-lost
	if ctx.Err() == nil {
		// Lost the Lease while running: exit so the Deployment restarts a
		// clean candidate (the provision workers may still hold claims).
		return errors.New("leader election lost")
	}
	return nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}

// serveHealth answers /healthz on addr until ctx ends.
func serveHealth(ctx context.Context, addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	go func() { _ = srv.Serve(lis) }()
	return nil
}
