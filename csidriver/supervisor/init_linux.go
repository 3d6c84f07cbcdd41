//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// RunInit is the supervisor container's PID 1 (`rekey-csi init -- rekey-csi
// supervisor ...`). It runs argv as its child and starts it again whenever
// it exits (backoff 0.5 s doubling to 30 s, reset after a minute of uptime),
// and reaps every other process re-parented to it — the FUSE servers of a
// supervisor that died. It is a child subreaper too, so it works when it is
// not PID 1 (tests). When ctx ends it sends SIGTERM to the child, waits for
// it and returns; the FUSE servers are left running.
func RunInit(ctx context.Context, argv []string, log logr.Logger) error {
	if len(argv) == 0 {
		return errors.New("supervisor: init: no command")
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
		p, err := os.StartProcess(argv[0], argv, &os.ProcAttr{Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}})
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
