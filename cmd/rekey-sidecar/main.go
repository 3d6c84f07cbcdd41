// Command rekey-sidecar is the per-pod credential agent injected by the
// rekey webhook. It watches each volume's projected Secret or service-account
// token, exchanges tokens at STS, and pushes every key change to the pod's
// FUSE servers over their control sockets. Its flags name files, roles and
// endpoints only; it never takes a secret through argv or the environment.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/logging"
	"rekey.dev/rekey/sidecar"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "rekey-sidecar:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	cfg, logFormat, verbosity, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := logging.New(os.Stderr, logFormat, verbosity)
	if err != nil {
		return err
	}
	cfg.Log = log
	start := time.Now()
	err = sidecar.Run(ctx, cfg)
	log.V(1).Info("exiting", "ranFor", time.Since(start).Round(time.Second))
	return err
}

// parseFlags reads the command line into a Config (without its logger)
// and the log settings.
func parseFlags(args []string) (cfg sidecar.Config, logFormat string, verbosity int, err error) {
	var sources string
	fs := flag.NewFlagSet("rekey-sidecar", flag.ContinueOnError)
	fs.StringVar(&sources, contract.SidecarSourcesFlag, "", "JSON array of key sources, one per volume (written by the webhook)")
	fs.StringVar(&cfg.SocketDir, contract.SidecarSocketDirFlag, contract.SocketDir, "directory of the FUSE servers' control sockets")
	fs.StringVar(&cfg.PodUID, contract.SidecarPodUIDFlag, "", "the pod's UID (for inline volumes)")
	fs.StringVar(&cfg.HealthAddr, contract.SidecarHealthAddrFlag, "", "serve /readyz and /healthz on host:port or unix:/path (empty: off)")
	fs.StringVar(&cfg.MetricsAddr, contract.SidecarMetricsAddrFlag, "", "serve Prometheus /metrics on host:port or unix:/path (empty: off)")
	fs.DurationVar(&cfg.PollInterval, "poll-interval", sidecar.DefaultPollInterval, "safety-net poll of files and sockets")
	fs.DurationVar(&cfg.RefreshMargin, "refresh-margin", sidecar.DefaultRefreshMargin, "refresh temporary keys at the latest this long before expiry")
	fs.DurationVar(&cfg.STSDuration, contract.SidecarSTSDurationFlag, 0, "requested lifetime of temporary keys (0: the STS default)")
	fs.StringVar(&cfg.STSSessionName, "sts-session-name", "rekey-sidecar", "RoleSessionName sent to STS")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	fs.IntVar(&verbosity, "v", 0, "log verbosity")
	if err := fs.Parse(args); err != nil {
		return cfg, "", 0, err
	}
	if fs.NArg() > 0 {
		return cfg, "", 0, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := json.Unmarshal([]byte(sources), &cfg.Sources); err != nil {
		return cfg, "", 0, fmt.Errorf("--%s: not a JSON array of sources: %w", contract.SidecarSourcesFlag, err)
	}
	return cfg, logFormat, verbosity, nil
}
