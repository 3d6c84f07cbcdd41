package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/internal/keys"
)

// Resume timeouts: how long a killed server may take to exit, the mount to
// answer again, and the supervisor and the driver to report the resume.
const (
	deathTimeout  = 10 * time.Second
	answerTimeout = 30 * time.Second
	signalTimeout = 20 * time.Second
)

// probeFile is written through the mount before the load starts; it is
// read right after every kill, and the time until that read returns is the
// resume time the demo reports.
const probeFile = "resume-probe"

// resumesMetric is the driver's counter of resumed FUSE servers.
const resumesMetric = "rekey_csi_fuse_server_resumes_total"

// killPoints returns the rotations (1-based) after which the FUSE server is
// killed: kills of them, spread evenly (after 3 and 7 of 10 for two), all
// distinct as long as kills <= rotations.
func killPoints(rotations, kills int) map[int]bool {
	out := map[int]bool{}
	last := 0
	for k := 1; k <= kills; k++ {
		p := max((2*k*rotations+kills+1)/(2*(kills+1)), last+1) // round(k*rotations/(kills+1))
		out[p], last = true, p
	}
	return out
}

// writeProbe writes probeFile through the mount and keeps its contents.
func (d *demo) writeProbe() error {
	d.probe = make([]byte, 4<<10)
	_, _ = rand.Read(d.probe)
	if err := os.WriteFile(filepath.Join(d.pod.target, probeFile), d.probe, 0o600); err != nil {
		return fmt.Errorf("write %s through the mount: %w", probeFile, err)
	}
	return nil
}

// resumed is what one kill showed.
type resumed struct {
	oldPid, newPid int
	took           time.Duration // SIGKILL → the probe read returned
	total          int           // the driver's resumes counter afterwards
}

// killServer SIGKILLs the mount's FUSE server while the load runs, waits
// until it is gone, reads probeFile through the mount (the kernel holds
// the request until a server answers), and then waits for the positive
// signals that the connection was resumed: a new rekey-fuse started with
// --resume answers Status on the pod socket with the current keys, the
// supervisor lists it with one more resume, and the driver counted it.
// resumes is how many resumes there were before this one.
func (d *demo) killServer(ctx context.Context, current keys.Keys, resumes int) (resumed, error) {
	var r resumed
	st, err := d.sidecar.statusNow(ctx)
	if err != nil {
		return r, err
	}
	r.oldPid = int(st.GetPid())
	before, err := d.supervisorInfo(ctx)
	if err != nil {
		return r, err
	}
	if before.PID != r.oldPid {
		return r, fmt.Errorf("the pod socket is answered by process %d, the supervisor runs %d", r.oldPid, before.PID)
	}
	if before.Resumes != resumes {
		return r, fmt.Errorf("the supervisor counts %d resumes of the mount before this kill, want %d", before.Resumes, resumes)
	}
	// A pidfd, so that neither the signal nor the wait can hit another
	// process that reused the PID.
	pidfd, err := unix.PidfdOpen(r.oldPid, 0)
	if err != nil {
		return r, fmt.Errorf("pidfd of the FUSE server %d: %w", r.oldPid, err)
	}
	defer func() { _ = unix.Close(pidfd) }()
	begin := time.Now()
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil {
		return r, fmt.Errorf("SIGKILL to the FUSE server %d: %w", r.oldPid, err)
	}
	if err := waitExit(pidfd, deathTimeout); err != nil {
		return r, fmt.Errorf("FUSE server %d after SIGKILL: %w", r.oldPid, err)
	}
	// Issued once the old process is gone, so only a new one can answer.
	if err := readProbe(filepath.Join(d.pod.target, probeFile), d.probe, answerTimeout); err != nil {
		return r, fmt.Errorf("first request on the mount after killing the FUSE server %d: %w (see supervisor.log)", r.oldPid, err)
	}
	r.took = time.Since(begin)

	err = poll(ctx, signalTimeout, 5*time.Millisecond, func() (bool, error) {
		st, err := d.sidecar.statusNow(ctx)
		if err != nil || st.GetPid() == 0 || int(st.GetPid()) == r.oldPid {
			return false, nil //nolint:nilerr // retried until the timeout
		}
		r.newPid = int(st.GetPid())
		if st.GetFingerprint() != current.Fingerprint() {
			return false, fmt.Errorf("the resumed server %d runs keys %s, want the current %s", r.newPid, st.GetFingerprint(), current.Fingerprint())
		}
		return true, nil
	})
	if err != nil {
		return r, fmt.Errorf("no new FUSE server answers Status on the pod socket: %w", err)
	}
	if cmd, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(r.newPid), "cmdline")); err != nil {
		return r, fmt.Errorf("resumed FUSE server %d: %w", r.newPid, err)
	} else if !bytes.Contains(cmd, []byte("\x00--resume\x00")) && !bytes.HasSuffix(cmd, []byte("\x00--resume")) {
		return r, fmt.Errorf("process %d answers on the pod socket but was not started with --resume", r.newPid)
	}
	after, err := d.supervisorInfo(ctx)
	if err != nil {
		return r, err
	}
	if after.PID != r.newPid || after.Resumes != resumes+1 {
		return r, fmt.Errorf("the supervisor lists process %d with %d resumes, want %d with %d", after.PID, after.Resumes, r.newPid, resumes+1)
	}
	err = poll(ctx, signalTimeout, 10*time.Millisecond, func() (bool, error) {
		n, err := d.driverCounter(ctx, resumesMetric)
		r.total = n
		return err == nil && n >= resumes+1, nil
	})
	if err != nil {
		return r, fmt.Errorf("the driver's %s stays at %d, want %d: %w", resumesMetric, r.total, resumes+1, err)
	}
	return r, nil
}

