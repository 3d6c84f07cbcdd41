// Command rekey-fuse serves one S3 bucket as a FUSE filesystem whose keys
// can be swapped live over a unix-socket gRPC API. It runs standalone
// (--mountpoint) or on a /dev/fuse descriptor its parent mounted (--fuse-fd).
// Keys never come through flags or the environment: --keys-fd or --keys-file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"rekey.dev/rekey/fuseserver"
	"rekey.dev/rekey/internal/logging"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rekey-fuse:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := fuseserver.DefaultConfig()
	var logFormat, allowed string
	var verbosity int
	fs := flag.NewFlagSet("rekey-fuse", flag.ContinueOnError)
	fs.StringVar(&cfg.Endpoint, "endpoint", "", "S3 endpoint URL (required)")
	fs.StringVar(&cfg.Region, "region", "", "signing region (default us-east-1)")
	fs.StringVar(&cfg.Bucket, "bucket", "", "bucket to serve (required)")
	fs.StringVar(&cfg.Prefix, "prefix", "", "folder inside the bucket to serve as the root")
	fs.StringVar(&cfg.CAFile, "ca-file", "", "PEM bundle trusted for the endpoint's TLS certificate")
	fs.StringVar(&cfg.MountOptions, "o", "", "ossfs/s3fs-style mount options, e.g. 'uid=1000,allow_other'")
	fs.StringVar(&cfg.Mountpoint, "mountpoint", "", "standalone mode: directory to mount")
	fs.IntVar(&cfg.FuseFD, "fuse-fd", -1, "descriptor mode: inherited /dev/fuse fd, already mounted")
	fs.IntVar(&cfg.KeysFD, "keys-fd", -1, "inherited pipe carrying the initial keys (JSON)")
	fs.StringVar(&cfg.KeysFile, "keys-file", "", "0600 file with the initial keys (JSON); removed once read")
	fs.IntVar(&cfg.KeyCustodyFD, "key-custody-fd", -1, "inherited key custody memfd: every swap is saved there; keys found there win over --keys-fd")
	fs.StringVar(&cfg.SessionFile, "session-file", "", "descriptor mode: file recording the connection's INIT settings, for a later --resume")
	fs.BoolVar(&cfg.Resume, "resume", false, "descriptor mode: take over the live connection of --fuse-fd with the settings in --session-file (no INIT)")
	fs.StringVar(&cfg.StagingDir, "staging-dir", "", "local directory for data not yet uploaded (required)")
	fs.IntVar(&cfg.StagingReserveMiB, "staging-reserve-mib", 0, "free space in MiB that staging leaves on the staging directory's filesystem; writes that would use it fail with ENOSPC (0: none)")
	fs.IntVar(&cfg.StagingReservePercent, "staging-reserve-percent", 0, "free space, in percent of the staging filesystem's size, that staging leaves; the larger of the two applies (0: none)")
	fs.StringVar(&cfg.ControlSocket, "control-socket", "", "path of the control API unix socket")
	fs.IntVar(&cfg.ControlFD, "control-fd", -1, "inherited listening unix socket for the control API")
	fs.StringVar(&cfg.PodSocket, "pod-socket", "", "second control socket, created once its directory (the pod's emptyDir) exists")
	fs.DurationVar(&cfg.PodSocketWait, "pod-socket-wait", cfg.PodSocketWait, "how long to wait for the pod socket's directory")
	fs.StringVar(&cfg.PodUsernsFile, "pod-userns-file", "", "kubelet's record of the pod's user namespace (<kubelet root>/pods/<uid>/userns); its sidecar's host UID is admitted on the pod socket once it appears")
	fs.IntVar(&cfg.SocketUID, "socket-uid", -1, "owner UID of the control socket")
	fs.IntVar(&cfg.SocketGID, "socket-gid", -1, "owner GID of the control socket")
	fs.StringVar(&allowed, "allowed-uids", "", "comma-separated UIDs allowed on the control socket (default: own UID)")
	fs.IntVar(&cfg.EventsFD, "events-fd", -1, "inherited fd receiving swap outcomes and reports as JSON lines")
	fs.IntVar(&cfg.ReadyFD, "ready-fd", -1, "inherited fd written and closed once serving")
	fs.StringVar(&cfg.VolumeID, "volume-id", "", "volume ID reported by Status")
	fs.StringVar(&cfg.AuthType, "auth-type", "secret", "key source reported by Status: secret, rrsa or irsa")
	fs.StringVar(&cfg.SecretRef, "secret-ref", "", "namespace/name of the Secret reported by Status")
	fs.StringVar(&cfg.RoleARN, "role-arn", "", "role reported by Status")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "time allowed to upload staged data on exit")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	fs.IntVar(&verbosity, "v", 0, "log verbosity")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	uids, err := parseUIDs(allowed)
	if err != nil {
		return err
	}
	cfg.AllowedUIDs = uids
	log, err := logging.New(os.Stderr, logFormat, verbosity)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return fuseserver.Run(ctx, cfg, log)
}

func parseUIDs(s string) ([]uint32, error) {
	var out []uint32
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--allowed-uids: %q is not a UID", f)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}
