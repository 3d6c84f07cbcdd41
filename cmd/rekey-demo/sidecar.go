package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/csiproc"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// sidecarProc is the pod's rekey-sidecar and the demo's view of what it
// sees: the pod's control socket and the sidecar's health and metrics.
type sidecarProc struct {
	proc   *csiproc.Proc
	socket string // the FUSE server's socket as the sidecar sees it
	status credentialsv1.CredentialServiceClient
	closer io.Closer
	http   *http.Client
}

// startSidecar runs rekey-sidecar the way the webhook injects it. In the
// pod the rekey-sockets emptyDir is mounted at /run/rekey; here a short
// symlink stands in for that mount (the node path is longer than a unix
// socket path may be).
func startSidecar(ctx context.Context, cfg Config, dir string, p *pod) (*sidecarProc, error) {
	runDir := filepath.Join(dir, "run")
	view := filepath.Join(runDir, "rekey")
	if err := os.Mkdir(runDir, 0o750); err != nil {
		return nil, fmt.Errorf("sidecar socket dir: %w", err)
	}
	if err := os.Symlink(p.sockets, view); err != nil {
		return nil, fmt.Errorf("sidecar socket dir: %w", err)
	}
	src, err := sources(p)
	if err != nil {
		return nil, err
	}
	health := filepath.Join(dir, "sidecar-http.sock")
	proc, err := csiproc.Start(cfg.SidecarBinary, filepath.Join(dir, "sidecar.log"),
		"--"+contract.SidecarSourcesFlag, src, "--"+contract.SidecarSocketDirFlag, view, "--"+contract.SidecarPodUIDFlag, p.uid,
		"--"+contract.SidecarHealthAddrFlag, "unix:"+health, "--"+contract.SidecarMetricsAddrFlag, "unix:"+health)
	if err != nil {
		return nil, err
	}
	s := &sidecarProc{proc: proc, socket: filepath.Join(view, supervisor.MountID(p.target)+contract.SocketSuffix),
		http: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", health)
			}}}}
	if s.status, s.closer, err = control.Dial(s.socket); err != nil {
		_ = proc.Stop(5 * time.Second)
		return nil, fmt.Errorf("pod control socket: %w", err)
	}
	return s, nil
}

func (s *sidecarProc) close() {
	if s.closer != nil {
		_ = s.closer.Close()
	}
	s.http.CloseIdleConnections()
}

// alive returns an error if the sidecar has exited.
func (s *sidecarProc) alive() error {
	select {
	case <-s.proc.Done():
		return fmt.Errorf("rekey-sidecar exited: %w (log: sidecar.log)", s.proc.Err())
	default:
		return nil
	}
}

// statusNow asks the FUSE server, over the pod's socket, which keys it runs.
func (s *sidecarProc) statusNow(ctx context.Context) (*credentialsv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := s.status.Status(ctx, &credentialsv1.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("status over the pod socket: %w", err)
	}
	return st, nil
}

// waitSocket waits until the driver's control socket is in the pod's
// emptyDir and the FUSE server answers on it.
func (s *sidecarProc) waitSocket(ctx context.Context) (*credentialsv1.StatusResponse, error) {
	var st *credentialsv1.StatusResponse
	err := poll(ctx, 10*time.Second, 20*time.Millisecond, func() (bool, error) {
		if _, err := os.Stat(s.socket); err != nil {
			return false, nil //nolint:nilerr // not linked yet
		}
		var err error
		st, err = s.statusNow(ctx)
		return err == nil, nil
	})
	if err != nil {
		return nil, fmt.Errorf("control socket in the pod's %s emptyDir: %w", contract.SocketVolumeName, err)
	}
	return st, nil
}

// waitFingerprint polls Status until the FUSE server runs fingerprint and
// returns when that swap finished, by the server's clock.
func (s *sidecarProc) waitFingerprint(ctx context.Context, fingerprint string, timeout time.Duration) (time.Time, error) {
	var at time.Time
	err := poll(ctx, timeout, time.Millisecond, func() (bool, error) {
		if err := s.alive(); err != nil {
			return false, err
		}
		st, err := s.statusNow(ctx)
		if err != nil || st.GetFingerprint() != fingerprint {
			return false, nil //nolint:nilerr // retried until the timeout
		}
		at = time.Now()
		if ls := st.GetLastSwap(); ls != nil && ls.GetResult() == credentialsv1.SwapResult_SWAP_RESULT_APPLIED {
			at = ls.GetTime().AsTime()
		}
		return true, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("keys %s not in use: %w", fingerprint, err)
	}
	return at, nil
}

// waitReady waits until the sidecar has read the projected Secret at least
// refreshes times in all and reports ready: every FUSE server of its
// volume runs the newest keys.
func (s *sidecarProc) waitReady(ctx context.Context, refreshes int) error {
	err := poll(ctx, 10*time.Second, 5*time.Millisecond, func() (bool, error) {
		if err := s.alive(); err != nil {
			return false, err
		}
		if n, err := s.counter(ctx, "rekey_sidecar_refreshes_total", `result="success"`); err != nil || n < refreshes {
			return false, nil //nolint:nilerr // retried until the timeout
		}
		resp, err := s.get(ctx, "/readyz")
		if err != nil {
			return false, nil //nolint:nilerr // retried until the timeout
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("sidecar not ready: %w", err)
	}
	return nil
}

func (s *sidecarProc) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sidecar"+path, nil)
	if err != nil {
		return nil, fmt.Errorf("sidecar %s: %w", path, err)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sidecar %s: %w", path, err)
	}
	return resp, nil
}

// counter sums the sidecar's metric name over the series that have label.
func (s *sidecarProc) counter(ctx context.Context, name, label string) (int, error) {
	resp, err := s.get(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := metricSum(resp.Body, name, label)
	if err != nil {
		return 0, fmt.Errorf("sidecar %w", err)
	}
	return n, nil
}

// poll calls check every interval until it is done, fails, or timeout or
// ctx ends.
func poll(ctx context.Context, timeout, interval time.Duration, check func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, ctx.Err())
		case <-time.After(interval):
		}
	}
}