// kill kills the FUSE server once (killServer) and records the outcome.
func (d *demo) kill(ctx context.Context, sum *Summary, current keys.Keys) {
	sum.Kills++
	r, err := d.killServer(ctx, current, sum.Resumed)
	if err != nil {
		sum.fail("kill %d: %v", sum.Kills, err)
		fmt.Printf("demo: kill %d: FAILED: %v\n", sum.Kills, err)
		return
	}
	sum.Resumed++
	sum.resumeTimes = append(sum.resumeTimes, r.took)
	fmt.Printf("demo: kill %d: FUSE server %d killed (SIGKILL) under load; resumed on its live connection as %d, "+
		"first read on the mount answered %s after the kill; %s %d\n",
		sum.Kills, r.oldPid, r.newPid, r.took.Round(10*time.Microsecond), resumesMetric, r.total)
}

// supervisorInfo is the supervisor's record of the demo's only mount.
func (d *demo) supervisorInfo(ctx context.Context) (supervisor.Info, error) {
	infos, err := (&supervisor.Client{Path: d.node.SupervisorSocket(), Timeout: 5 * time.Second}).List(ctx)
	if err != nil {
		return supervisor.Info{}, fmt.Errorf("supervisor list: %w", err)
	}
	if len(infos) != 1 {
		return supervisor.Info{}, fmt.Errorf("the supervisor lists %d mounts, want 1", len(infos))
	}
	return infos[0], nil
}

// waitExit waits until the process of pidfd has exited.
func waitExit(pidfd int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("still running after %s", timeout)
		}
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return fmt.Errorf("poll pidfd: %w", err)
		case n > 0:
			return nil
		}
	}
}

// readProbe reads path and compares it with want. A mount that does not
// answer leaves the read blocked: it is abandoned after timeout (the
// cleanup unmounts, which ends it).
func readProbe(path string, want []byte, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() {
		got, err := os.ReadFile(path)
		if err == nil && !bytes.Equal(got, want) {
			err = fmt.Errorf("%s: %d bytes read that differ from the %d written", filepath.Base(path), len(got), len(want))
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("read %s: no answer within %s", filepath.Base(path), timeout)
	}
}

// freeAddr returns a loopback TCP address that was free a moment ago, for
// the driver's metrics endpoint (the driver listens on TCP only).
func freeAddr() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("a port for the driver's metrics: %w", err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr, nil
}

// driverCounter reads a counter without labels from the driver's /metrics.
func (d *demo) driverCounter(ctx context.Context, name string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.metricsAddr+"/metrics", nil)
	if err != nil {
		return 0, fmt.Errorf("driver metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("driver metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("driver metrics: %s", resp.Status)
	}
	return metricSum(resp.Body, name, "")
}

// metricSum sums the series of metric name in a Prometheus text exposition
// that have label (any series if label is empty).
func metricSum(r io.Reader, name, label string) (int, error) {
	total := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") || !strings.Contains(line, label) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric %q: %w", line, err)
		}
		total += int(v)
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	return total, nil
}
