//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// RunInit is the supervisor container's PID 1 (`rekey-csi init -- rekey-csi
// supervisor ...`). It runs argv as its child and starts it again whenever
// it exits (backoff 0.5 s doubling to 30 s, reset after a minute of uptime),
// and reaps every other process re-parented to it — the FUSE servers of a
// supervisor that died. It is a child subreaper too, so it works when it is
// not PID 1 (tests). When ctx ends (the container is stopped) it sends
// SIGTERM to the child and waits for it, then stops the FUSE servers the
// supervisor left running (now init's children): SIGTERM to each, so that
// each uploads its staged data within its --shutdown-timeout, and SIGKILL
// only for those still running after grace (DefaultServerStopGrace if
// zero). Only then does it return, and the kernel kills what is left of
// the container. The pod's terminationGracePeriodSeconds must exceed grace
// (see docs/csi-driver.md).
//
// With stateDir set, init is the container's supervisor instance
// (owner.go): it makes an instance ID, holds its lock in stateDir for as
// long as it runs, and gives the ID to the supervisor in InstanceEnv, so
// that the supervisors it restarts keep the container's mounts and a
// supervisor in another container (the next version's node pod) takes
// them over instead of adopting them.
func RunInit(ctx context.Context, argv []string, grace time.Duration, stateDir string, log logr.Logger) error {
	if len(argv) == 0 {
		return errors.New("supervisor: init: no command")
	}
	env := os.Environ()
	if stateDir != "" {
		lock, err := LockOwner(stateDir, NewInstanceID())
		if err != nil {
			return fmt.Errorf("supervisor: init: %w", err)
		}
		defer func() { _ = lock.Close() }()
		env = append(env, InstanceEnv+"="+lock.ID)
		log.Info("supervisor instance", "instance", lock.ID)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("supervisor: init: become subreaper: %w", err)
	}
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, unix.SIGCHLD)
	defer signal.Stop(sigchld)

	backoff := 500 * time.Millisecond
	for {
		started := time.Now()
		p, err := os.StartProcess(argv[0], argv, &os.ProcAttr{Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}, Env: env})
		if err != nil {
			return fmt.Errorf("supervisor: init: start %s: %w", argv[0], err)
		}
		log.Info("supervisor started", "pid", p.Pid)
		status, stopped := reapUntil(ctx, p.Pid, sigchld, log)
		if stopped {
			_ = p.Signal(unix.SIGTERM)
			for {
				if s, _ := reapUntil(context.Background(), p.Pid, sigchld, log); s != "" {
					break
				}
			}
			stopServers(grace, sigchld, log)
			return nil
		}
		if time.Since(started) > time.Minute {
			backoff = 500 * time.Millisecond
		}
		log.Info("supervisor exited; starting it again", "status", status, "after", backoff.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// DefaultServerStopGrace is how long init waits for the FUSE servers to
// upload their staged data and exit after SIGTERM: rekey-fuse's default
// --shutdown-timeout (30s) and time to exit.
const DefaultServerStopGrace = 40 * time.Second

// stopServers sends SIGTERM to every child of this process (the FUSE
// servers, re-parented here once their supervisor exited) and reaps them;
// those still running after grace get SIGKILL.
func stopServers(grace time.Duration, sigchld <-chan os.Signal, log logr.Logger) {
	if grace <= 0 {
		grace = DefaultServerStopGrace
	}
	kids := childPIDs()
	if len(kids) == 0 {
		return
	}
	log.Info("stopping the FUSE servers; each uploads its staged data first", "pids", kids, "grace", grace.String())
	for _, pid := range kids {
		_ = unix.Kill(pid, unix.SIGTERM)
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	killed := false
	for {
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if errors.Is(err, unix.ECHILD) {
				log.Info("all FUSE servers stopped")
				return
			}
			if err != nil || got <= 0 {
				break
			}
			log.Info("FUSE server stopped", "pid", got, "exitStatus", ws.ExitStatus(), "signaled", ws.Signaled())
		}
		select {
		case <-deadline.C:
			if !killed {
				left := childPIDs()
				log.Info("FUSE servers did not stop in time; killing them (their staged data stays on the node)", "pids", left)
				for _, pid := range left {
					_ = unix.Kill(pid, unix.SIGKILL)
				}
				killed = true
			}
		case <-sigchld:
		case <-time.After(time.Second):
		}
	}
}

// childPIDs lists the processes whose parent is this one.
func childPIDs() []int {
	self := strconv.Itoa(os.Getpid())
	des, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, de := range des {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + de.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parens.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		if f := strings.Fields(string(b[i+1:])); len(f) > 1 && f[1] == self {
			out = append(out, pid)
		}
	}
	return out
}

// reapUntil reaps children until pid exits (returning its status) or ctx
// ends (returning stopped).
func reapUntil(ctx context.Context, pid int, sigchld <-chan os.Signal, log logr.Logger) (status string, stopped bool) {
	for {
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err != nil || got <= 0 {
				break
			}
			if got == pid {
				if ws.Signaled() {
					return "killed by " + ws.Signal().String(), false
				}
				return fmt.Sprintf("exit status %d", ws.ExitStatus()), false
			}
			log.V(1).Info("reaped an orphan", "pid", got, "exitStatus", ws.ExitStatus())
		}
		select {
		case <-ctx.Done():
			return "", true
		case <-sigchld:
		case <-time.After(time.Second):
		}
	}
}
