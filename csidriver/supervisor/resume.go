package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"rekey.dev/rekey/fuseserver/session"
)

// Resume limits: a server that dies is restarted on its live connection at
// once, then after resumeBackoff doubling; more than maxResumes deaths
// within resumeWindow is a crash loop, and the mount is given up.
const (
	resumeBackoff = 100 * time.Millisecond
	maxResumes    = 5
	resumeWindow  = time.Minute
)

// launch starts a FUSE server process for info with l and waits until it
// serves. It returns the mount, not yet registered nor watched.
func (s *Supervisor) launch(ctx context.Context, info Info, l launch) (*mount, error) {
	cmd, readyR, err := s.command(info.Spec, info, l)
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		_ = readyR.Close()
		return nil, fmt.Errorf("supervisor: start %s: %w", s.cfg.FuseBinary, err)
	}
	s.confine(info.ID, cmd.Process.Pid) // its memory cgroup (cgroup_linux.go)
	// Close our copies of the child's pipe ends (ready, keys); the fuse
	// and custody descriptors stay ours.
	for i, f := range cmd.ExtraFiles {
		if i+serverFuseFD == serverReadyFD || i+serverFuseFD == serverKeysFD {
			_ = f.Close()
		}
	}
	info.PID = cmd.Process.Pid
	m := &mount{info: info, fuse: l.fuse, custody: l.custody, exited: make(chan struct{})}
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(m.exited) }()
	if err := waitReady(ctx, readyR, m.exited, s.cfg.ReadyTimeout); err != nil {
		_ = cmd.Process.Kill()
		<-m.exited
		if waitErr != nil {
			err = fmt.Errorf("%w (%w)", err, waitErr)
		}
		return nil, err
	}
	return m, nil
}

// canResume tells whether the connection of dead can be resumed, and why
// not.
func (s *Supervisor) canResume(dead *mount) error {
	s.mu.Lock()
	stopping := dead.stopping
	s.mu.Unlock()
	if stopping {
		return errors.New("the mount is being stopped")
	}
	if dead.fuse == nil || dead.custody == nil {
		return errors.New("this supervisor holds no copy of its descriptors (a server of an earlier version)")
	}
	st, err := session.Read(s.statePath(dead.info.ID, ".session"))
	if err != nil {
		return fmt.Errorf("its INIT settings are unknown: %w", err)
	}
	if !st.Init.SupportsResend() {
		return errors.New("the kernel cannot resend unanswered requests (FUSE_NOTIFY_RESEND needs Linux 6.9)")
	}
	recent := 0
	for _, t := range dead.resumed {
		if time.Since(t) < resumeWindow {
			recent++
		}
	}
	if recent >= maxResumes {
		return fmt.Errorf("it died %d times within %s after being resumed; giving up", recent+1, resumeWindow)
	}
	return nil
}

// resume starts a new server on the live connection of dead, which exited
// with status, and registers it in dead's place. It returns why it could
// not; the caller then aborts the connection.
func (s *Supervisor) resume(dead *mount, status string, log logr.Logger) error {
	if err := s.canResume(dead); err != nil {
		return err
	}
	began := time.Now()
	info := dead.info
	info.Dead, info.Adopted = false, false
	m, err := s.launchResumed(info, Descriptors{Fuse: dead.fuse, Custody: dead.custody}, "resuming the FUSE connection failed", log)
	if err != nil {
		return err
	}
	m.resumed = append(pruned(dead.resumed), time.Now())
	m.info.Resumes = dead.info.Resumes + 1
	m.info.Started = time.Now()
	s.mu.Lock()
	stopping := dead.stopping
	if !stopping {
		s.mounts[m.info.ID] = m
	}
	s.mu.Unlock()
	if stopping { // Stop came in meanwhile: it owns the descriptors
		_ = unix.Kill(m.info.PID, unix.SIGTERM)
		<-m.exited
		return errors.New("the mount is being stopped")
	}
	if err := s.saveState(m.info); err != nil {
		log.Error(err, "state not saved: a restarted supervisor will not adopt this server")
	}
	s.watch(m, log)
	took := time.Since(began)
	log.Info("FUSE server resumed on its live connection", "oldPid", dead.info.PID, "pid", m.info.PID,
		"took", took.String(), "resumes", m.info.Resumes)
	s.publish(Event{Kind: EventResumed, MountID: m.info.ID, Spec: m.info.Spec, Time: time.Now(),
		Reason: fmt.Sprintf("%s; resumed as process %d in %d ms", status, m.info.PID, took.Milliseconds())}, nil)
	return nil
}

// launchResumed starts a server of this version that resumes the
// connection of fds with the keys in its custody, up to maxResumes times
// with a doubling backoff from resumeBackoff (a resume, a takeover, a
// restore); each failure is logged with failed. The descriptors stay the
// caller's.
func (s *Supervisor) launchResumed(info Info, fds Descriptors, failed string, log logr.Logger) (*mount, error) {
	backoff := time.Duration(0)
	var lastErr error
	for attempt := 0; attempt < maxResumes; attempt++ {
		select {
		case <-s.ctx.Done():
			return nil, fmt.Errorf("the supervisor is stopping: %w", s.ctx.Err())
		case <-time.After(backoff):
		}
		backoff = max(2*backoff, resumeBackoff)
		m, err := s.launch(s.ctx, info, launch{fuse: fds.Fuse, custody: fds.Custody, resume: true})
		if err == nil {
			return m, nil
		}
		lastErr = err
		log.Error(err, failed, "attempt", attempt+1)
	}
	return nil, fmt.Errorf("%d attempts failed, the last: %w", maxResumes, lastErr)
}

// pruned drops resume times older than resumeWindow.
func pruned(times []time.Time) []time.Time {
	var out []time.Time
	for _, t := range times {
		if time.Since(t) < resumeWindow {
			out = append(out, t)
		}
	}
	return out
}

// reclaim takes copies of a running server's /dev/fuse and key custody
// descriptors (pidfd_getfd), so that a supervisor that adopted it can
// resume its connection if it dies. Servers of an earlier version, started
// without a custody file, yield nothing.
func reclaim(pidfd int, info Info) (fuse, custody *os.File, err error) {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(info.PID) + "/cmdline")
	if err != nil {
		return nil, nil, fmt.Errorf("supervisor: reclaim: %w", err)
	}
	if !strings.Contains(string(cmdline), "\x00--key-custody-fd="+strconv.Itoa(serverCustodyFD)+"\x00") ||
		!strings.Contains(string(cmdline), "\x00--fuse-fd="+strconv.Itoa(serverFuseFD)+"\x00") {
		return nil, nil, errors.New("supervisor: reclaim: the server was started without a key custody file")
	}
	get := func(fd int, name string) (*os.File, error) {
		n, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			return nil, fmt.Errorf("supervisor: reclaim %s: pidfd_getfd: %w", name, err)
		}
		return os.NewFile(uintptr(n), name), nil
	}
	if fuse, err = get(serverFuseFD, "/dev/fuse"); err != nil {
		return nil, nil, err
	}
	if custody, err = get(serverCustodyFD, "key-custody"); err != nil {
		_ = fuse.Close()
		return nil, nil, err
	}
	return fuse, custody, nil
}
