// Package csiproc starts rekey-csi's roles as separate processes, the way
// the node DaemonSet runs them: the supervisor (optionally under
// `rekey-csi init --`, the supervisor container's PID 1) and the driver on a
// unix CSI endpoint, with a kubelet root and a state directory of the
// caller's choosing and no Kubernetes API (Events are only logged). The
// demo and the process-level tests in tests/sanity use it; it also finds
// and reaps what such a run leaves behind.
package csiproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/mount-utils"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/internal/forksafe"
)

// StartTimeout bounds how long a started role may take to answer.
const StartTimeout = 15 * time.Second

// Proc is a started process whose exit is watched.
type Proc struct {
	Cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs binary with args. Its output is appended to logPath — a file,
// not a pipe: the FUSE servers inherit it and outlive the supervisor. The
// environment holds only PATH, so nothing secret and no Kubernetes
// service address reaches the process.
func Start(binary, logPath string, args ...string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("csiproc: %w", err)
	}
	defer logf.Close()
	// Tests start a supervisor while files on a mount whose server is gone
	// are open: see forksafe.
	cmd := forksafe.Command(exec.Command(binary, args...))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("csiproc: start %s: %w", filepath.Base(binary), err)
	}
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Pid is the process ID.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the exit status once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Kill sends SIGKILL and waits for the exit.
func (p *Proc) Kill() {
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM, waits up to timeout, then kills. It returns the exit
// status, or an error if the process had to be killed.
func (p *Proc) Stop(timeout time.Duration) error {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("csiproc: %s did not exit within %s of SIGTERM", filepath.Base(p.Cmd.Path), timeout)
	}
}

// Node is one node plugin: where its sockets, state and logs live, and
// how its roles are started. Dir must be short: it holds unix sockets.
type Node struct {
	Binary      string // rekey-csi
	FuseBinary  string // rekey-fuse, run by the supervisor
	Dir         string // sup.sock, csi.sock, state/, and the logs by default
	KubeletRoot string // default Dir/kubelet
	NodeID      string // default "node-1"
	// UnderInit runs the supervisor as `rekey-csi init [InitFlags] --
	// rekey-csi supervisor ...`, as in the supervisor container.
	UnderInit bool
	// Register lets the driver serve kubelet's plugin registration in
	// KubeletRoot/plugins_registry.
	Register        bool
	InitFlags       []string // extra flags of the init role
	SupervisorFlags []string // extra flags of the supervisor role, e.g. -v=1
	DriverFlags     []string // extra flags of the driver role
	SupervisorLog   string   // default Dir/supervisor.log (init's output too)
	DriverLog       string   // default Dir/driver.log
}

// SupervisorSocket is the node-local supervisor socket.
func (n *Node) SupervisorSocket() string { return filepath.Join(n.Dir, "sup.sock") }

// CSISocket is the driver's CSI endpoint (without unix://).
func (n *Node) CSISocket() string { return filepath.Join(n.Dir, "csi.sock") }

// StateDir is the supervisor's state directory.
func (n *Node) StateDir() string { return filepath.Join(n.Dir, "state") }

// Kubelet is the kubelet root directory the driver is told about.
func (n *Node) Kubelet() string { return orDefault(n.KubeletRoot, filepath.Join(n.Dir, "kubelet")) }

// StartSupervisor starts the supervisor role (under init if UnderInit) and
// waits until it answers on its socket. The returned Proc is init when
// UnderInit is set.
func (n *Node) StartSupervisor(ctx context.Context) (*Proc, error) {
	args := append([]string{"supervisor", "--supervisor-socket=" + n.SupervisorSocket(), "--state-dir=" + n.StateDir(),
		"--fuse-binary=" + n.FuseBinary}, n.SupervisorFlags...)
	if n.UnderInit {
		args = append(append(append([]string{"init"}, n.InitFlags...), "--", n.Binary), args...)
	}
	logPath := orDefault(n.SupervisorLog, filepath.Join(n.Dir, "supervisor.log"))
	p, err := Start(n.Binary, logPath, args...)
	if err != nil {
		return nil, err
	}
	sc := &supervisor.Client{Path: n.SupervisorSocket(), Timeout: time.Second}
	err = waitFor(ctx, p, func(ctx context.Context) error { _, err := sc.List(ctx); return err })
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("csiproc: supervisor (log %s): %w", logPath, err)
	}
	return p, nil
}

// StartDriver starts the driver role on CSISocket and waits until it
// answers NodeGetInfo.
func (n *Node) StartDriver(ctx context.Context) (*Proc, error) {
	_ = os.Remove(n.CSISocket())
	args := append([]string{"driver", "--endpoint=unix://" + n.CSISocket(), "--node-id=" + orDefault(n.NodeID, "node-1"),
		"--kubelet-root-dir=" + n.Kubelet(), "--supervisor-socket=" + n.SupervisorSocket(),
		"--register=" + strconv.FormatBool(n.Register)}, n.DriverFlags...)
	logPath := orDefault(n.DriverLog, filepath.Join(n.Dir, "driver.log"))
	p, err := Start(n.Binary, logPath, args...)
	if err != nil {
		return nil, err
	}
	conn, err := Dial(n.CSISocket())
	if err != nil {
		p.Kill()
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	node := csi.NewNodeClient(conn)
	err = waitFor(ctx, p, func(ctx context.Context) error {
		_, err := node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
		return err
	})
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("csiproc: driver (log %s): %w", logPath, err)
	}
	return p, nil
}

// Dial returns a client connection to a unix gRPC socket such as the CSI
// endpoint; it connects lazily.
func Dial(path string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("unix:"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("csiproc: dial %s: %w", path, err)
	}
	return conn, nil
}

// waitFor calls ok until it succeeds, p exits, ctx ends or StartTimeout
// passes.
func waitFor(ctx context.Context, p *Proc, ok func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	for {
		actx, acancel := context.WithTimeout(ctx, time.Second)
		err := ok(actx)
		acancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited: %w", errors.Join(p.err, err))
		case <-ctx.Done():
			return fmt.Errorf("not answering: %w", errors.Join(ctx.Err(), err))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Pids returns the processes other than this one whose command line
// mentions a path below dir: supervisors, drivers and FUSE servers of a
// node whose Dir is dir (FUSE servers outlive their supervisor by design).
func Pids(dir string) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), dir+"/") {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil && pid != os.Getpid() {
			out = append(out, pid)
		}
	}
	return out
}

// Reap kills the processes Pids(dir) finds and lazily unmounts every mount
// below dir, so a failed run leaves nothing behind.
func Reap(dir string) {
	for _, pid := range Pids(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, mp := range MountsUnder(dir) {
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
	}
}

// MountsUnder returns the mount points below dir, innermost first.
func MountsUnder(dir string) []string {
	mps, _ := mount.ParseMountInfo("/proc/self/mountinfo")
	var out []string
	for i := len(mps) - 1; i >= 0; i-- {
		if strings.HasPrefix(mps[i].MountPoint, dir+"/") {
			out = append(out, mps[i].MountPoint)
		}
	}
	return out
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
