// Command rekey-demo shows live key rotation through the CSI node plugin
// without any cluster. It starts an in-process S3 server with real SigV4
// checking, then rekey-csi as the node DaemonSet runs it — the supervisor
// under `rekey-csi init` and the driver on a unix CSI endpoint — and plays
// kubelet: plugin registration, Probe, NodePublishVolume with a Secret's
// keys and the pod's identity, and at the end NodeUnpublishVolume. While a
// verified read/write load runs through the mount it rotates the keys,
// revoking each old key right after the swap, alternately through a
// republish (NodePublishVolume again with the new Secret) and through the
// rekey-sidecar binary, which watches a projected-Secret directory updated
// exactly as kubelet's AtomicWriter does and pushes to the control socket
// the driver placed in the pod's emptyDir. Between rotations it kills the
// FUSE server (SIGKILL) and checks that the supervisor resumes the live
// FUSE connection with a new server, timing the first request on the mount
// after the kill. It prints a summary and exits 0 only when nothing failed
// and every kill was resumed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"rekey.dev/rekey/internal/logging"
)

// Config is the demo's configuration, bound from flags.
type Config struct {
	FuseBinary    string
	SidecarBinary string
	CSIBinary     string
	Rotations     int
	Kills         int
	Interval      time.Duration
	Workers       int
	KeepDir       bool
	Verbose       int
}

func main() {
	cfg := Config{}
	flag.StringVar(&cfg.FuseBinary, "fuse-binary", "", "path of rekey-fuse (default: next to this binary)")
	flag.StringVar(&cfg.SidecarBinary, "sidecar-binary", "", "path of rekey-sidecar (default: next to this binary)")
	flag.StringVar(&cfg.CSIBinary, "csi-binary", "", "path of rekey-csi (default: next to this binary)")
	flag.IntVar(&cfg.Rotations, "rotations", 10, "number of key rotations")
	flag.IntVar(&cfg.Kills, "kills", 2, "times the FUSE server is killed (SIGKILL) under load and must be resumed, spread over the rotations")
	flag.DurationVar(&cfg.Interval, "interval", 300*time.Millisecond, "time between rotations")
	flag.IntVar(&cfg.Workers, "workers", 4, "concurrent read/write workers")
	flag.BoolVar(&cfg.KeepDir, "keep", false, "keep the temporary directory (logs) after the run")
	flag.IntVar(&cfg.Verbose, "v", 0, "log verbosity of the demo itself")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sum, err := run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if sum.failures() > 0 || sum.Rotations < cfg.Rotations || sum.Resumed != cfg.Kills {
		os.Exit(1)
	}
}

// binaries makes the binary paths absolute, defaulting to this
// executable's directory, and checks they exist.
func (c *Config) binaries() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("own path: %w", err)
	}
	for _, b := range []struct {
		path *string
		name string
	}{{&c.FuseBinary, "rekey-fuse"}, {&c.SidecarBinary, "rekey-sidecar"}, {&c.CSIBinary, "rekey-csi"}} {
		if *b.path == "" {
			*b.path = filepath.Join(filepath.Dir(self), b.name)
		}
		if *b.path, err = filepath.Abs(*b.path); err != nil {
			return fmt.Errorf("binary %s: %w", b.name, err)
		}
		if _, err := os.Stat(*b.path); err != nil {
			return fmt.Errorf("binary: %w (build it with `make build`)", err)
		}
	}
	return nil
}

func run(ctx context.Context, cfg Config) (Summary, error) {
	if os.Geteuid() != 0 {
		return Summary{}, errors.New("mounting FUSE needs root (run `sudo make demo`)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return Summary{}, fmt.Errorf("/dev/fuse is missing: %w", err)
	}
	if err := cfg.binaries(); err != nil {
		return Summary{}, err
	}
	if cfg.Kills < 0 || cfg.Kills > cfg.Rotations {
		return Summary{}, fmt.Errorf("--kills %d: between 0 and --rotations (%d)", cfg.Kills, cfg.Rotations)
	}
	log, err := logging.New(os.Stderr, "text", cfg.Verbose)
	if err != nil {
		return Summary{}, fmt.Errorf("logging: %w", err)
	}
	d, err := start(ctx, cfg, log)
	if err != nil {
		return Summary{}, err
	}
	sum, err := d.exercise(ctx)
	d.failed = err != nil || sum.failures() > 0
	d.close()
	if err != nil {
		return sum, err
	}
	if pids := fuseServers(d.dir); len(pids) > 0 {
		sum.fail("rekey-fuse processes left after the node plugin stopped: %v", pids)
	}
	sum.print(os.Stdout)
	return sum, nil
}
