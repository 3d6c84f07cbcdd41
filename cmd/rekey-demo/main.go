// Command rekey-demo shows live key rotation without any cluster: it starts
// an in-process S3 server with real SigV4 checking, mounts a bucket with the
// rekey-fuse binary, runs a read/write load through the mount, and rotates
// the keys repeatedly the way a cluster does — it updates a projected-Secret
// directory exactly as kubelet's AtomicWriter does, the rekey-sidecar binary
// notices and pushes the keys to rekey-fuse, and the old key is revoked right
// after the swap. It prints a summary and exits 0 only when nothing failed.
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
	Rotations     int
	Interval      time.Duration
	Workers       int
	KeepDir       bool
	Verbose       int
}

func main() {
	cfg := Config{}
	flag.StringVar(&cfg.FuseBinary, "fuse-binary", "", "path of rekey-fuse (default: next to this binary)")
	flag.StringVar(&cfg.SidecarBinary, "sidecar-binary", "", "path of rekey-sidecar (default: next to this binary)")
	flag.IntVar(&cfg.Rotations, "rotations", 10, "number of key rotations")
	flag.DurationVar(&cfg.Interval, "interval", 300*time.Millisecond, "time between rotations")
	flag.IntVar(&cfg.Workers, "workers", 4, "concurrent read/write workers")
	flag.BoolVar(&cfg.KeepDir, "keep", false, "keep the temporary directory (logs) after the run")
	flag.IntVar(&cfg.Verbose, "v", 0, "log verbosity of the demo itself")
	flag.Parse()
	if self, err := os.Executable(); err == nil {
		if cfg.FuseBinary == "" {
			cfg.FuseBinary = filepath.Join(filepath.Dir(self), "rekey-fuse")
		}
		if cfg.SidecarBinary == "" {
			cfg.SidecarBinary = filepath.Join(filepath.Dir(self), "rekey-sidecar")
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sum, err := run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if sum.failures() > 0 || sum.Rotations < cfg.Rotations {
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg Config) (Summary, error) {
	if os.Geteuid() != 0 {
		return Summary{}, errors.New("mounting FUSE needs root (run `sudo make demo`)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return Summary{}, fmt.Errorf("/dev/fuse is missing: %w", err)
	}
	for _, b := range []string{cfg.FuseBinary, cfg.SidecarBinary} {
		if _, err := os.Stat(b); err != nil {
			return Summary{}, fmt.Errorf("binary: %w (build it with `make build`)", err)
		}
	}
	log, err := logging.New(os.Stderr, "text", cfg.Verbose)
	if err != nil {
		return Summary{}, err
	}
	d, err := start(ctx, cfg, log)
	if err != nil {
		return Summary{}, err
	}
	defer d.close(cfg.KeepDir)
	sum, err := d.exercise(ctx, cfg)
	if err != nil {
		return sum, err
	}
	sum.print(os.Stdout)
	return sum, nil
}
